package mesh

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// graph is a compact, immutable view of the topology for route
// computation: peers are numbered in name order and each adjacency list is
// sorted, so every traversal, and so every tie-break, is deterministic.
type graph struct {
	// gen is the generation of the topology the graph was built from.
	gen   uint64
	names []PeerName
	index map[PeerName]int32
	us    int32
	// sym holds the connections that count for unicast: both ends report
	// them established.
	sym [][]int32
	// all holds every reported connection.
	all [][]int32
}

// buildGraph takes a snapshot of t. It runs in O(peers + connections).
func buildGraph(t *topology) *graph {
	n := t.len()
	g := &graph{
		gen:   t.gen,
		names: make([]PeerName, 0, n),
		index: make(map[PeerName]int32, n),
		sym:   make([][]int32, n),
		all:   make([][]int32, n),
	}
	peers := make([]*Peer, 0, n)
	t.ascend(func(p *Peer) bool {
		g.index[p.Name] = int32(len(g.names))
		g.names = append(g.names, p.Name)
		peers = append(peers, p)
		return true
	})
	g.us = g.index[t.ourName]
	total := 0
	for _, p := range peers {
		total += len(p.conns)
	}
	// One backing array for all adjacency lists keeps this to a few
	// allocations however large the mesh is. Names are numbered in order
	// and each connection list is sorted by name, so every adjacency list
	// is sorted too, and the check for the connection back is a binary
	// search over integers.
	backing := make([]int32, 0, 2*total)
	established := make([]bool, 0, total)
	estStart := make([]int, len(peers))
	for i, p := range peers {
		start := len(backing)
		estStart[i] = len(established)
		for _, c := range p.conns {
			if j, ok := g.index[c.Name]; ok {
				backing = append(backing, j)
				established = append(established, c.Established)
			}
		}
		g.all[i] = backing[start:len(backing):len(backing)]
	}
	for i := range peers {
		start := len(backing)
		for k, j := range g.all[i] {
			if !established[estStart[i]+k] {
				continue
			}
			if back, ok := slices.BinarySearch(g.all[j], int32(i)); ok && established[estStart[j]+back] {
				backing = append(backing, j)
			}
		}
		g.sym[i] = backing[start:len(backing):len(backing)]
	}
	return g
}

// nextHops returns, for every peer, the neighbour of ours that is the
// first hop of a shortest path to it (-1 when unreachable; ourselves for
// ourselves). Breadth-first, visiting neighbours in name order.
func (g *graph) nextHops(adj [][]int32) []int32 {
	hop := make([]int32, len(g.names))
	for i := range hop {
		hop[i] = -1
	}
	hop[g.us] = g.us
	queue := make([]int32, 0, len(g.names))
	for _, nb := range adj[g.us] {
		if hop[nb] == -1 {
			hop[nb] = nb
			queue = append(queue, nb)
		}
	}
	for head := 0; head < len(queue); head++ {
		cur := queue[head]
		for _, nb := range adj[cur] {
			if hop[nb] == -1 {
				hop[nb] = hop[cur]
				queue = append(queue, nb)
			}
		}
	}
	return hop
}

// broadcastHops returns the neighbours of ours that are our children in the
// breadth-first tree rooted at src: where we pass on a broadcast from src so
// that every peer gets it once.
func (g *graph) broadcastHops(adj [][]int32, src int32) []PeerName {
	if src == g.us {
		out := make([]PeerName, len(adj[g.us]))
		for i, nb := range adj[g.us] {
			out[i] = g.names[nb]
		}
		return out
	}
	parent := make([]int32, len(g.names))
	for i := range parent {
		parent[i] = -1
	}
	parent[src] = src
	queue := make([]int32, 1, len(g.names))
	queue[0] = src
	reachedUs := false
	for head := 0; head < len(queue); head++ {
		cur := queue[head]
		if cur == g.us {
			reachedUs = true
		}
		for _, nb := range adj[cur] {
			if parent[nb] == -1 {
				parent[nb] = cur
				queue = append(queue, nb)
			}
		}
	}
	if !reachedUs {
		return nil
	}
	var out []PeerName
	for _, nb := range adj[g.us] {
		if parent[nb] == g.us {
			out = append(out, g.names[nb])
		}
	}
	return out
}

// routeTable is one immutable computation of routes. Broadcast trees are
// computed on first use per originator and cached.
type routeTable struct {
	g          *graph
	unicast    []int32
	unicastAll []int32

	mu           sync.Mutex
	broadcast    map[int32][]PeerName
	broadcastAll map[int32][]PeerName
}

func newRouteTable(g *graph) *routeTable {
	return &routeTable{
		g:            g,
		unicast:      g.nextHops(g.sym),
		unicastAll:   g.nextHops(g.all),
		broadcast:    make(map[int32][]PeerName),
		broadcastAll: make(map[int32][]PeerName),
	}
}

func (rt *routeTable) lookup(hops []int32, name PeerName) (PeerName, bool) {
	i, ok := rt.g.index[name]
	if !ok || hops[i] < 0 {
		return UnknownPeerName, false
	}
	if i == rt.g.us {
		return UnknownPeerName, true
	}
	return rt.g.names[hops[i]], true
}

func (rt *routeTable) tree(cache map[int32][]PeerName, adj [][]int32, name PeerName) []PeerName {
	i, ok := rt.g.index[name]
	if !ok {
		return nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if hops, ok := cache[i]; ok {
		return hops
	}
	hops := rt.g.broadcastHops(adj, i)
	cache[i] = hops
	return hops
}

// sameUnicast reports whether two tables route every peer the same way.
func (rt *routeTable) sameUnicast(other *routeTable) bool {
	if other == nil || len(rt.g.names) != len(other.g.names) {
		return false
	}
	for i, n := range rt.g.names {
		if other.g.names[i] != n {
			return false
		}
		a, b := rt.unicast[i], other.unicast[i]
		if (a < 0) != (b < 0) || (a >= 0 && rt.g.names[a] != other.g.names[b]) {
			return false
		}
		a, b = rt.unicastAll[i], other.unicastAll[i]
		if (a < 0) != (b < 0) || (a >= 0 && rt.g.names[a] != other.g.names[b]) {
			return false
		}
	}
	return true
}

// Routes answers where to send messages: the next hop towards a peer, and
// the neighbours to pass a broadcast to. It is recomputed from the topology
// at most once per burst of changes and may be read from any goroutine.
type Routes struct {
	table atomic.Pointer[routeTable]

	// calcMu serializes recomputations; reported is the table the last
	// change report (recalculate) compared against.
	calcMu   sync.Mutex
	reported *routeTable

	mu       sync.Mutex
	onChange []func()
}

func newRoutes(t *topology) *Routes {
	r := &Routes{}
	rt := newRouteTable(buildGraph(t))
	r.table.Store(rt)
	r.reported = rt
	return r
}

// update makes the routes current with t, recomputing them only if t
// changed since they were computed, and returns them. The caller must keep
// t from changing meanwhile.
func (r *Routes) update(t *topology) *routeTable {
	r.calcMu.Lock()
	defer r.calcMu.Unlock()
	rt := r.table.Load()
	if rt.g.gen != t.gen {
		rt = newRouteTable(buildGraph(t))
		r.table.Store(rt)
	}
	return rt
}

// stale reports whether the routes were computed from an older t. The
// caller must keep t from changing meanwhile.
func (r *Routes) stale(t *topology) bool {
	return r.table.Load().g.gen != t.gen
}

// recalculate makes the routes current with t and reports whether unicast
// routes changed since the last call. The caller must keep t from changing
// meanwhile.
func (r *Routes) recalculate(t *topology) bool {
	rt := r.update(t)
	r.calcMu.Lock()
	defer r.calcMu.Unlock()
	changed := !rt.sameUnicast(r.reported)
	r.reported = rt
	return changed
}

// OnChange registers a callback run after the routes change. Callbacks run
// on the router's topology goroutine, one at a time and in registration
// order; they must not block.
func (r *Routes) OnChange(callback func()) {
	r.mu.Lock()
	r.onChange = append(r.onChange, callback)
	r.mu.Unlock()
}

func (r *Routes) fireOnChange() {
	r.mu.Lock()
	callbacks := r.onChange
	r.mu.Unlock()
	for _, f := range callbacks {
		f()
	}
}

// Unicast returns the neighbour through which to reach name over connections
// that both ends report established. For our own name it returns
// (UnknownPeerName, true).
func (r *Routes) Unicast(name PeerName) (PeerName, bool) {
	rt := r.table.Load()
	return rt.lookup(rt.unicast, name)
}

// UnicastAll is like Unicast but over every reported connection.
func (r *Routes) UnicastAll(name PeerName) (PeerName, bool) {
	rt := r.table.Load()
	return rt.lookup(rt.unicastAll, name)
}

// Broadcast returns the neighbours to which a broadcast originated by name
// is passed on, over established connections.
func (r *Routes) Broadcast(name PeerName) []PeerName {
	rt := r.table.Load()
	return rt.tree(rt.broadcast, rt.g.sym, name)
}

// BroadcastAll is like Broadcast but over every reported connection.
func (r *Routes) BroadcastAll(name PeerName) []PeerName {
	rt := r.table.Load()
	return rt.tree(rt.broadcastAll, rt.g.all, name)
}

// PeerNames returns the peers that can be reached, in name order.
func (r *Routes) PeerNames() []PeerName {
	rt := r.table.Load()
	var out []PeerName
	for i, h := range rt.unicastAll {
		if h >= 0 {
			out = append(out, rt.g.names[i])
		}
	}
	return out
}

// reachableCount returns the number of peers reachable, ourselves included.
func (r *Routes) reachableCount() int {
	rt := r.table.Load()
	n := 0
	for _, h := range rt.unicastAll {
		if h >= 0 {
			n++
		}
	}
	return n
}

// unicastTable exports the unicast routes (destination to next hop).
func (r *Routes) unicastTable(all bool) map[PeerName]PeerName {
	rt := r.table.Load()
	hops := rt.unicast
	if all {
		hops = rt.unicastAll
	}
	out := make(map[PeerName]PeerName)
	for i, h := range hops {
		if h >= 0 && int32(i) != rt.g.us {
			out[rt.g.names[i]] = rt.g.names[h]
		}
	}
	return out
}

// subsetSize is how many neighbours gossip goes to: 2·log2 of the number
// of reachable peers, rounded up.
func subsetSize(reachable int) int {
	if reachable <= 1 {
		return 0
	}
	return 2 * bits.Len(uint(reachable-1))
}

// chooseSubset picks up to n of the candidates at random, leaving out
// except. The result is a new slice; candidates is not modified.
func chooseSubset(candidates []PeerName, n int, except PeerName, rnd *rand.Rand) []PeerName {
	pool := make([]PeerName, 0, len(candidates))
	for _, c := range candidates {
		if c != except {
			pool = append(pool, c)
		}
	}
	if n >= len(pool) {
		return pool
	}
	for i := 0; i < n; i++ {
		j := i + rnd.IntN(len(pool)-i)
		pool[i], pool[j] = pool[j], pool[i]
	}
	return pool[:n]
}
