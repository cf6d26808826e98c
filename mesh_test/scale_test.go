package mesh_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
)

// A 60-peer mesh in one process, on memnet, converges: every peer learns
// every other with its UID, has a route to it, and a broadcast reaches
// every peer. It runs everywhere, under the race detector too, so that
// every run has a mesh larger than discovery's degree, where peers reach
// most others over several hops.
func TestScale60(t *testing.T) {
	testScale(t, 60, 3*time.Minute)
}

// The same with 200 peers. Skipped with -short, and under the race
// detector (which makes it take minutes and gigabytes) unless MESH_LONG=1.
func TestScale200(t *testing.T) {
	if testing.Short() {
		t.Skip("a 200-peer mesh takes tens of seconds: run without -short")
	}
	if raceEnabled && !longTests() {
		t.Skip("a 200-peer mesh takes minutes under the race detector: run without -race, or set MESH_LONG=1")
	}
	testScale(t, 200, 5*time.Minute)
}

// The same with 1000 peers, with MESH_LONG=1.
func TestScale1000(t *testing.T) {
	if !longTests() {
		t.Skip("set MESH_LONG=1 to run a 1000-peer mesh")
	}
	testScale(t, 1000, 15*time.Minute)
}

func testScale(t *testing.T, size int, limit time.Duration) {
	checkNoGoroutineLeak(t)
	nw, rnd := newMemNetwork(t)
	// Sparse: each peer dials at most 8 others.
	o := memOptions{discovery: true, connLimit: 8, quiet: true}
	nodes := make([]*node, size)
	t.Cleanup(func() {
		// Cut every connection first: routers stopped one by one while
		// the others stay connected would make every stop a topology
		// change for hundreds of peers to process.
		nw.Close()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, n := range nodes {
			if n == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				n.router.Stop()
				<-sem
			}()
		}
		wg.Wait()
	})
	for i := range nodes {
		nodes[i] = newMemNode(t, nw, i, o)
	}
	// Each peer is given up to three earlier peers, as a program would be
	// given a few addresses to join by; discovery does the rest.
	start := time.Now()
	for i := 1; i < size; i++ {
		targets := rnd.Perm(i)[:min(i, 3)]
		nodes[i].connectToIndexes(targets...)
	}
	interval := time.Duration(size) * time.Millisecond
	progress := time.Now()
	eventuallyWithin(t, limit, interval, "every peer knows every peer", func() (bool, string) {
		// Counting first is cheap: comparing every table with every UID
		// takes a snapshot of each and allocates, which in a large mesh
		// slows what it measures.
		ok, msg := true, ""
		for _, n := range nodes {
			if c := n.router.Metrics().Peers; c != size {
				ok, msg = false, fmt.Sprintf("peer %d knows %d peers, want %d", n.index, c, size)
				break
			}
		}
		if ok {
			ok, msg = knowsAll(nodes)
		}
		if !ok && time.Since(progress) > 30*time.Second {
			progress = time.Now()
			t.Logf("%v: %s; %d connections; %s", time.Since(start).Round(time.Second), msg, nw.Conns(), missing(nodes))
		}
		return ok, msg
	})
	knew := time.Since(start)
	eventuallyWithin(t, limit, interval, "routes everywhere", func() (bool, string) { return routesEverywhere(nodes) })
	routed := time.Since(start)
	src := nodes[size/2]
	src.rec.merge("hello all")
	src.gossip.GossipBroadcast(newSetData("hello all"))
	broadcast := eventuallyWithin(t, limit, 10*time.Millisecond, "the broadcast reaches every peer", func() (bool, string) {
		for _, n := range nodes {
			if !n.rec.has("hello all") {
				return false, fmt.Sprintf("peer %d lacks it", n.index)
			}
		}
		return true, ""
	})
	conns := 0
	for _, n := range nodes {
		conns += len(n.router.Ourself.Connections())
	}
	t.Logf("%d peers: every peer knew every other %v after the first dials, had a route to every other after %v; a broadcast reached all in %v; %.1f connections per peer",
		size, knew.Round(time.Millisecond), routed.Round(time.Millisecond), broadcast.Round(time.Millisecond), float64(conns)/float64(size))
}

// missing describes, for a slow run's log, which peers lack some others,
// and how a few of the peers they lack are connected. It looks at the whole
// tables of three peers only: in a large mesh the test's goroutine is one
// of thousands, and anything slow here delays the log by minutes.
func missing(nodes []*node) string {
	var lackers []*node
	for _, n := range nodes {
		if n.router.Metrics().Peers < len(nodes) {
			lackers = append(lackers, n)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers know fewer than %d", len(lackers), len(nodes))
	for _, n := range lackers[:min(len(lackers), 3)] {
		known := make(map[mesh.PeerName]bool, len(nodes))
		for _, d := range n.router.Peers.Descriptions() {
			known[d.Name] = true
		}
		shown := 0
		for _, m := range nodes {
			if known[m.router.Ourself.Name] {
				continue
			}
			if shown == 3 {
				b.WriteString(", ...")
				break
			}
			if shown == 0 {
				fmt.Fprintf(&b, "; peer %d lacks", n.index)
			}
			shown++
			fmt.Fprintf(&b, " %d (%d connections, knows %d)", m.index, len(m.router.Ourself.Connections()), m.router.Metrics().Peers)
		}
	}
	return b.String()
}
