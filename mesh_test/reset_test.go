package mesh_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// resetItem is the i-th broadcast item of peer src in phase phase.
func resetItem(phase, src, i int) string {
	prefix := fmt.Sprintf("reset-%d-%d-%d-", phase, src, i)
	return prefix + strings.Repeat("x", 64-len(prefix))
}

// Connections reset in the middle of bursts of broadcasts and unicasts
// (one host's, then all of them, in turn, each time the mesh has
// reconnected) lose what was in flight; the mesh reconnects and converges:
// every peer has every item of the bursts, and knows and reaches every
// other. No unicast arrives twice or at the wrong peer, and once converged
// the mesh delivers again.
func TestResetsDuringBurst(t *testing.T) {
	checkNoGoroutineLeak(t)
	const (
		size     = 10
		phases   = 4
		perPhase = 40 // broadcasts per peer and phase, and a unicast every fourth
	)
	nw, rnd := newMemNetwork(t)
	// Broadcasts lost with a connection are repaired when it comes back,
	// as each end sends the other its state, and by periodic gossip of the
	// state, every few seconds here rather than every 30.
	nodes := startMemNodes(t, nw, size, memOptions{discovery: true, gossipInterval: 5 * time.Second})
	for i, n := range nodes {
		n.connectToIndexes((i + 1) % size)
	}
	took := eventually(t, "the mesh settles", func() (bool, string) { return settled(nodes) })
	t.Logf("%d peers settled in %v", size, took)

	var (
		sentMu sync.Mutex
		// sent holds the unicasts sent to each peer, as its recorder logs
		// them.
		sent       = make(map[int]map[string]bool)
		unicastErr atomic.Int64
		resets     int
	)
	for i := range nodes {
		sent[i] = make(map[string]bool)
	}
	for phase := range phases {
		if phase > 0 {
			took := eventually(t, "the mesh reconnects", func() (bool, string) { return routesEverywhere(nodes) })
			t.Logf("phase %d: every peer had a route to every other again %v after the previous phase", phase, took)
		}
		// Each peer sends half of its share of the phase, waits while
		// connections are reset, then sends the other half.
		var done, halfway sync.WaitGroup
		resetDone := make(chan struct{})
		for _, src := range nodes {
			seed := rnd.Uint64()
			done.Add(1)
			halfway.Add(1)
			go func() {
				defer done.Done()
				r := rand.New(rand.NewPCG(seed, 2))
				for i := range perPhase {
					if i == perPhase/2 {
						halfway.Done()
						<-resetDone
					}
					item := resetItem(phase, src.index, i)
					src.rec.merge(item)
					src.gossip.GossipBroadcast(newSetData(item))
					if i%4 != 0 {
						continue
					}
					dst := nodes[(src.index+1+r.IntN(size-1))%size]
					msg := fmt.Sprintf("unicast-%d-%d-%d", phase, src.index, i)
					sentMu.Lock()
					sent[dst.index][src.router.Ourself.Name.String()+":"+msg] = true
					sentMu.Unlock()
					if err := src.gossip.GossipUnicast(dst.router.Ourself.Name, []byte(msg)); err != nil {
						unicastErr.Add(1)
					}
				}
			}()
		}
		halfway.Wait()
		var count int
		if phase%2 == 0 {
			host := memHost(rnd.IntN(size))
			count = nw.ResetHost(host)
			t.Logf("phase %d: reset the %d connections of %s", phase, count, host)
		} else {
			count = nw.ResetAll()
			t.Logf("phase %d: reset all %d connections", phase, count)
		}
		resets += count
		close(resetDone)
		done.Wait()
	}
	require.Positive(t, resets, "no connection was reset")

	start := time.Now()
	eventually(t, "every peer has every item", func() (bool, string) {
		for _, n := range nodes {
			for phase := range phases {
				for _, src := range nodes {
					for i := range perPhase {
						if item := resetItem(phase, src.index, i); !n.rec.has(item) {
							return false, fmt.Sprintf("peer %d lacks %s", n.index, item[:strings.Index(item, "-x")])
						}
					}
				}
			}
		}
		return settled(nodes)
	})
	t.Logf("after %d connections were reset: every peer had every item and the mesh settled %v after the last burst; %d unicasts found no route",
		resets, time.Since(start), unicastErr.Load())

	for _, n := range nodes {
		seen := make(map[string]bool)
		for _, u := range n.rec.unicastLog() {
			require.True(t, sent[n.index][u], "peer %d received %q, never sent to it", n.index, u)
			require.False(t, seen[u], "peer %d received %q twice", n.index, u)
			seen[u] = true
		}
	}
	exchange(t, nodes, nodes[0], nodes[size/2], "after-resets")
}
