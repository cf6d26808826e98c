package mesh

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// buildTopology makes the topology seen by peer `us` of a mesh with the
// given undirected edges, every connection established at both ends.
func buildTopology(n, us int, edges [][2]int) *topology {
	adj := make([][]connectionSummary, n)
	for _, e := range edges {
		adj[e[0]] = append(adj[e[0]], conn(e[1], true))
		adj[e[1]] = append(adj[e[1]], conn(e[0], true))
	}
	tp := newTopology(&Peer{Name: testPeerName(us), UID: PeerUID(us + 1)}, topologyLimits{MaxPeers: n + 1, MaxConnections: n})
	tp.setOurConnections(adj[us])
	var updates []peerUpdate
	for i := 0; i < n; i++ {
		if i != us {
			updates = append(updates, update(i, PeerUID(i+1), 1, adj[i]...))
		}
	}
	tp.apply(updates)
	return tp
}

func line(n int) [][2]int {
	var e [][2]int
	for i := 0; i+1 < n; i++ {
		e = append(e, [2]int{i, i + 1})
	}
	return e
}

func TestUnicastRoutesOnLine(t *testing.T) {
	tp := buildTopology(5, 0, line(5))
	r := newRoutes(&Peers{topo: tp})
	for dst := 1; dst < 5; dst++ {
		hop, ok := r.Unicast(testPeerName(dst))
		require.True(t, ok)
		require.Equal(t, testPeerName(1), hop)
	}
	hop, ok := r.Unicast(testPeerName(0))
	require.True(t, ok)
	require.Equal(t, UnknownPeerName, hop)
	_, ok = r.Unicast(testPeerName(42))
	require.False(t, ok)
}

func TestUnicastNeedsBothEnds(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	// Peer 1 does not report the connection back yet.
	tp.apply([]peerUpdate{update(1, 11, 1)})
	r := newRoutes(&Peers{topo: tp})
	_, ok := r.Unicast(testPeerName(1))
	require.False(t, ok)
	hop, ok := r.UnicastAll(testPeerName(1))
	require.True(t, ok)
	require.Equal(t, testPeerName(1), hop)
	tp.apply([]peerUpdate{update(1, 11, 2, conn(0, true))})
	require.True(t, r.recalculate(tp))
	_, ok = r.Unicast(testPeerName(1))
	require.True(t, ok)
	require.False(t, r.recalculate(tp), "no change, no callback")
}

func TestRoutesDeterministicTieBreak(t *testing.T) {
	// A square 0-1-3 and 0-2-3: two shortest paths to 3; the lower name wins.
	edges := [][2]int{{0, 1}, {0, 2}, {1, 3}, {2, 3}}
	for i := 0; i < 10; i++ {
		r := newRoutes(&Peers{topo: buildTopology(4, 0, edges)})
		hop, ok := r.Unicast(testPeerName(3))
		require.True(t, ok)
		require.Equal(t, testPeerName(1), hop)
	}
}

// TestBroadcastTreeDeliversOnce simulates a broadcast from every peer of
// random meshes, each peer passing it on to Broadcast(src) as computed from
// its own (identical) view, and checks that every peer gets it exactly once.
func TestBroadcastTreeDeliversOnce(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 20; trial++ {
		n := 2 + rnd.IntN(30)
		edges := line(n) // connected
		for k := rnd.IntN(2 * n); k > 0; k-- {
			a, b := rnd.IntN(n), rnd.IntN(n)
			if a != b {
				edges = append(edges, [2]int{a, b})
			}
		}
		routes := make([]*Routes, n)
		for i := range routes {
			routes[i] = newRoutes(&Peers{topo: buildTopology(n, i, edges)})
		}
		for src := 0; src < n; src++ {
			got := make([]int, n)
			queue := []int{src}
			got[src] = 1
			for len(queue) > 0 {
				cur := queue[0]
				queue = queue[1:]
				for _, next := range routes[cur].Broadcast(testPeerName(src)) {
					j := int(next - testPeerName(0))
					got[j]++
					queue = append(queue, j)
				}
			}
			for i, c := range got {
				require.Equal(t, 1, c, "trial %d n=%d src=%d peer %d got the broadcast %d times", trial, n, src, i, c)
			}
		}
	}
}

func TestRouteOnChangeAndPeerNames(t *testing.T) {
	tp := buildTopology(3, 0, line(3))
	r := newRoutes(&Peers{topo: tp})
	require.Equal(t, []PeerName{testPeerName(0), testPeerName(1), testPeerName(2)}, r.PeerNames())
	fired := 0
	r.OnChange(func() { fired++ })
	r.fireOnChange()
	require.Equal(t, 1, fired)
}

func TestSubsetSize(t *testing.T) {
	for _, c := range []struct{ n, want int }{{0, 0}, {1, 0}, {2, 2}, {3, 4}, {4, 4}, {5, 6}, {1000, 20}} {
		require.Equal(t, c.want, subsetSize(c.n), "n=%d", c.n)
	}
}

func TestChooseSubset(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	cands := []PeerName{1, 2, 3, 4, 5}
	got := chooseSubset(cands, 3, 2, rnd)
	require.Len(t, got, 3)
	require.NotContains(t, got, PeerName(2))
	require.Equal(t, []PeerName{1, 2, 3, 4, 5}, cands, "input untouched")
	require.ElementsMatch(t, []PeerName{1, 3, 4, 5}, chooseSubset(cands, 10, 2, rnd))
}

// benchTopology returns a topology of n peers, each with about ten
// connections: a line, and random connections.
func benchTopology(n int) *topology {
	rnd := rand.New(rand.NewPCG(5, 6))
	edges := line(n)
	for i := 0; i < 4*n; i++ {
		a, c := rnd.IntN(n), rnd.IntN(n)
		if a != c {
			edges = append(edges, [2]int{a, c})
		}
	}
	return buildTopology(n, 0, edges)
}

// BenchmarkRouteRecalculate measures a route computation after a change:
// unicast routes over mutual and over all connections (the broadcast
// trees are computed when first used).
func BenchmarkRouteRecalculate(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint("peers=", n), func(b *testing.B) {
			tp := benchTopology(n)
			r := newRoutes(&Peers{topo: tp})
			b.ReportAllocs()
			for b.Loop() {
				tp.gen++ // as after a change
				r.recalculate(tp)
			}
		})
	}
}

// BenchmarkBroadcastTree measures the computation of one originator's
// broadcast tree.
func BenchmarkBroadcastTree(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint("peers=", n), func(b *testing.B) {
			tp := benchTopology(n)
			src := tp.graph.slots[testPeerName(n/2)]
			b.ReportAllocs()
			for b.Loop() {
				tp.graph.children(src, tp.ourSlot(), false)
			}
		})
	}
}

// BenchmarkTopologyMerge measures the merge of one peer's new entry (ten
// connections) into a topology of n peers: decoding the message, merging
// it, the graph update, and finding the neighbours to relay it to.
func BenchmarkTopologyMerge(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint("peers=", n), func(b *testing.B) {
			tp := benchTopology(n)
			p := tp.get(testPeerName(n / 2))
			conns := slices.Clone(p.conns)
			for len(conns) < 10 {
				conns = append(conns, conn(len(conns)*7%n, true))
			}
			var neighbours []PeerName
			for _, c := range tp.ourself().conns {
				neighbours = append(neighbours, c.Name)
			}
			msgs := make([][]byte, 2)
			version := p.Version
			b.ReportAllocs()
			for b.Loop() {
				// Two versions in turn: one with the last connection,
				// one without, so that the graph changes every time.
				version++
				u := peerUpdate{peerSummary: p.summary(), Connections: conns[:len(conns)-int(version%2)]}
				u.Version = version
				msgs[version%2] = appendTopology(msgs[version%2][:0], []peerUpdate{u})
				updates, err := decodeTopology(msgs[version%2], tp.limits)
				if err != nil {
					b.Fatal(err)
				}
				res := tp.apply(updates)
				if len(res.changed) != 1 {
					b.Fatal("not merged")
				}
				tp.relayTargets(res.changed[0], neighbours[0], neighbours)
			}
		})
	}
}

// TestTopologyRelayReachesEveryPeer simulates the spreading of one peer's
// new entry over random meshes where every peer has the same view: the
// originator sends it to all its neighbours, and each peer passes it on by
// relayTargets. Every peer must get it, and a full mesh must relay nothing.
func TestTopologyRelayReachesEveryPeer(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 30; trial++ {
		n := 2 + rnd.IntN(40)
		var edges [][2]int
		if trial%10 == 9 {
			for a := 0; a < n; a++ {
				for b := a + 1; b < n; b++ {
					edges = append(edges, [2]int{a, b})
				}
			}
		} else {
			edges = line(n)
			for k := rnd.IntN(3 * n); k > 0; k-- {
				if a, b := rnd.IntN(n), rnd.IntN(n); a != b {
					edges = append(edges, [2]int{a, b})
				}
			}
		}
		views := make([]*topology, n)
		for i := range views {
			views[i] = buildTopology(n, i, edges)
		}
		neighbours := func(i int) []PeerName {
			var out []PeerName
			for _, c := range views[i].ourself().conns {
				out = append(out, c.Name)
			}
			return out
		}
		for origin := 0; origin < n; origin++ {
			got := make([]int, n)
			got[origin] = 1
			type hop struct{ from, to int }
			var queue []hop
			for _, nb := range neighbours(origin) {
				queue = append(queue, hop{origin, int(nb - testPeerName(0))})
			}
			relays := 0
			for len(queue) > 0 {
				h := queue[0]
				queue = queue[1:]
				got[h.to]++
				if got[h.to] > 1 {
					continue // not new: not passed on
				}
				for _, next := range views[h.to].relayTargets(testPeerName(origin), testPeerName(h.from), neighbours(h.to)) {
					relays++
					queue = append(queue, hop{h.to, int(next - testPeerName(0))})
				}
			}
			for i, c := range got {
				require.GreaterOrEqual(t, c, 1, "trial %d n=%d origin %d: peer %d missed the update", trial, n, origin, i)
			}
			if trial%10 == 9 {
				require.Zero(t, relays, "a full mesh relays nothing")
			}
		}
	}
}

func TestStaleEntriesReported(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)}) // our version is 1
	tp.apply([]peerUpdate{update(1, 11, 5, conn(0, true))})
	res := tp.apply([]peerUpdate{update(1, 11, 3), {peerSummary: peerSummary{Name: testPeerName(1)}}, update(0, 1000, 0)})
	require.Equal(t, []PeerName{testPeerName(1), testPeerName(1), testPeerName(0)}, res.stale)
	require.Empty(t, res.changed)
}

// Routes brought up to date outside the topology loop (for a broadcast)
// still report the change to the loop's next recalculation, once.
func TestRoutesUpdatedOnDemandStillReportChange(t *testing.T) {
	tp := newTestTopology(0)
	r := newRoutes(&Peers{topo: tp})
	require.False(t, r.stale(tp))
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{update(1, 11, 1, conn(0, true))})
	require.True(t, r.stale(tp))
	_, ok := r.Unicast(testPeerName(1))
	require.False(t, ok, "the table still predates the connection")

	r.update(tp)
	require.False(t, r.stale(tp))
	hop, ok := r.Unicast(testPeerName(1))
	require.True(t, ok)
	require.Equal(t, testPeerName(1), hop)

	require.True(t, r.recalculate(tp), "the change is reported although the table was already current")
	require.False(t, r.recalculate(tp), "and only once")
}

// TestRouteTableSharesWhatDidNotChange applies random changes to a
// topology: each new table must route exactly as one computed from
// scratch, and share the lists of the previous table that came out the
// same.
func TestRouteTableSharesWhatDidNotChange(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	const n = 12
	var edges [][2]int
	for i := 1; i < n; i++ {
		edges = append(edges, [2]int{rnd.IntN(i), i})
	}
	tp := buildTopology(n, 0, edges)
	prev := newRouteTable(tp, nil)
	shared, changed := 0, 0
	for step := 0; step < 300; step++ {
		// Change one peer's connections: add one, or drop one, or only
		// bump the version with the same list.
		i := 1 + rnd.IntN(n-1)
		p := tp.get(testPeerName(i))
		conns := slices.Clone(p.conns)
		switch rnd.IntN(3) {
		case 0:
			conns = append(conns, conn(rnd.IntN(n), rnd.IntN(2) == 0))
		case 1:
			if len(conns) > 0 {
				conns = slices.Delete(conns, 0, 1)
			}
		}
		tp.apply([]peerUpdate{update(i, p.UID, p.Version+1, conns...)})
		rt := newRouteTable(tp, prev)
		fresh := newRouteTable(tp, nil)
		require.Equal(t, fresh.names, rt.names)
		require.Equal(t, fresh.unicast, rt.unicast, "step %d", step)
		require.Equal(t, fresh.unicastAll, rt.unicastAll, "step %d", step)
		if slices.Equal(rt.unicast, prev.unicast) {
			require.Same(t, &prev.unicast[0], &rt.unicast[0], "an unchanged list is shared")
			shared++
		} else {
			require.NotSame(t, &prev.unicast[0], &rt.unicast[0])
			changed++
		}
		prev = rt
	}
	require.Positive(t, shared)
	require.Positive(t, changed)
}
