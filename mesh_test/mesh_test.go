package mesh_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

func startNodes(t *testing.T, n int, o options) []*node {
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, i, o)
	}
	return nodes
}

func TestThreePeers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		password []byte
	}{{"plaintext", nil}, {"encrypted", []byte("correct horse battery staple")}} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			nodes := startNodes(t, 3, options{password: tc.password})
			routeChanges := make(chan struct{}, 100)
			nodes[0].router.Routes.OnChange(func() {
				select {
				case routeChanges <- struct{}{}:
				default:
				}
			})
			nodes[1].connectTo(nodes[0])
			nodes[2].connectTo(nodes[1])
			took := waitFullKnowledge(t, nodes)
			t.Logf("3 peers converged in %v", took)
			eventually(t, "routes to both peers", func() (bool, string) {
				_, ok1 := nodes[0].router.Routes.Unicast(nodes[1].router.Ourself.Name)
				_, ok2 := nodes[0].router.Routes.Unicast(nodes[2].router.Ourself.Name)
				return ok1 && ok2, ""
			})
			require.NotEmpty(t, routeChanges, "OnChange callbacks ran")
		})
	}
}

func TestRingOfTen(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 10, options{})
	for i := range nodes {
		nodes[i].connectTo(nodes[(i+1)%len(nodes)])
	}
	took := waitFullKnowledge(t, nodes)
	t.Logf("ring of 10 converged in %v", took)
}

func TestStarOfTen(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 10, options{})
	for _, leaf := range nodes[1:] {
		leaf.connectTo(nodes[0])
	}
	took := waitFullKnowledge(t, nodes)
	t.Logf("star of 10 converged in %v", took)
}

func TestStarWithDiscoveryBecomesFullMesh(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 6, options{discovery: true})
	for _, leaf := range nodes[1:] {
		leaf.connectTo(nodes[0])
	}
	waitFullKnowledge(t, nodes)
	eventually(t, "every leaf connected to every peer", func() (bool, string) {
		for _, n := range nodes {
			if got := len(n.router.Ourself.Connections()); got != len(nodes)-1 {
				return false, fmt.Sprintf("peer %d has %d connections", n.index, got)
			}
		}
		return true, ""
	})
}

// TestLineUnicastAndBroadcast builds a line 0-1-2-3-4 with discovery off, so
// messages between the ends must cross three relays.
func TestLineUnicastAndBroadcast(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 5, options{})
	for i := 1; i < len(nodes); i++ {
		nodes[i].connectTo(nodes[i-1])
	}
	waitFullKnowledge(t, nodes)
	first, last := nodes[0], nodes[4]
	eventually(t, "unicast route from end to end", func() (bool, string) {
		_, ok := first.router.Routes.Unicast(last.router.Ourself.Name)
		_, back := last.router.Routes.Unicast(first.router.Ourself.Name)
		return ok && back, "no route yet"
	})
	for _, n := range nodes {
		require.Len(t, n.router.Ourself.Connections(), map[bool]int{true: 1, false: 2}[n == first || n == last])
	}

	require.NoError(t, first.gossip.GossipUnicast(last.router.Ourself.Name, []byte("hello")))
	require.NoError(t, last.gossip.GossipUnicast(first.router.Ourself.Name, []byte("back")))
	eventually(t, "unicasts delivered", func() (bool, string) {
		a, b := last.rec.unicastLog(), first.rec.unicastLog()
		return len(a) == 1 && len(b) == 1, fmt.Sprint(a, b)
	})
	require.Equal(t, []string{first.router.Ourself.Name.String() + ":hello"}, last.rec.unicastLog())
	require.Equal(t, []string{last.router.Ourself.Name.String() + ":back"}, first.rec.unicastLog())
	for _, n := range nodes[1:4] {
		require.Empty(t, n.rec.unicastLog(), "relays do not deliver")
	}

	// Broadcasts from an end and from the middle reach every other peer
	// exactly once.
	for _, src := range []*node{first, nodes[2]} {
		items := make([]string, 5)
		for i := range items {
			items[i] = fmt.Sprintf("from-%d-%d", src.index, i)
			src.rec.merge(items[i])
			src.gossip.GossipBroadcast(newSetData(items[i]))
		}
		eventually(t, "broadcasts delivered", func() (bool, string) {
			for _, n := range nodes {
				for _, it := range items {
					if n != src && !n.rec.has(it) {
						return false, fmt.Sprintf("peer %d lacks %s", n.index, it)
					}
				}
			}
			return true, ""
		})
		for _, n := range nodes {
			for _, it := range items {
				want := 1
				if n == src {
					want = 0
				}
				require.Equal(t, want, n.rec.broadcastCount(it), "peer %d, %s", n.index, it)
			}
		}
	}

	// Neighbour-subset gossip reaches every peer through relaying.
	first.rec.merge("gossiped")
	first.gossip.GossipNeighbourSubset(newSetData("gossiped"))
	eventually(t, "gossip relayed to the end", func() (bool, string) {
		return last.rec.has("gossiped"), "not yet"
	})
}

func TestUnicastToUnknownPeer(t *testing.T) {
	n := startNode(t, 0, options{})
	err := n.gossip.GossipUnicast(name(42), []byte("x"))
	require.ErrorIs(t, err, mesh.ErrNoRoute)
}

func TestRestartedPeerRelearned(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 4, options{})
	for i := 1; i < len(nodes); i++ {
		nodes[i].connectTo(nodes[i-1])
	}
	waitFullKnowledge(t, nodes)
	oldUID := nodes[3].router.Ourself.UID
	require.NoError(t, nodes[3].router.Stop())
	restarted := startNode(t, 3, options{})
	require.NotEqual(t, oldUID, restarted.router.Ourself.UID)
	restarted.connectTo(nodes[2])
	nodes[3] = restarted
	took := waitFullKnowledge(t, nodes)
	t.Logf("restarted peer relearned in %v", took)
}

func TestStoppedPeerRemoved(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 4, options{})
	for i := 1; i < len(nodes); i++ {
		nodes[i].connectTo(nodes[0])
	}
	// Once every peer has a route to every other, every peer has seen the
	// one about to stop reachable, and removes it a second after it stops:
	// a peer never seen reachable is kept much longer.
	eventually(t, "the peers settle", func() (bool, string) { return settled(nodes) })
	gone := nodes[3]
	var mu = make(chan mesh.PeerName, 16)
	nodes[1].router.Peers.OnGC(func(p *mesh.Peer) { mu <- p.Name })
	require.NoError(t, gone.router.Stop())
	took := waitFullKnowledge(t, nodes[:3])
	t.Logf("stopped peer removed in %v", took)
	require.Equal(t, gone.router.Ourself.Name, <-mu)
}

func TestSelfConnectionNotRetried(t *testing.T) {
	n := startNode(t, 0, options{})
	n.connectTo(n)
	eventually(t, "self connection given up", func() (bool, string) {
		st := n.router.ConnectionMaker.Status()
		return len(st) == 1 && st[0].State == "failed" && strings.Contains(st[0].LastError, "ourself"), fmt.Sprint(st)
	})
	require.Empty(t, n.router.Ourself.Connections())
}

func TestNameCollisionRefused(t *testing.T) {
	a := startNode(t, 0, options{})
	b := startNode(t, 0, options{}) // same name, another UID
	b.connectTo(a)
	eventually(t, "collision given up", func() (bool, string) {
		st := b.router.ConnectionMaker.Status()
		return len(st) == 1 && st[0].State == "failed" && strings.Contains(st[0].LastError, "collision"), fmt.Sprint(st)
	})
	require.Empty(t, a.router.Ourself.Connections())
}

func TestPasswordMismatchRefused(t *testing.T) {
	a := startNode(t, 0, options{password: []byte("one password")})
	b := startNode(t, 1, options{password: []byte("another password")})
	c := startNode(t, 2, options{})
	b.connectTo(a)
	c.connectTo(a)
	eventually(t, "both refused with clear errors", func() (bool, string) {
		sb, sc := b.router.ConnectionMaker.Status(), c.router.ConnectionMaker.Status()
		ok := len(sb) == 1 && sb[0].LastError != "" && len(sc) == 1 && strings.Contains(sc[0].LastError, "encrypt")
		return ok, fmt.Sprint(sb, sc)
	})
	require.Empty(t, a.router.Ourself.Connections())
}

func TestStopIsIdempotentAndStatusEncodes(t *testing.T) {
	checkNoGoroutineLeak(t)
	nodes := startNodes(t, 2, options{})
	nodes[1].connectTo(nodes[0])
	waitFullKnowledge(t, nodes)
	st := mesh.NewStatus(nodes[0].router)
	require.Len(t, st.Peers, 2)
	require.Len(t, st.Connections, 1)
	require.Equal(t, "established", st.Connections[0].State)
	require.NoError(t, nodes[0].router.Stop())
	require.NoError(t, nodes[0].router.Stop())
}

// A peer that joins after state was gossiped gets the complete state from
// its new neighbour at once, not at the next periodic gossip.
func TestLateJoinerGetsStateOnConnect(t *testing.T) {
	checkNoGoroutineLeak(t)
	// No periodic gossip during the test: only the new connection can
	// bring the state.
	nodes := startNodes(t, 2, options{gossipInterval: time.Hour})
	nodes[0].rec.merge("early")
	late := nodes[1]
	late.connectTo(nodes[0])
	eventually(t, "state sent down the new connection", func() (bool, string) {
		return late.rec.has("early"), "not yet"
	})
}
