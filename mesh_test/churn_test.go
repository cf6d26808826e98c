package mesh_test

import (
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// Peers of a 30-peer mesh stop and restart (same name and address, new UID,
// new Router) round after round. After each round every running peer has
// the same topology: every running peer with its current UID, no stopped
// peer, no earlier incarnation. Goroutines do not grow from round to round,
// and every stopped Router is garbage collected: nothing keeps one alive.
// MESH_LONG=1 runs 30 rounds instead of 6.
func TestChurn(t *testing.T) {
	checkNoGoroutineLeak(t)
	base := runtime.NumGoroutine()
	const size = 30
	rounds := 6
	if longTests() {
		rounds = 30
	}
	nw, rnd := newMemNetwork(t)
	o := memOptions{
		discovery:        true,
		connLimit:        6,
		heartbeat:        500 * time.Millisecond,
		handshakeTimeout: 2 * time.Second,
		quiet:            longTests(),
	}
	nodes := make([]*node, size)
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.router.Stop()
			}
		}
	})
	// join starts peer i and gives it the addresses of three others,
	// chosen at random so that no peer is given to all: a peer accepts at
	// most four times ConnLimit connections, and one that every peer dials
	// refuses some.
	join := func(i int) {
		nodes[i] = newMemNode(t, nw, i, o)
		var targets []int
		for _, j := range rnd.Perm(size) {
			if j != i && len(targets) < 3 {
				targets = append(targets, j)
			}
		}
		nodes[i].connectToIndexes(targets...)
	}
	for i := range nodes {
		join(i)
	}
	took := eventually(t, "the mesh settles", func() (bool, string) { return settled(nodes) })
	t.Logf("%d peers settled in %v", size, took)

	// stop stops peer i and counts its Router as stopped, then as
	// collected once the garbage collector frees it.
	var stopped int
	var collected atomic.Int64
	stop := func(i int) {
		nodes[i].router.Stop()
		stopped++
		runtime.AddCleanup(nodes[i].router, func(struct{}) { collected.Add(1) }, struct{}{})
	}
	// allCollected waits until every Router stopped so far is collected,
	// and returns how long that took.
	allCollected := func() time.Duration {
		return eventuallyWithin(t, 20*time.Second, 50*time.Millisecond, "every stopped Router collected", func() (bool, string) {
			runtime.GC()
			got := collected.Load()
			return got == int64(stopped), fmt.Sprintf("%d of the %d stopped Routers collected", got, stopped)
		})
	}
	// unaccounted is how many goroutines run beyond those of the test
	// itself and those the routers account for. Polled until it is no
	// more than limit, as connections come and go; returns the last count.
	unaccounted := func(limit int) int {
		var n int
		eventually(t, "no more goroutines than after the first round", func() (bool, string) {
			n = runtime.NumGoroutine() - base - routerGoroutines(nodes, 1)
			return n <= limit, fmt.Sprintf("%d goroutines unaccounted for, %d after the first round", n, limit)
		})
		return n
	}
	var first int
	for round := 1; round <= rounds; round++ {
		victims := rnd.Perm(size)[:1+rnd.IntN(4)]
		slices.Sort(victims)
		for _, i := range victims {
			stop(i)
		}
		if round%2 == 1 {
			// The survivors forget the stopped peers before they restart.
			var survivors []*node
			for i, n := range nodes {
				if !slices.Contains(victims, i) {
					survivors = append(survivors, n)
				}
			}
			took := eventually(t, "the survivors forget the stopped peers", func() (bool, string) { return settled(survivors) })
			t.Logf("round %d: peers %v stopped; the others forgot them in %v", round, victims, took)
		} else {
			t.Logf("round %d: peers %v stopped and restarted at once", round, victims)
		}
		for _, i := range victims {
			join(i)
		}
		took := eventually(t, "the mesh settles after the restarts", func() (bool, string) { return settled(nodes) })
		t.Logf("round %d: settled %v after the restarts; every stopped Router collected %v later", round, took, allCollected())
		if round == 1 {
			// At most a few: the dialler of a dial that is just starting,
			// the writer of a handshake, a timer's function.
			first = unaccounted(4)
			t.Logf("after the first round: %d goroutines, %d of them unaccounted for", runtime.NumGoroutine(), first)
		}
	}
	t.Logf("after round %d: %d goroutines, %d of them unaccounted for; the %d stopped Routers were collected",
		rounds, runtime.NumGoroutine(), unaccounted(max(first, 0)), stopped)
}
