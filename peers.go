package mesh

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"
)

// Peers is the table of every peer this router knows, with the connections
// each reports. It is safe for concurrent use.
//
// Its read methods seldom wait for the router: they read a copy-on-write
// snapshot of the table, which they bring up to date when the router is
// not changing the table at that moment, and otherwise take as it was at
// the last change they saw, if that was less than maxViewAge ago; a
// snapshot older than that is brought up to date, waiting for the change
// in progress. The router's own code reads and changes the table under mu.
type Peers struct {
	mu   sync.RWMutex
	topo *topology

	// snap is the snapshot readers use; snapMu serializes taking one.
	snapMu sync.Mutex
	snap   atomic.Pointer[peersView]

	gcMu sync.Mutex
	onGC []func(*Peer)
}

// peersView is an immutable snapshot of the peer table.
type peersView struct {
	gen   uint64
	peers *btree.BTreeG[*Peer]
	// taken is when the snapshot was taken.
	taken time.Time
}

// maxViewAge bounds how out of date a snapshot Peers' read methods use
// while the router changes the table: a router busy merging updates may
// change it without a pause for seconds, and a reader must not see the
// table as it was that long ago.
const maxViewAge = 50 * time.Millisecond

// view returns a snapshot of the table: the current one when the router
// is not changing the table, else the last one taken if it is recent.
func (peers *Peers) view() *peersView {
	v := peers.snap.Load()
	if v != nil && v.gen == peers.topo.published.Load() {
		return v
	}
	if !peers.mu.TryRLock() {
		if v != nil && time.Since(v.taken) < maxViewAge {
			return v
		}
		peers.mu.RLock()
	}
	defer peers.mu.RUnlock()
	peers.snapMu.Lock()
	defer peers.snapMu.Unlock()
	if v = peers.snap.Load(); v == nil || v.gen != peers.topo.gen {
		// Clone is lazy: the table and the snapshot share nodes until
		// the router changes them.
		v = &peersView{gen: peers.topo.gen, peers: peers.topo.peers.Clone(), taken: time.Now()}
		peers.snap.Store(v)
	}
	return v
}

// dropStaleView forgets the snapshot when the table has changed since it
// was taken: a snapshot keeps alive the entries it was taken with, which
// may all have been replaced, and nothing may take a new one for long (the
// connection maker looks only while it dials, users may never). The next
// view takes a new one.
func (peers *Peers) dropStaleView() {
	peers.snapMu.Lock()
	if v := peers.snap.Load(); v != nil && v.gen != peers.topo.published.Load() {
		peers.snap.Store(nil)
	}
	peers.snapMu.Unlock()
}

func newPeers(ourself *Peer, limits topologyLimits) *Peers {
	return &Peers{topo: newTopology(ourself, limits)}
}

// Fetch returns the peer with the given name, or nil when it is unknown.
func (peers *Peers) Fetch(name PeerName) *Peer {
	p, _ := peers.view().peers.Get(&Peer{Name: name})
	return p
}

// count returns the number of peers without taking a snapshot (which
// would make the router's next changes copy the nodes it shares).
func (peers *Peers) count() int { return int(peers.topo.size.Load()) }

// current returns the peer's entry as it is now, waiting for the router if
// it is changing the table.
func (peers *Peers) current(name PeerName) *Peer {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	return peers.topo.get(name)
}

// Len returns the number of known peers, this router included, as it is
// now: it reads a counter, and never waits for the router.
func (peers *Peers) Len() int { return peers.count() }

// Names returns the names of all known peers in ascending order.
func (peers *Peers) Names() []PeerName {
	v := peers.view()
	out := make([]PeerName, 0, v.peers.Len())
	v.peers.Ascend(func(p *Peer) bool { out = append(out, p.Name); return true })
	return out
}

// ForEach calls f for every known peer, in name order.
func (peers *Peers) ForEach(f func(*Peer)) {
	peers.view().peers.Ascend(func(p *Peer) bool { f(p); return true })
}

// Descriptions returns a summary of every known peer, in name order.
func (peers *Peers) Descriptions() []PeerDescription {
	v := peers.view()
	us := peers.topo.ourName // never changes
	out := make([]PeerDescription, 0, v.peers.Len())
	v.peers.Ascend(func(p *Peer) bool {
		out = append(out, PeerDescription{
			Name:           p.Name,
			NickName:       p.NickName,
			UID:            p.UID,
			Self:           p.Name == us,
			NumConnections: len(p.conns),
		})
		return true
	})
	return out
}

// OnGC registers a callback run for each peer removed because nothing
// reaches it any more. Callbacks run on the router's topology goroutine and
// must not block.
func (peers *Peers) OnGC(callback func(*Peer)) {
	peers.gcMu.Lock()
	peers.onGC = append(peers.onGC, callback)
	peers.gcMu.Unlock()
}

// GarbageCollect removes at once every peer that cannot be reached, and
// runs the OnGC callbacks for them. The router also does this by itself,
// shortly after a peer becomes unreachable.
func (peers *Peers) GarbageCollect() {
	peers.garbageCollect(time.Now().UnixNano(), 0)
}

func (peers *Peers) garbageCollect(now, grace int64) (removed []*Peer, pending bool) {
	return peers.collect(now, grace, nil)
}

// collect is garbageCollect given the routes last computed (or nil), whose
// reachability it reuses when they are current.
func (peers *Peers) collect(now, grace int64, rt *routeTable) (removed []*Peer, pending bool) {
	peers.mu.Lock()
	var reach []int32
	if rt != nil && rt.gen == peers.topo.gen {
		reach = rt.unicastAll
	}
	removed = peers.topo.gcWith(now, grace, reach)
	pending = peers.topo.pendingGC()
	peers.mu.Unlock()
	if len(removed) > 0 {
		peers.gcMu.Lock()
		callbacks := peers.onGC
		peers.gcMu.Unlock()
		for _, p := range removed {
			for _, f := range callbacks {
				f(p)
			}
		}
	}
	return removed, pending
}

// maxPeersPerTopologyMessage bounds how many peers one topology message
// holds, so that the full topology of a large mesh is split into frames of
// moderate size.
const maxPeersPerTopologyMessage = 256

// encodeTopology encodes the current entries of the named peers (all
// peers when names is nil) as one or more topology messages.
func (peers *Peers) encodeTopology(names []PeerName) [][]byte {
	peers.mu.RLock()
	updates := peers.topo.updatesFor(names, nil)
	peers.mu.RUnlock()
	return encodeTopologyMessages(updates)
}

func encodeTopologyMessages(updates []peerUpdate) [][]byte {
	var out [][]byte
	for len(updates) > 0 {
		n := min(len(updates), maxPeersPerTopologyMessage)
		out = append(out, appendTopology(nil, updates[:n]))
		updates = updates[n:]
	}
	return out
}
