package mesh

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkGraph compares the graph the topology keeps up to date with one
// derived from scratch from its entries, and its searches with a plain
// breadth-first search over the entries.
func checkGraph(t *testing.T, tp *topology) {
	t.Helper()
	g := tp.graph
	refs := make(map[PeerName]int32)
	var present []PeerName
	tp.ascend(func(p *Peer) bool {
		present = append(present, p.Name)
		refs[p.Name]++
		for _, c := range p.conns {
			refs[c.Name]++
		}
		return true
	})
	if len(g.slots) != len(refs) {
		t.Fatalf("%d slots for %d names", len(g.slots), len(refs))
	}
	for name, n := range refs {
		s, ok := g.slots[name]
		if !ok || g.names[s] != name || g.refs[s] != n {
			t.Fatalf("%v: slot %d (%v), %d references, want %d", name, s, ok, g.refs[s], n)
		}
	}
	var order []PeerName
	edges := 0
	for _, s := range g.order {
		order = append(order, g.names[s])
	}
	if !slices.Equal(order, present) {
		t.Fatalf("order %v, want %v", order, present)
	}
	for s := range g.names {
		p := tp.get(g.names[s])
		if _, used := g.slots[g.names[s]]; !used || g.slots[g.names[s]] != int32(s) {
			if len(g.rows[s]) > 0 || g.present[s] {
				t.Fatalf("free slot %d has a row or is present", s)
			}
			continue
		}
		if g.present[s] != (p != nil) {
			t.Fatalf("%v: present %v", g.names[s], g.present[s])
		}
		if p == nil {
			if len(g.rows[s]) > 0 {
				t.Fatalf("%v: absent with a row", g.names[s])
			}
			continue
		}
		if len(g.rows[s]) != len(p.conns) {
			t.Fatalf("%v: row of %d, %d connections", p.Name, len(g.rows[s]), len(p.conns))
		}
		edges += len(p.conns)
		for i, c := range p.conns {
			e := g.rows[s][i]
			back := tp.get(c.Name)
			var mutual bool
			if back != nil && c.Established && c.Name != p.Name {
				bc, ok := back.connectionTo(p.Name)
				mutual = ok && bc.Established
			}
			if g.names[e.slot()] != c.Name || (e&edgeEstablished != 0) != c.Established || (e&edgeMutual != 0) != mutual {
				t.Fatalf("%v: edge %d to %v (established %v, mutual %v), want %v (%v, %v)", p.Name, i,
					g.names[e.slot()], e&edgeEstablished != 0, e&edgeMutual != 0, c.Name, c.Established, mutual)
			}
		}
	}
	if edges != g.edges {
		t.Fatalf("%d edges counted, %d in rows", g.edges, edges)
	}
	// Plain searches over the entries.
	for _, mutualOnly := range []bool{false, true} {
		want := map[PeerName]PeerName{tp.ourName: tp.ourName}
		queue := []PeerName{tp.ourName}
		for len(queue) > 0 {
			p := tp.get(queue[0])
			queue = queue[1:]
			for _, c := range p.conns {
				next := tp.get(c.Name)
				if next == nil {
					continue
				}
				if mutualOnly {
					bc, ok := next.connectionTo(p.Name)
					if !c.Established || !ok || !bc.Established {
						continue
					}
				}
				if _, seen := want[c.Name]; !seen {
					if p.Name == tp.ourName {
						want[c.Name] = c.Name
					} else {
						want[c.Name] = want[p.Name]
					}
					queue = append(queue, c.Name)
				}
			}
		}
		hop := *g.nextHops(tp.ourSlot(), mutualOnly)
		for _, s := range g.order {
			got, ok := PeerName(0), hop[s] >= 0
			if ok {
				got = g.names[hop[s]]
			}
			if w, wok := want[g.names[s]]; ok != wok || got != w {
				t.Fatalf("mutual only %v: next hop to %v is %v (%v), want %v (%v)", mutualOnly, g.names[s], got, ok, w, wok)
			}
		}
	}
}

// The graph stays equal to the entries through random updates, removals
// and restarts, whatever the order.
func TestPeerGraphFollowsTopology(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 42))
			n := 2 + rnd.IntN(30)
			tp := newTopology(&Peer{Name: testPeerName(0), UID: 1}, topologyLimits{MaxPeers: 100, MaxConnections: 100})
			versions := make([]uint64, n)
			randomConns := func(self int) []connectionSummary {
				var out []connectionSummary
				for k := rnd.IntN(6); k > 0; k-- {
					// Connections to peers that never have an entry too.
					to := rnd.IntN(n + 3)
					if to != self || rnd.IntN(10) == 0 {
						out = append(out, conn(to, rnd.IntN(4) != 0))
					}
				}
				return out
			}
			for step := 0; step < 300; step++ {
				switch op := rnd.IntN(12); {
				case op >= 10:
					// A small change of an entry: one connection added,
					// dropped, or its established flag flipped.
					i := 1 + rnd.IntN(n-1)
					p := tp.get(testPeerName(i))
					if p == nil || p.isPlaceholder() {
						continue
					}
					conns := slices.Clone(p.conns)
					switch k := rnd.IntN(3); {
					case k == 0 || len(conns) == 0:
						conns = append(conns, conn(rnd.IntN(n+3), rnd.IntN(2) == 0))
					case k == 1:
						k := rnd.IntN(len(conns))
						conns = slices.Delete(conns, k, k+1)
					default:
						c := &conns[rnd.IntN(len(conns))]
						c.Established = !c.Established
					}
					tp.apply([]peerUpdate{update(i, p.UID, p.Version+1, conns...)})
				case op < 6:
					i := 1 + rnd.IntN(n-1)
					versions[i]++
					tp.apply([]peerUpdate{update(i, PeerUID(i+1), versions[i], randomConns(i)...)})
				case op < 8:
					tp.setOurConnections(randomConns(0))
				case op < 9:
					tp.gc(int64(step)*int64(1e9), 0)
				default:
					// A restart: another UID, versions from the start.
					i := 1 + rnd.IntN(n-1)
					versions[i] = 1
					tp.apply([]peerUpdate{update(i, PeerUID(1000+step), 1<<40+uint64(step), randomConns(i)...)})
				}
				checkGraph(t, tp)
			}
		})
	}
}

// Broadcast trees built from the graph are those of a breadth-first search
// from the originator, visiting connections in name order.
func TestPeerGraphChildren(t *testing.T) {
	// 0 - 1 - 2, 0 - 3 - 2, 2 - 4: from 4, peer 2 reaches 1 and 3 at the
	// same depth; 1 (lower name) is 0's parent.
	tp := buildTopology(5, 0, [][2]int{{0, 1}, {1, 2}, {0, 3}, {3, 2}, {2, 4}})
	children := func(us, src int) []PeerName {
		t := buildTopology(5, us, [][2]int{{0, 1}, {1, 2}, {0, 3}, {3, 2}, {2, 4}})
		return t.graph.children(t.graph.slots[testPeerName(src)], t.ourSlot(), false)
	}
	if got := children(2, 4); !slices.Equal(got, []PeerName{testPeerName(1), testPeerName(3)}) {
		t.Fatalf("2's children from 4: %v", got)
	}
	if got := children(1, 4); !slices.Equal(got, []PeerName{testPeerName(0)}) {
		t.Fatalf("1's children from 4: %v", got)
	}
	if got := children(3, 4); len(got) != 0 {
		t.Fatalf("3's children from 4: %v", got)
	}
	if got := children(0, 0); !slices.Equal(got, []PeerName{testPeerName(1), testPeerName(3)}) {
		t.Fatalf("the originator's children: %v", got)
	}
	checkGraph(t, tp)
}
