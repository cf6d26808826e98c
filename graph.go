package mesh

import (
	"slices"
	"sync"
)

// slotLists holds the int32 lists searches use, for reuse: route
// computations run often while a large mesh changes, and searches may run
// on several goroutines at once (under the topology's read lock).
var slotLists = sync.Pool{New: func() any { return new([]int32) }}

// getSlots returns a list of n slots from the pool; its contents are
// undefined.
func getSlots(n int) *[]int32 {
	p := slotLists.Get().(*[]int32)
	*p = slices.Grow((*p)[:0], n)[:n]
	return p
}

// putSlots returns a list to the pool.
func putSlots(p *[]int32) { slotLists.Put(p) }

// peerGraph is the topology as a graph for route computation, kept up to
// date as entries change, so that a route computation is a breadth-first
// search over arrays rather than a rebuild of the graph: with a thousand
// peers, looking up the ten thousand connection ends by name costs ten
// times the search itself.
//
// Every name the table holds or a connection names has a slot, a small
// integer, for as long as either is true. Each peer in the table has a
// row: its reported connections, in name order, as slots with flags. Rows
// are in name order and searches visit them in row order, so ties are
// broken by name, the same way on every peer, whatever the slot numbers.
//
// It is part of the topology: not safe for concurrent use, and free of
// I/O and clocks.
type peerGraph struct {
	slots map[PeerName]int32
	// By slot:
	names   []PeerName
	present []bool   // the peer has an entry in the table
	refs    []int32  // rows that name it, plus one while present
	rows    [][]edge // its reported connections, if present
	linked  []bool   // see topology.linked
	// unreachable marks the present peers gc found unreachable, since
	// when (in gc's clock); unreachableCount counts them.
	unreachable      []bool
	since            []int64
	unreachableCount int
	free             []int32
	// order lists the present slots in name order.
	order []int32
	// edges counts the connections of every row.
	edges int
}

// edge is a reported connection in a row: the slot of the peer at the
// other end, and flags.
type edge uint32

const (
	// edgeEstablished: the row's peer reports the connection established.
	edgeEstablished edge = 1 << 31
	// edgeMutual: both ends report the connection established; unicast
	// routes use only such connections.
	edgeMutual edge = 1 << 30
	edgeSlot   edge = 1<<30 - 1
)

func (e edge) slot() int32 { return int32(e & edgeSlot) }

func newPeerGraph() *peerGraph {
	return &peerGraph{slots: make(map[PeerName]int32)}
}

// slotOf returns the slot of name, giving it one if it has none. The
// caller adds the reference that keeps it.
func (g *peerGraph) slotOf(name PeerName) int32 {
	if s, ok := g.slots[name]; ok {
		return s
	}
	var s int32
	if n := len(g.free); n > 0 {
		s = g.free[n-1]
		g.free = g.free[:n-1]
		g.names[s] = name
	} else {
		s = int32(len(g.names))
		g.names = append(g.names, name)
		g.present = append(g.present, false)
		g.refs = append(g.refs, 0)
		g.rows = append(g.rows, nil)
		g.linked = append(g.linked, false)
		g.unreachable = append(g.unreachable, false)
		g.since = append(g.since, 0)
	}
	g.slots[name] = s
	return s
}

// release drops a reference to slot s, and frees it with the last one.
func (g *peerGraph) release(s int32) {
	g.refs[s]--
	if g.refs[s] > 0 {
		return
	}
	delete(g.slots, g.names[s])
	g.names[s] = UnknownPeerName
	g.rows[s] = nil
	g.linked[s] = false
	g.free = append(g.free, s)
}

// setUnreachable marks slot s unreachable since now, unless it already
// is, and returns since when.
func (g *peerGraph) setUnreachable(s int32, now int64) int64 {
	if !g.unreachable[s] {
		g.unreachable[s], g.since[s] = true, now
		g.unreachableCount++
	}
	return g.since[s]
}

// setReachable clears the mark of setUnreachable.
func (g *peerGraph) setReachable(s int32) {
	if g.unreachable[s] {
		g.unreachable[s] = false
		g.unreachableCount--
	}
}

// orderIndex returns where name is, or would be, in g.order.
func (g *peerGraph) orderIndex(name PeerName) (int, bool) {
	return slices.BinarySearchFunc(g.order, name, func(s int32, n PeerName) int {
		switch a := g.names[s]; {
		case a < n:
			return -1
		case a > n:
			return 1
		}
		return 0
	})
}

// put records the entry of peer p, new or replacing the previous one.
func (g *peerGraph) put(p *Peer) {
	s := g.slotOf(p.Name)
	if !g.present[s] {
		g.present[s] = true
		g.refs[s]++
		i, _ := g.orderIndex(p.Name)
		g.order = slices.Insert(g.order, i, s)
	}
	g.setRow(s, p.conns)
}

// remove drops the entry of the named peer.
func (g *peerGraph) remove(name PeerName) {
	s, ok := g.slots[name]
	if !ok || !g.present[s] {
		return
	}
	g.setRow(s, nil)
	g.present[s] = false
	g.linked[s] = false
	g.setReachable(s)
	if i, ok := g.orderIndex(name); ok {
		g.order = slices.Delete(g.order, i, i+1)
	}
	g.release(s)
}

// find returns the position of the edge to slot v in row u.
func (g *peerGraph) find(u, v int32) (int, bool) {
	name := g.names[v]
	return slices.BinarySearchFunc(g.rows[u], name, func(e edge, n PeerName) int {
		switch a := g.names[e.slot()]; {
		case a < n:
			return -1
		case a > n:
			return 1
		}
		return 0
	})
}

// setRow replaces the connections of the peer in slot u; conns are sorted
// by name without duplicates. A new version of an entry usually differs
// from the one before by a connection or two: the old row and the new
// connections are walked together in name order, and only the edges that
// appear, go, or change their established flag touch the rows at their
// other ends; an edge that stays keeps its slot, its reference and its
// mutual flag.
func (g *peerGraph) setRow(u int32, conns []connectionSummary) {
	old := g.rows[u]
	var row []edge
	if len(conns) > 0 {
		row = make([]edge, len(conns))
	}
	i := 0
	for j := range conns {
		c := &conns[j]
		for i < len(old) && g.names[old[i].slot()] < c.Name {
			g.dropEdge(u, old[i])
			i++
		}
		var v int32
		if i < len(old) && g.names[old[i].slot()] == c.Name {
			e := old[i]
			i++
			if (e&edgeEstablished != 0) == c.Established {
				row[j] = e
				continue
			}
			// The reference carries over; the mutual flag goes, and comes
			// back below if the connection is established at both ends.
			v = e.slot()
			g.clearMutual(u, e)
		} else {
			v = g.slotOf(c.Name)
			g.refs[v]++
		}
		row[j] = edge(v)
		if !c.Established {
			continue
		}
		row[j] |= edgeEstablished
		if v == u {
			continue
		}
		if k, ok := g.find(v, u); ok && g.rows[v][k]&edgeEstablished != 0 {
			g.rows[v][k] |= edgeMutual
			row[j] |= edgeMutual
		}
	}
	for ; i < len(old); i++ {
		g.dropEdge(u, old[i])
	}
	g.rows[u] = row
	g.edges += len(row) - len(old)
}

// dropEdge removes edge e of row u: the connection back loses its mutual
// flag, and e's slot a reference.
func (g *peerGraph) dropEdge(u int32, e edge) {
	g.clearMutual(u, e)
	g.release(e.slot())
}

// clearMutual clears the mutual flag of the connection back to u from the
// other end of e, if e has it.
func (g *peerGraph) clearMutual(u int32, e edge) {
	if e&edgeMutual == 0 {
		return
	}
	if v := e.slot(); v != u {
		if k, ok := g.find(v, u); ok {
			g.rows[v][k] &^= edgeMutual
		}
	}
}

// search runs a breadth-first search from slot root over the connections
// of present peers (only mutual ones with mutualOnly) and records, for
// every slot it reaches, the slot it was reached from in parent (root for
// root; -1 for slots not reached). It returns the slots reached, in the
// order reached.
func (g *peerGraph) search(root int32, mutualOnly bool, parent []int32, queue []int32) []int32 {
	for i := range parent {
		parent[i] = -1
	}
	parent[root] = root
	queue = append(queue[:0], root)
	for head := 0; head < len(queue); head++ {
		cur := queue[head]
		for _, e := range g.rows[cur] {
			if mutualOnly && e&edgeMutual == 0 {
				continue
			}
			v := e.slot()
			if parent[v] == -1 && g.present[v] {
				parent[v] = cur
				queue = append(queue, v)
			}
		}
	}
	return queue
}

// nextHops returns, for every slot, the neighbour of root's on which a
// shortest path from root to it starts (root for root, -1 when
// unreachable). The list comes from the pool: the caller may give it back
// with putSlots once done with it.
func (g *peerGraph) nextHops(root int32, mutualOnly bool) *[]int32 {
	hops := getSlots(len(g.names))
	parent := *hops
	q := getSlots(0)
	defer putSlots(q)
	queue := g.search(root, mutualOnly, parent, *q)
	*q = queue
	// In search order, a peer's first hop is its parent's, except for
	// root's neighbours, whose first hop is themselves.
	for _, s := range queue[1:] {
		if p := parent[s]; p == root {
			parent[s] = s
		} else {
			parent[s] = parent[p]
		}
	}
	return hops
}

// children returns the neighbours of us that are our children in the
// breadth-first tree rooted at src, over every reported connection (only
// mutual ones with mutualOnly): where we pass on a broadcast from src so
// that every peer gets it once. Nil when src does not reach us.
func (g *peerGraph) children(src, us int32, mutualOnly bool) []PeerName {
	var out []PeerName
	if src == us {
		for _, e := range g.rows[us] {
			if (!mutualOnly || e&edgeMutual != 0) && g.present[e.slot()] && e.slot() != us {
				out = append(out, g.names[e.slot()])
			}
		}
		return out
	}
	p, q := getSlots(len(g.names)), getSlots(0)
	defer putSlots(p)
	defer putSlots(q)
	parent := *p
	*q = g.search(src, mutualOnly, parent, *q)
	if parent[us] == -1 {
		return nil
	}
	for _, e := range g.rows[us] {
		if v := e.slot(); parent[v] == us && v != us && (!mutualOnly || e&edgeMutual != 0) {
			out = append(out, g.names[v])
		}
	}
	return out
}
