package mesh

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// routeTable is one immutable computation of unicast routes, from the
// topology of generation gen. Broadcast trees are computed on first use
// per originator, from the same topology, and cached.
type routeTable struct {
	gen uint64
	// names lists the peers in name order; us is our index in it.
	names []PeerName
	us    int32
	// unicast and unicastAll give, by index, the index of the next hop
	// (us for ourselves, -1 when unreachable), over mutual and over all
	// reported connections.
	unicast, unicastAll []int32

	mu           sync.Mutex
	broadcast    map[PeerName][]PeerName
	broadcastAll map[PeerName][]PeerName
}

// newRouteTable computes the routes of t. The lists that come out the same
// as in prev (which may be nil) are shared with it rather than allocated:
// tables are never modified once built, and while a mesh forms most
// recomputations change some entries but neither the peers nor the routes.
func newRouteTable(t *topology, prev *routeTable) *routeTable {
	g := t.graph
	us := t.ourSlot()
	rt := &routeTable{gen: t.gen}
	samePeers := prev != nil && sameOrder(prev.names, g)
	if samePeers {
		rt.names = prev.names
	} else {
		rt.names = make([]PeerName, len(g.order))
		for i, s := range g.order {
			rt.names[i] = g.names[s]
		}
	}
	// index maps slots to positions in names.
	ip := getSlots(len(g.names))
	defer putSlots(ip)
	index := *ip
	for i, s := range g.order {
		index[s] = int32(i)
		if s == us {
			rt.us = int32(i)
		}
	}
	sp := getSlots(len(g.order))
	defer putSlots(sp)
	scratch := *sp
	// nextHops returns, by index, the next hop of every peer; prev's list
	// when it is the same.
	nextHops := func(mutualOnly bool, prev []int32) []int32 {
		hops := g.nextHops(us, mutualOnly)
		defer putSlots(hops)
		for i, s := range g.order {
			if h := (*hops)[s]; h >= 0 {
				scratch[i] = index[h]
			} else {
				scratch[i] = -1
			}
		}
		if samePeers && slices.Equal(scratch, prev) {
			return prev
		}
		return slices.Clone(scratch)
	}
	var prevUnicast, prevAll []int32
	if samePeers {
		prevUnicast, prevAll = prev.unicast, prev.unicastAll
	}
	rt.unicast = nextHops(true, prevUnicast)
	rt.unicastAll = nextHops(false, prevAll)
	return rt
}

// sameOrder reports whether names lists g's peers, in g's order.
func sameOrder(names []PeerName, g *peerGraph) bool {
	if len(names) != len(g.order) {
		return false
	}
	for i, s := range g.order {
		if names[i] != g.names[s] {
			return false
		}
	}
	return true
}

// index returns the position of name in rt.names.
func (rt *routeTable) index(name PeerName) (int, bool) {
	return slices.BinarySearch(rt.names, name)
}

func (rt *routeTable) lookup(hops []int32, name PeerName) (PeerName, bool) {
	i, ok := rt.index(name)
	if !ok || hops[i] < 0 {
		return UnknownPeerName, false
	}
	if int32(i) == rt.us {
		return UnknownPeerName, true
	}
	return rt.names[hops[i]], true
}

// cachedTree returns the broadcast tree of name, if computed.
func (rt *routeTable) cachedTree(all bool, name PeerName) ([]PeerName, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	cache := rt.broadcast
	if all {
		cache = rt.broadcastAll
	}
	hops, ok := cache[name]
	return hops, ok
}

// tree returns the broadcast tree of name, computing it from t, which must
// be the topology rt was computed from and kept from changing meanwhile.
func (rt *routeTable) tree(t *topology, all bool, name PeerName) []PeerName {
	if hops, ok := rt.cachedTree(all, name); ok {
		return hops
	}
	var hops []PeerName
	if s, ok := t.graph.slots[name]; ok && t.graph.present[s] {
		hops = t.graph.children(s, t.ourSlot(), !all)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if all {
		if rt.broadcastAll == nil {
			rt.broadcastAll = make(map[PeerName][]PeerName)
		}
		rt.broadcastAll[name] = hops
	} else {
		if rt.broadcast == nil {
			rt.broadcast = make(map[PeerName][]PeerName)
		}
		rt.broadcast[name] = hops
	}
	return hops
}

// sameUnicast reports whether two tables route every peer the same way.
func (rt *routeTable) sameUnicast(other *routeTable) bool {
	if other == nil || !slices.Equal(rt.names, other.names) {
		return false
	}
	return slices.Equal(rt.unicast, other.unicast) && slices.Equal(rt.unicastAll, other.unicastAll)
}

// Routes answers where to send messages: the next hop towards a peer, and
// the neighbours to pass a broadcast to. It is recomputed from the topology
// at most once per burst of changes and may be read from any goroutine.
type Routes struct {
	// peers holds the topology the routes are computed from.
	peers *Peers
	table atomic.Pointer[routeTable]

	// calcMu serializes recomputations; reported is the table the last
	// change report (recalculate) compared against.
	calcMu   sync.Mutex
	reported *routeTable

	mu       sync.Mutex
	onChange []func()
}

func newRoutes(peers *Peers) *Routes {
	r := &Routes{peers: peers}
	rt := newRouteTable(peers.topo, nil)
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
	if rt.gen != t.gen {
		rt = newRouteTable(t, rt)
		r.table.Store(rt)
	}
	return rt
}

// stale reports whether the routes were computed from an older t. The
// caller must keep t from changing meanwhile.
func (r *Routes) stale(t *topology) bool {
	return r.table.Load().gen != t.gen
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
// is passed on, over established connections: our children in the
// breadth-first tree rooted at name, in the current topology.
func (r *Routes) Broadcast(name PeerName) []PeerName {
	return r.broadcastTree(false, name)
}

// BroadcastAll is like Broadcast but over every reported connection.
func (r *Routes) BroadcastAll(name PeerName) []PeerName {
	return r.broadcastTree(true, name)
}

// broadcastTree returns our children in name's broadcast tree of the
// current topology, bringing the routes up to date first if they lag
// behind it: peers whose views agree then agree on the tree, and each
// gets a broadcast once.
func (r *Routes) broadcastTree(all bool, name PeerName) []PeerName {
	if rt := r.table.Load(); rt.gen == r.peers.topo.published.Load() {
		if hops, ok := rt.cachedTree(all, name); ok {
			return hops
		}
	}
	r.peers.mu.RLock()
	defer r.peers.mu.RUnlock()
	return r.update(r.peers.topo).tree(r.peers.topo, all, name)
}

// broadcastTrees returns every peer's broadcast tree over every reported
// connection, keyed by originator, if that costs at most budget steps
// (peers times peers and connections); else only those computed already,
// and partial is set.
func (r *Routes) broadcastTrees(budget int) (trees map[PeerName][]PeerName, partial bool) {
	r.peers.mu.RLock()
	defer r.peers.mu.RUnlock()
	t := r.peers.topo
	rt := r.update(t)
	n := len(rt.names)
	trees = make(map[PeerName][]PeerName)
	if n*(n+t.graph.edges) > budget {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		for name, hops := range rt.broadcastAll {
			trees[name] = hops
		}
		return trees, true
	}
	for i, name := range rt.names {
		if int32(i) != rt.us {
			trees[name] = rt.tree(t, true, name)
		}
	}
	return trees, false
}

// PeerNames returns the peers that can be reached, in name order.
func (r *Routes) PeerNames() []PeerName {
	rt := r.table.Load()
	var out []PeerName
	for i, h := range rt.unicastAll {
		if h >= 0 {
			out = append(out, rt.names[i])
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
		if h >= 0 && int32(i) != rt.us {
			out[rt.names[i]] = rt.names[h]
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
