package mesh_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// floodItem is the i-th large broadcast item of peer src.
func floodItem(src, i int) string {
	prefix := fmt.Sprintf("flood-%d-%d-", src, i)
	return prefix + strings.Repeat("x", 8<<10-len(prefix))
}

// A peer that stops reading (its process stuck, say) does not hold up the
// others: unicasts, broadcasts and gossip between them still flow while
// their connections to it are full. With the default heartbeat those
// connections stay up throughout (bounded queues, broadcasts to it
// dropped); with a short one they time out and the others forget it. Once
// it reads again it rejoins.
func TestStalledPeer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		heartbeat time.Duration
		// floods is how many broadcasts of 8 KiB each of the others
		// sends: with the default heartbeat, 1.6 MB towards the stalled
		// peer on each connection, more than its receive buffer and the
		// sender's queue hold together; with the short one, enough to
		// fill the receive buffer and block the writers.
		floods int
	}{
		{"connections kept", 0, 200},
		{"connections dropped", 500 * time.Millisecond, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			nw, _ := newMemNetwork(t)
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

			stalled, others := nodes[4], nodes[:4]
			nw.Stall(memHost(stalled.index))
			start := time.Now()
			floods := tc.floods
			for _, src := range others {
				for i := range floods {
					item := floodItem(src.index, i)
					src.rec.merge(item)
					src.gossip.GossipBroadcast(newSetData(item))
				}
			}
			for _, src := range others {
				for _, dst := range others {
					if src != dst {
						require.NoError(t, src.gossip.GossipUnicast(dst.router.Ourself.Name, []byte(fmt.Sprint("to-", dst.index))))
					}
				}
			}
			others[0].rec.merge("subset")
			others[0].gossip.GossipNeighbourSubset(newSetData("subset"))
			eventually(t, "the others deliver among themselves", func() (bool, string) {
				for _, n := range others {
					if got := len(n.rec.unicastLog()); got != len(others)-1 {
						return false, fmt.Sprintf("peer %d got %d unicasts", n.index, got)
					}
					if !n.rec.has("subset") {
						return false, fmt.Sprintf("peer %d lacks the gossip", n.index)
					}
					for _, src := range others {
						for i := range floods {
							if !n.rec.has(floodItem(src.index, i)) {
								return false, fmt.Sprintf("peer %d lacks broadcast %d of peer %d", n.index, i, src.index)
							}
						}
					}
				}
				return true, ""
			})
			t.Logf("the others delivered everything %v after the stall began", time.Since(start))
			if tc.heartbeat == 0 {
				for _, n := range others {
					require.True(t, connectedTo(n, stalled), "peer %d kept its connection to the stalled peer", n.index)
				}
			} else {
				eventually(t, "the others forget the stalled peer", func() (bool, string) { return settled(others) })
				t.Logf("the others forgot the stalled peer %v after the stall began", time.Since(start))
			}

			nw.Unstall(memHost(stalled.index))
			took := eventually(t, "the stalled peer is back", func() (bool, string) { return settled(nodes) })
			t.Logf("the stalled peer was back %v after it read again", took)
			require.NoError(t, others[0].gossip.GossipUnicast(stalled.router.Ourself.Name, []byte("welcome back")))
			eventually(t, "unicast to the stalled peer", func() (bool, string) {
				for _, u := range stalled.rec.unicastLog() {
					if strings.HasSuffix(u, ":welcome back") {
						return true, ""
					}
				}
				return false, fmt.Sprint(stalled.rec.unicastLog())
			})
		})
	}
}
