package mesh_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh/memnet"
	"github.com/stretchr/testify/require"
)

// floodItem is the i-th large broadcast item of peer src in the run tag.
func floodItem(tag string, src, i int) string {
	prefix := fmt.Sprintf("flood-%s-%d-%d-", tag, src, i)
	return prefix + strings.Repeat("x", 8<<10-len(prefix))
}

// stallCase configures TestStalledPeer.
type stallCase struct {
	name      string
	heartbeat time.Duration
	// bufferSize bounds the bytes in flight in each direction of a
	// connection; 0 means memnet's default.
	bufferSize int
	// floods is how many broadcasts of 8 KiB each of the others sends.
	floods int
}

// startStallMesh starts a full mesh of five peers, with discovery, on a
// network of its own.
func startStallMesh(t *testing.T, tc stallCase) (*memnet.Network, []*node) {
	t.Helper()
	nw, _ := newMemNetworkConfig(t, memnet.Config{BufferSize: tc.bufferSize})
	nodes := startMemNodes(t, nw, 5, memOptions{discovery: true, heartbeat: tc.heartbeat, handshakeTimeout: time.Second})
	for _, n := range nodes[1:] {
		n.connectToIndexes(0)
	}
	eventually(t, "full mesh", func() (bool, string) {
		for _, n := range nodes {
			if got := len(n.router.Ourself.Connections()); got != len(nodes)-1 {
				return false, fmt.Sprintf("peer %d has %d connections", n.index, got)
			}
		}
		return settled(nodes)
	})
	return nw, nodes
}

// hasUnicast reports whether n received msg from src.
func hasUnicast(n, src *node, msg string) bool {
	want := src.router.Ourself.Name.String() + ":" + msg
	for _, u := range n.rec.unicastLog() {
		if u == want {
			return true
		}
	}
	return false
}

// floodRound is how many broadcasts each peer sends before waiting for the
// others to have them: 384 KiB per connection, which a connection's send
// queue (1 MiB) holds, so that no broadcast between peers that read is
// dropped however slowly their writers run, while the rounds pile up on a
// connection to a peer that does not read.
const floodRound = 48

// sendTraffic has each of peers broadcast floods items of 8 KiB, in rounds
// of floodRound, and send a unicast to each of the others, and the first
// gossip an item to a subset of its neighbours; it waits until each of
// peers has received all of it, and returns how long that took from the
// first send.
func sendTraffic(t *testing.T, peers []*node, floods int, tag string) time.Duration {
	t.Helper()
	start := time.Now()
	for from := 0; from < floods; from += floodRound {
		to := min(from+floodRound, floods)
		for _, src := range peers {
			for i := from; i < to; i++ {
				item := floodItem(tag, src.index, i)
				src.rec.merge(item)
				src.gossip.GossipBroadcast(newSetData(item))
			}
		}
		eventually(t, fmt.Sprintf("%s: the peers have broadcasts %d to %d", tag, from, to-1), func() (bool, string) {
			return hasFloods(peers, tag, to)
		})
	}
	for _, src := range peers {
		for _, dst := range peers {
			if src != dst {
				require.NoError(t, src.gossip.GossipUnicast(dst.router.Ourself.Name, []byte(fmt.Sprintf("%s-to-%d", tag, dst.index))))
			}
		}
	}
	subset := tag + "-subset"
	peers[0].rec.merge(subset)
	peers[0].gossip.GossipNeighbourSubset(newSetData(subset))
	eventually(t, tag+": the peers deliver among themselves", func() (bool, string) {
		for _, n := range peers {
			for _, src := range peers {
				if src != n && !hasUnicast(n, src, fmt.Sprintf("%s-to-%d", tag, n.index)) {
					return false, fmt.Sprintf("peer %d lacks the unicast of peer %d", n.index, src.index)
				}
			}
			if !n.rec.has(subset) {
				return false, fmt.Sprintf("peer %d lacks the gossip", n.index)
			}
		}
		return hasFloods(peers, tag, floods)
	})
	return time.Since(start)
}

// hasFloods reports whether each of peers has the first floods broadcasts
// of each of the others in the run tag.
func hasFloods(peers []*node, tag string, floods int) (bool, string) {
	for _, n := range peers {
		for _, src := range peers {
			for i := range floods {
				if !n.rec.has(floodItem(tag, src.index, i)) {
					return false, fmt.Sprintf("peer %d lacks broadcast %d of peer %d", n.index, i, src.index)
				}
			}
		}
	}
	return true, ""
}

// A peer that stops reading (its process stuck, say) does not hold up the
// others: unicasts, broadcasts and gossip between them still flow while
// their connections to it are full, about as fast as on the same mesh
// without a stalled peer. With the default heartbeat those connections
// stay up throughout (bounded queues, broadcasts to it dropped); with a
// short one they time out and the others forget it. Once it reads again it
// rejoins and, when it was forgotten, catches up with the state.
func TestStalledPeer(t *testing.T) {
	for _, tc := range []stallCase{
		// 1.6 MB towards the stalled peer on each connection, more than
		// its receive buffer and the sender's queue hold together.
		{name: "connections kept", floods: 200},
		// Enough to fill the receive buffer and block the writers. The
		// others send the stalled peer their whole state when it comes
		// back, which must arrive within the write timeout (twice the
		// heartbeat): small buffers keep that state small.
		{name: "connections dropped", heartbeat: 500 * time.Millisecond, bufferSize: 32 << 10, floods: 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			// The baseline: the same traffic on a mesh of its own, where
			// no peer stalls.
			_, calm := startStallMesh(t, tc)
			baseline := sendTraffic(t, calm[:4], tc.floods, "calm")
			for _, n := range calm {
				n.router.Stop()
			}
			t.Logf("without a stalled peer, four peers delivered everything in %v", baseline)

			nw, nodes := startStallMesh(t, tc)
			stalled, others := nodes[4], nodes[:4]
			nw.Stall(memHost(stalled.index))
			start := time.Now()
			took := sendTraffic(t, others, tc.floods, "stalled")
			t.Logf("with a stalled peer, the four others delivered everything in %v", took)
			// A writer blocked on the stalled peer would hold the others up
			// until its write timeout or the deadline: tens of seconds.
			require.LessOrEqual(t, took, 5*baseline+2*time.Second, "the stalled peer slowed the others down")
			if tc.heartbeat == 0 {
				for _, n := range others {
					require.True(t, connectedTo(n, stalled), "peer %d kept its connection to the stalled peer", n.index)
				}
			} else {
				eventually(t, "the others forget the stalled peer", func() (bool, string) { return settled(others) })
				t.Logf("the others forgot the stalled peer %v after the stall began", time.Since(start))
			}

			// Connections made from now on are counted: a rejoin needs
			// few if any (handshakes begun during the stall may complete
			// now); many would mean connections failing again and again.
			made := nw.Made()
			nw.Unstall(memHost(stalled.index))
			start = time.Now()
			took = eventually(t, "the stalled peer is back", func() (bool, string) { return settled(nodes) })
			t.Logf("the stalled peer was back %v after it read again", took)
			if tc.heartbeat != 0 {
				// It has everything the others sent while it was stalled:
				// each sends it its state when they connect again.
				eventually(t, "the stalled peer catches up", func() (bool, string) {
					for _, src := range others {
						for i := range tc.floods {
							if !stalled.rec.has(floodItem("stalled", src.index, i)) {
								return false, fmt.Sprintf("it lacks broadcast %d of peer %d", i, src.index)
							}
						}
					}
					return true, ""
				})
				t.Logf("the stalled peer had caught up %v after it read again", time.Since(start))
			}
			// A unicast is not retried by the mesh: one queued on a
			// connection that then fails is lost, so it is sent again
			// until it arrives.
			var sent time.Time
			eventually(t, "unicast to the stalled peer", func() (bool, string) {
				if hasUnicast(stalled, others[0], "welcome back") {
					return true, ""
				}
				if time.Since(sent) > 500*time.Millisecond {
					sent = time.Now()
					if err := others[0].gossip.GossipUnicast(stalled.router.Ourself.Name, []byte("welcome back")); err != nil {
						return false, err.Error()
					}
				}
				return false, fmt.Sprint(stalled.rec.unicastLog())
			})
			t.Logf("a unicast reached it %v after it read again; connections made since: %d", time.Since(start), nw.Made()-made)
		})
	}
}
