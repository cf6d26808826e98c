package mesh_test

import (
	"fmt"
	"testing"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// blockingGossiper blocks in every callback until released.
type blockingGossiper struct {
	release chan struct{}
}

func (b *blockingGossiper) OnGossipUnicast(mesh.PeerName, []byte) error {
	<-b.release
	return nil
}
func (b *blockingGossiper) OnGossipBroadcast(mesh.PeerName, []byte) (mesh.GossipData, error) {
	<-b.release
	return nil, nil
}
func (b *blockingGossiper) Gossip() mesh.GossipData { return nil }
func (b *blockingGossiper) OnGossip([]byte) (mesh.GossipData, error) {
	<-b.release
	return nil, nil
}

// A Gossiper that never returns stalls neither the topology nor the other
// channels, and Stop still returns.
func TestSlowGossiperStallsOnlyItsChannel(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 3, options{})
	slow := &blockingGossiper{release: make(chan struct{})}
	defer close(slow.release)
	slowGossip := make([]mesh.Gossip, len(nodes))
	for i, n := range nodes {
		g, err := n.router.NewGossip("slow", slow)
		require.NoError(t, err)
		slowGossip[i] = g
	}
	nodes[1].connectTo(nodes[0])
	waitFullKnowledge(t, nodes[:2])
	eventually(t, "route", func() (bool, string) {
		_, ok := nodes[1].router.Routes.Unicast(nodes[0].router.Ourself.Name)
		return ok, ""
	})
	// Fill the slow channel of peer 0 well past its queue.
	for i := 0; i < 100; i++ {
		require.NoError(t, slowGossip[1].GossipUnicast(nodes[0].router.Ourself.Name, []byte(fmt.Sprint(i))))
	}
	// Topology still changes and converges, and the other channel still
	// delivers.
	nodes[2].connectTo(nodes[0])
	waitFullKnowledge(t, nodes)
	eventually(t, "route", func() (bool, string) {
		_, ok := nodes[2].router.Routes.Unicast(nodes[0].router.Ourself.Name)
		return ok, ""
	})
	require.NoError(t, nodes[2].gossip.GossipUnicast(nodes[0].router.Ourself.Name, []byte("fast")))
	eventually(t, "fast channel delivers", func() (bool, string) {
		return len(nodes[0].rec.unicastLog()) == 1, fmt.Sprint(nodes[0].rec.unicastLog())
	})
}

// Messages on a channel that a relaying peer has not registered still pass
// through it.
func TestUnregisteredChannelRelayed(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 3, options{})
	nodes[1].connectTo(nodes[0])
	nodes[2].connectTo(nodes[1])
	waitFullKnowledge(t, nodes)
	ends := []*node{nodes[0], nodes[2]}
	recs := make([]*recorder, 2)
	gossips := make([]mesh.Gossip, 2)
	for i, n := range ends {
		recs[i] = newRecorder()
		g, err := n.router.NewGossip("private", recs[i])
		require.NoError(t, err)
		gossips[i] = g
	}
	eventually(t, "route", func() (bool, string) {
		_, ok := nodes[0].router.Routes.Unicast(nodes[2].router.Ourself.Name)
		return ok, ""
	})
	require.NoError(t, gossips[0].GossipUnicast(nodes[2].router.Ourself.Name, []byte("through")))
	recs[0].merge("b1")
	gossips[0].GossipBroadcast(newSetData("b1"))
	recs[0].merge("g1")
	gossips[0].GossipNeighbourSubset(newSetData("g1"))
	eventually(t, "relayed by the peer without the channel", func() (bool, string) {
		return len(recs[1].unicastLog()) == 1 && recs[1].has("b1") && recs[1].has("g1"), fmt.Sprint(recs[1].unicastLog())
	})
	require.Equal(t, 1, recs[1].broadcastCount("b1"))
}
