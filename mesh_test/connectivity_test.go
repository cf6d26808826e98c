package mesh_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh/memnet"
	"github.com/stretchr/testify/require"
)

// routeVia reports whether from's next hop towards to is via.
func routeVia(from, to, via *node) (bool, string) {
	hop, ok := from.router.Routes.Unicast(to.router.Ourself.Name)
	if !ok || hop != via.router.Ourself.Name {
		return false, fmt.Sprintf("peer %d reaches peer %d via %v (found %v), want peer %d", from.index, to.index, hop, ok, via.index)
	}
	return true, ""
}

// connectedTo reports whether n has an established connection to o.
func connectedTo(n, o *node) bool {
	for _, c := range n.router.Ourself.Connections() {
		if c.Remote().Name == o.router.Ourself.Name {
			return true
		}
	}
	return false
}

// exchange sends a unicast each way between a and b and a broadcast from
// each, and waits until every peer got what it should, once.
func exchange(t *testing.T, nodes []*node, a, b *node, tag string) {
	t.Helper()
	require.NoError(t, a.gossip.GossipUnicast(b.router.Ourself.Name, []byte(tag+"-ab")))
	require.NoError(t, b.gossip.GossipUnicast(a.router.Ourself.Name, []byte(tag+"-ba")))
	for _, src := range []*node{a, b} {
		item := fmt.Sprintf("%s-from-%d", tag, src.index)
		src.rec.merge(item)
		src.gossip.GossipBroadcast(newSetData(item))
	}
	wantUnicast := func(n, from *node, msg string) bool {
		for _, u := range n.rec.unicastLog() {
			if u == from.router.Ourself.Name.String()+":"+msg {
				return true
			}
		}
		return false
	}
	eventually(t, tag+": unicasts and broadcasts delivered", func() (bool, string) {
		if !wantUnicast(b, a, tag+"-ab") || !wantUnicast(a, b, tag+"-ba") {
			return false, fmt.Sprintf("unicasts: %v, %v", a.rec.unicastLog(), b.rec.unicastLog())
		}
		for _, n := range nodes {
			for _, src := range []*node{a, b} {
				if item := fmt.Sprintf("%s-from-%d", tag, src.index); n != src && !n.rec.has(item) {
					return false, fmt.Sprintf("peer %d lacks %s", n.index, item)
				}
			}
		}
		return true, ""
	})
	for _, n := range nodes {
		for _, src := range []*node{a, b} {
			want := 1
			if n == src {
				want = 0
			}
			item := fmt.Sprintf("%s-from-%d", tag, src.index)
			require.Equal(t, want, n.rec.broadcastCount(item), "peer %d received %s", n.index, item)
		}
	}
}

// A and C cannot reach each other, but both reach B: B relays between
// them. When A loses B too, A and C find the path through D. The link A-B
// is cut both ways, or only from A to B (B then stops hearing from A and
// drops the connection; A cannot dial again, as a handshake needs both
// ways), on links with a little latency and jitter. When the link D-C,
// the last path between A and C, is cut too, A has no route to C, a
// unicast to C fails, and A forgets C and B (and they A and D); C is back
// once D-C heals.
func TestPartialConnectivity(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(nw *memnet.Network, a, b string)
	}{
		{"both ways", (*memnet.Network).Cut},
		{"one way", (*memnet.Network).CutOneWay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			nw, _ := newMemNetwork(t)
			nw.SetLatency(2*time.Millisecond, time.Millisecond)
			// A peer removed while the mesh was split can come back first
			// as a name only (a placeholder), named by another's entry,
			// its own entry then coming with the periodic gossip of the
			// topology: gossip every second keeps that short.
			o := memOptions{heartbeat: 200 * time.Millisecond, handshakeTimeout: time.Second, gossipInterval: time.Second}
			nodes := startMemNodes(t, nw, 3, o)
			a, b, c := nodes[0], nodes[1], nodes[2]
			nw.Cut(memHost(a.index), memHost(c.index))
			// A is also told to connect to C, which keeps failing.
			a.connectToIndexes(b.index, c.index)
			c.connectToIndexes(b.index)
			eventually(t, "the three peers settle, A and C through B", func() (bool, string) {
				if ok, msg := routeVia(a, c, b); !ok {
					return false, msg
				}
				if ok, msg := routeVia(c, a, b); !ok {
					return false, msg
				}
				return settled(nodes)
			})
			require.False(t, connectedTo(a, c))
			exchange(t, nodes, a, c, "via-b")

			d := startMemNode(t, nw, 3, o)
			d.connectToIndexes(a.index, c.index)
			nodes = append(nodes, d)
			eventually(t, "the four peers settle", func() (bool, string) { return settled(nodes) })

			tc.cut(nw, memHost(a.index), memHost(b.index))
			took := eventually(t, "A and C reach each other through D", func() (bool, string) {
				if connectedTo(a, b) || connectedTo(b, a) {
					return false, "A and B still connected"
				}
				if ok, msg := routeVia(a, c, d); !ok {
					return false, msg
				}
				if ok, msg := routeVia(c, a, d); !ok {
					return false, msg
				}
				return settled(nodes)
			})
			t.Logf("A and C rerouted through D %v after the link A-B was cut", took)
			exchange(t, nodes, a, c, "via-d")
			exchange(t, nodes, a, b, "a-to-b")

			nw.Cut(memHost(d.index), memHost(c.index))
			took = eventually(t, "A has no route to C", func() (bool, string) {
				if hop, ok := a.router.Routes.Unicast(c.router.Ourself.Name); ok {
					return false, fmt.Sprintf("peer %d reaches peer %d via %v", a.index, c.index, hop)
				}
				return true, ""
			})
			t.Logf("A lost its route to C %v after the link D-C was cut", took)
			require.Error(t, a.gossip.GossipUnicast(c.router.Ourself.Name, []byte("nowhere")), "unicast from A to C without a path")
			took = eventually(t, "each side forgets the other", func() (bool, string) {
				if ok, msg := settled([]*node{a, d}); !ok {
					return false, msg
				}
				return settled([]*node{b, c})
			})
			t.Logf("A and D, B and C forgot each other %v after the link D-C was cut", took)

			nw.Heal(memHost(d.index), memHost(c.index))
			took = eventually(t, "A knows C again", func() (bool, string) {
				if ok, msg := routeVia(a, c, d); !ok {
					return false, msg
				}
				return settled(nodes)
			})
			t.Logf("the four peers settled %v after the link D-C healed", took)
			exchange(t, nodes, a, c, "back")
		})
	}
}

// When the hub of a star stops, the leaves go on as a mesh of their own:
// while the hub ran they could not reach each other (every link between
// two leaves is cut), but they learnt each other's addresses from the
// hub's topology entry; once the hub has stopped and those links heal,
// discovery connects them.
func TestHubFailure(t *testing.T) {
	checkNoGoroutineLeak(t)
	nw, _ := newMemNetwork(t)
	nodes := startMemNodes(t, nw, 8, memOptions{discovery: true, heartbeat: 200 * time.Millisecond})
	hub, leaves := nodes[0], nodes[1:]
	for i, a := range leaves {
		for _, b := range leaves[i+1:] {
			nw.Cut(memHost(a.index), memHost(b.index))
		}
	}
	for _, leaf := range leaves {
		leaf.connectToIndexes(hub.index)
	}
	took := eventually(t, "a star that every peer knows whole", func() (bool, string) {
		if ok, msg := settled(nodes); !ok {
			return false, msg
		}
		for _, leaf := range leaves {
			// Discovery has taken up the address of every other leaf,
			// as the hub reports it: dials to them fail while the links
			// are cut.
			discovered := make(map[string]bool)
			for _, ts := range leaf.router.ConnectionMaker.Status() {
				if !ts.Direct {
					discovered[ts.Address] = true
				}
			}
			for _, other := range leaves {
				if other != leaf && !discovered[other.addr()] {
					return false, fmt.Sprintf("peer %d has not discovered peer %d at %s: %v", leaf.index, other.index, other.addr(), discovered)
				}
			}
		}
		return true, ""
	})
	t.Logf("every peer of the star knew every other, and every leaf the others' addresses, in %v", took)
	for _, leaf := range leaves {
		conns := leaf.router.Ourself.Connections()
		require.Len(t, conns, 1, "peer %d", leaf.index)
		for _, c := range conns {
			require.Equal(t, hub.router.Ourself.Name, c.Remote().Name, "peer %d is connected to another leaf", leaf.index)
		}
	}

	hub.router.Stop()
	nw.HealAll()
	start := time.Now()
	eventually(t, "the leaves connected without the hub", func() (bool, string) {
		for _, leaf := range leaves {
			if len(leaf.router.Ourself.Connections()) == 0 {
				return false, fmt.Sprintf("peer %d has no connection", leaf.index)
			}
		}
		return settled(leaves)
	})
	t.Logf("the leaves settled %v after the hub stopped", time.Since(start))
	for _, leaf := range leaves {
		require.Nil(t, leaf.router.Peers.Fetch(hub.router.Ourself.Name), "peer %d still knows the hub", leaf.index)
	}
	exchange(t, leaves, leaves[0], leaves[len(leaves)-1], "leaves")
}
