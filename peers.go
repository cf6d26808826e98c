package mesh

import (
	"sync"
	"time"
)

// Peers is the table of every peer this router knows, with the connections
// each reports. It is safe for concurrent use.
type Peers struct {
	mu   sync.RWMutex
	topo *topology

	gcMu sync.Mutex
	onGC []func(*Peer)
}

func newPeers(ourself *Peer, limits topologyLimits) *Peers {
	return &Peers{topo: newTopology(ourself, limits)}
}

// Fetch returns the peer with the given name, or nil when it is unknown.
func (peers *Peers) Fetch(name PeerName) *Peer {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	return peers.topo.get(name)
}

// Len returns the number of known peers, this router included.
func (peers *Peers) Len() int {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	return peers.topo.len()
}

// Names returns the names of all known peers in ascending order.
func (peers *Peers) Names() []PeerName {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	out := make([]PeerName, 0, peers.topo.len())
	peers.topo.ascend(func(p *Peer) bool { out = append(out, p.Name); return true })
	return out
}

// ForEach calls f for every known peer, in name order. f must not call
// back into Peers.
func (peers *Peers) ForEach(f func(*Peer)) {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	peers.topo.ascend(func(p *Peer) bool { f(p); return true })
}

// Descriptions returns a summary of every known peer, in name order.
func (peers *Peers) Descriptions() []PeerDescription {
	peers.mu.RLock()
	defer peers.mu.RUnlock()
	out := make([]PeerDescription, 0, peers.topo.len())
	peers.topo.ascend(func(p *Peer) bool {
		out = append(out, PeerDescription{
			Name:           p.Name,
			NickName:       p.NickName,
			UID:            p.UID,
			Self:           p.Name == peers.topo.ourName,
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
	peers.mu.Lock()
	removed = peers.topo.gc(now, grace)
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
