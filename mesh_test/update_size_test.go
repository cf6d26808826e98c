package mesh_test

import (
	"fmt"
	"testing"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// topologyBytes returns the bytes of topology traffic a router has
// received: entries and deltas, and digests (announcements, sync requests
// and pulls).
func topologyBytes(r *mesh.Router) (entries, digests uint64) {
	m := r.Metrics()
	return m.Received.Topology.Bytes, m.Received.Digest.Bytes
}

// What one change of a connection costs a peer far from where it
// happened does not grow with the size of the mesh: the hub of a star of
// n leaves gains a connection, and a peer three hops from the hub learns
// of it for about the same number of bytes of entries and deltas whatever
// n, although the hub's entry lists n connections. Digests are counted
// apart: while the topology changes, a router exchanges digests of every
// peer it knows with a neighbour every second or so, as anti-entropy, and
// whether one falls in the measurement depends on timing alone.
func TestUpdateSizeIndependentOfMeshSize(t *testing.T) {
	checkNoGoroutineLeak(t)
	cost := func(n int) (entries, digests uint64) {
		hub := startNode(t, 0, options{})
		leaves := make([]*node, n)
		for i := range leaves {
			leaves[i] = startNode(t, 1+i, options{})
			leaves[i].connectTo(hub)
		}
		// A tail beyond the first leaf: hub - leaf - t1 - t2.
		t1 := startNode(t, n+1, options{})
		t2 := startNode(t, n+2, options{})
		t1.connectTo(leaves[0])
		t2.connectTo(t1)
		all := append([]*node{hub, t1, t2}, leaves...)
		waitFullKnowledge(t, all)
		eventually(t, "the topology settles", func() (bool, string) {
			before, _ := topologyBytes(t2.router)
			if ok, msg := versionsAgree(all); !ok {
				return false, msg
			}
			after, _ := topologyBytes(t2.router)
			return after == before, "still receiving topology"
		})
		entries0, digests0 := topologyBytes(t2.router)
		newcomer := startNode(t, n+3, options{})
		newcomer.connectTo(hub)
		all = append(all, newcomer)
		waitFullKnowledge(t, all)
		// Every version of the hub's entry has reached t2 once it knows
		// that the hub is connected to the newcomer.
		eventually(t, "t2 sees the hub's new connection", func() (bool, string) {
			hp := t2.router.Peers.Fetch(hub.router.Ourself.Name)
			for _, c := range hp.Connections() {
				if c.Name == newcomer.router.Ourself.Name {
					return true, ""
				}
			}
			return false, fmt.Sprintf("hub has %d connections", hp.NumConnections())
		})
		entries1, digests1 := topologyBytes(t2.router)
		for _, nd := range append(all, newcomer) {
			nd.router.Stop()
		}
		return entries1 - entries0, digests1 - digests0
	}
	small, smallDigests := cost(8)
	large, largeDigests := cost(64)
	t.Logf("bytes of entries and deltas received three hops from the hub for one new connection: %d with 8 leaves, %d with 64 (and of digests: %d and %d)",
		small, large, smallDigests, largeDigests)
	// The hub's entry grows by 56 connections of about 30 bytes each from
	// one mesh to the other: sent whole, the large mesh would cost well
	// over 1500 bytes more.
	require.Less(t, large, small+600, "the update grows with the mesh")
}
