package mesh

import (
	"math"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/btree"
)

// topology is the decision logic for what this router knows about the mesh:
// the table of peers and their connections, the merge of updates received
// from other peers, and the removal of peers nothing reaches any more.
//
// It does no I/O and reads no clock (times are passed in), so tests can
// drive it deterministically. It is not safe for concurrent use: Peers
// guards it with a lock.
type topology struct {
	ourName PeerName
	ourUID  PeerUID
	// peers orders the peers by name, for deterministic iteration; byName
	// finds them without allocating a search key.
	peers  *btree.BTreeG[*Peer]
	byName map[PeerName]*Peer
	// gen counts the changes of entries, so that a route table can tell
	// whether it was computed from the current topology.
	gen uint64
	// published is gen, for readers that hold no lock (see Peers.view).
	published atomic.Uint64
	// size is the number of entries, for readers that hold no lock and
	// need no snapshot.
	size   atomic.Int64
	limits topologyLimits

	// graph holds the entries as a graph, for routes and reachability.
	// It records too when (in the caller's clock, nanoseconds) a peer was
	// first seen unreachable, as gc removes it after a grace period, and
	// the peers gc has seen reachable (linked). A peer learnt from gossip
	// may stay unlinked for a while in a large mesh, until the updates
	// that lead to it arrive: it gets a longer grace, and no tombstone
	// (unless it is a later version of a peer removed after it had been
	// reachable).
	graph *peerGraph
	// namesHash is the XOR of nameHash over the peers with an entry (not
	// placeholders): two tables with the same hash almost surely know the
	// same peers, whatever the versions of their entries.
	namesHash uint64
	// placeholders counts the peers known by name only.
	placeholders int

	// tombstones remember the incarnation and version of peers removed as
	// unreachable, so that stale copies still circulating in other peers'
	// gossip are not learned again. Bounded: the oldest are forgotten first.
	tombstones     map[PeerName]tombstone
	tombstoneOrder []tombstoneRef
	tombstoneSeq   uint64

	// heard remembers which neighbours have which versions, so that
	// they are not announced to them (see heardSet).
	heard heardSet

	// withBases lists the entries that keep delta bases (see
	// dropQuietBases); nil until one does.
	withBases map[PeerName]basesRecord

	// addrs holds, per remote peer, the address last seen in an entry's
	// connection to it: the entries share it (see shareStrings). Bounded
	// like the entries.
	addrs map[PeerName]string
}

type tombstone struct {
	uid     PeerUID
	version uint64
	seq     uint64
}

type tombstoneRef struct {
	name PeerName
	seq  uint64
}

// maxTombstones bounds the memory used to remember removed peers.
const maxTombstones = 4096

func peerLess(a, b *Peer) bool { return a.Name < b.Name }

func newTopology(ourself *Peer, limits topologyLimits) *topology {
	t := &topology{
		ourName:    ourself.Name,
		ourUID:     ourself.UID,
		peers:      btree.NewG(16, peerLess),
		byName:     make(map[PeerName]*Peer),
		limits:     limits,
		graph:      newPeerGraph(),
		addrs:      make(map[PeerName]string),
		tombstones: make(map[PeerName]tombstone),
		// No more entries than the topology may hold are worth
		// remembering.
		heard: heardSet{limit: limits.entryBound()},
	}
	t.put(ourself)
	return t
}

// put adds or replaces a peer's entry.
func (t *topology) put(p *Peer) {
	old := t.byName[p.Name]
	if (old != nil && !old.isPlaceholder()) != !p.isPlaceholder() {
		t.namesHash ^= nameHash(p.Name)
	}
	if old != nil && old.isPlaceholder() {
		t.placeholders--
	}
	if p.isPlaceholder() {
		t.placeholders++
	}
	t.peers.ReplaceOrInsert(p)
	t.byName[p.Name] = p
	t.graph.put(p)
	t.gen++
	t.published.Store(t.gen)
	t.size.Store(int64(len(t.byName)))
}

// remove deletes a peer's entry.
func (t *topology) remove(p *Peer) {
	if old := t.byName[p.Name]; old != nil {
		if old.isPlaceholder() {
			t.placeholders--
		} else {
			t.namesHash ^= nameHash(p.Name)
		}
	}
	t.peers.Delete(p)
	delete(t.byName, p.Name)
	delete(t.withBases, p.Name)
	delete(t.addrs, p.Name)
	t.heard.forget(p.Name)
	t.graph.remove(p.Name)
	t.gen++
	t.published.Store(t.gen)
	t.size.Store(int64(len(t.byName)))
}

// get returns the peer with the given name, or nil.
func (t *topology) get(name PeerName) *Peer {
	return t.byName[name]
}

// ourself returns our own current entry.
func (t *topology) ourself() *Peer { return t.get(t.ourName) }

// len returns the number of known peers, ourselves included.
func (t *topology) len() int { return t.peers.Len() }

// ascend calls f for every peer in name order until f returns false.
func (t *topology) ascend(f func(*Peer) bool) { t.peers.Ascend(f) }

// setOurConnections replaces our own connection list and bumps our version.
func (t *topology) setOurConnections(conns []connectionSummary) *Peer {
	old := t.ourself()
	p := *old
	p.conns = sortConnections(conns)
	p.Version = bumpVersion(old.Version)
	t.put(&p)
	return &p
}

func bumpVersion(v uint64) uint64 {
	if v == math.MaxUint64 {
		return v
	}
	return v + 1
}

// addPeerIfUnknown records a peer learnt from a connection handshake, so it
// has an entry before its own topology arrives. It returns the entry in
// force and whether it was added.
func (t *topology) addPeerIfUnknown(s peerSummary) (*Peer, bool) {
	if p := t.get(s.Name); p != nil {
		if !p.isPlaceholder() {
			return p, false
		}
		if !s.newerThan(p) {
			return p, false
		}
	} else if t.limits.MaxPeers > 0 && t.peers.Len() >= t.limits.MaxPeers {
		return nil, false
	}
	p := &Peer{Name: s.Name, NickName: s.NickName, UID: s.UID, Version: s.Version, ShortID: s.ShortID, HasShortID: s.HasShortID}
	t.put(p)
	t.forgetTombstone(s.Name)
	return p, true
}

// mergeResult says what an update changed.
type mergeResult struct {
	// changed lists the peers whose entries were added or replaced, in the
	// order of the update. These are what is relayed onwards.
	changed []PeerName
	// renewed[i] is set when changed[i] replaced an entry of the same
	// incarnation: a newer version of an entry we had, rather than a peer
	// new to us (or a new incarnation of one).
	renewed []bool
	// ourVersionBumped is set when the update held an entry for our own
	// name from another incarnation, so we raised our version above it and
	// must advertise ourselves again.
	ourVersionBumped bool
	// placeholders counts peers added only because a connection names them.
	placeholders int
	// revived lists the placeholders added for peers we had removed: a
	// reachable peer names them again, but their entries may never be
	// announced to us (unchanged since we removed them), so they are to
	// be asked for.
	revived []PeerName
	// stale lists peers for which the update held an older entry than
	// ours: the sender is behind and should get ours.
	stale []PeerName
}

// apply merges an update received from another peer. It takes the
// Connections slices of updates over: they are sorted in place and kept.
func (t *topology) apply(updates []peerUpdate) mergeResult {
	var res mergeResult
	for i := range updates {
		u := &updates[i]
		if u.Name == t.ourName {
			if u.UID != t.ourUID || u.Version > t.ourself().Version {
				if t.bumpOurselfAbove(u.Version) {
					res.ourVersionBumped = true
				}
			} else if u.Version < t.ourself().Version {
				res.stale = append(res.stale, u.Name)
			}
			continue
		}
		if u.UID == 0 {
			// A placeholder only tells us the name exists.
			if p := t.get(u.Name); p == nil {
				t.addPlaceholder(u.Name, &res)
			} else if !p.isPlaceholder() {
				res.stale = append(res.stale, u.Name)
			}
			continue
		}
		existing := t.get(u.Name)
		if existing != nil && existing.Version > u.Version {
			res.stale = append(res.stale, u.Name)
		}
		revived := false
		if existing == nil {
			ts, ok := t.tombstones[u.Name]
			if ok && ts.uid == u.UID && u.Version <= ts.version {
				continue // a stale copy of a peer we removed
			}
			revived = ok && ts.uid == u.UID
			if t.limits.MaxPeers > 0 && t.peers.Len() >= t.limits.MaxPeers {
				continue
			}
		} else if !u.newerThan(existing) {
			continue
		}
		if u.connsSkipped {
			// Held when decoded, but gone since (see
			// Router.entryHeld): the entry comes again with the next
			// digest or announcement.
			continue
		}
		conns := sortConnections(u.Connections)
		if t.limits.MaxConnections > 0 && len(conns) > t.limits.MaxConnections {
			continue // decoders refuse these; nothing else may add one
		}
		if len(conns) < cap(conns)-cap(conns)/8 {
			// Entries are kept for long: not with room to spare (a
			// delta's list has room for the connections it replaced).
			conns = slices.Clone(conns)
		}
		p := &Peer{
			Name: u.Name, NickName: u.NickName, UID: u.UID, Version: u.Version,
			ShortID: u.ShortID, HasShortID: u.HasShortID,
			conns: conns,
		}
		t.shareStrings(p, existing)
		if existing != nil && existing.UID == p.UID && len(conns) >= deltaMinConns {
			p.prev = existing.withPrevs(deltaBases - 1)
			t.recordBases(p)
		}
		t.put(p)
		t.forgetTombstone(u.Name)
		if revived {
			// A later version of a peer removed after it had been
			// reachable counts as reachable before: if nothing leads to
			// it, it goes at the short grace, with a tombstone at this
			// version. Otherwise the copies of a stopped peer's last
			// versions, still held here and there, would each keep it
			// for the long grace of a peer never reached.
			t.graph.linked[t.graph.slots[u.Name]] = true
		}
		res.changed = append(res.changed, u.Name)
		res.renewed = append(res.renewed, existing != nil && existing.UID == p.UID)
		for _, c := range p.conns {
			if c.Name != t.ourName && t.get(c.Name) == nil {
				t.addPlaceholder(c.Name, &res)
			}
		}
	}
	return res
}

// shareStrings makes a new entry share its strings with those held: the
// nickname with the entry it replaces, and each connection's address with
// the address held for its remote, which every entry with a connection to
// that peer reports (its listening address) but for inbound connections
// of peers that do not tell theirs. A string held nowhere yet is copied
// on its own, so that nothing kept points into the block the decoder
// allocated for the entry's strings (see setStrings). p is not published
// yet.
func (t *topology) shareStrings(p, existing *Peer) {
	if existing != nil && existing.NickName == p.NickName {
		p.NickName = existing.NickName
	} else {
		p.NickName = strings.Clone(p.NickName)
	}
	limit := t.limits.entryBound()
	for i := range p.conns {
		c := &p.conns[i]
		if c.RemoteTCPAddr == "" {
			continue
		}
		held, ok := t.addrs[c.Name]
		if ok && held == c.RemoteTCPAddr {
			c.RemoteTCPAddr = held
			continue
		}
		c.RemoteTCPAddr = strings.Clone(c.RemoteTCPAddr)
		if ok || len(t.addrs) < limit {
			t.addrs[c.Name] = c.RemoteTCPAddr
		}
	}
}

// addPlaceholder adds a peer known only by name, and records it in res.
func (t *topology) addPlaceholder(name PeerName, res *mergeResult) {
	if t.limits.MaxPeers > 0 && t.peers.Len() >= t.limits.MaxPeers {
		return
	}
	t.put(&Peer{Name: name})
	res.placeholders++
	if _, ok := t.tombstones[name]; ok {
		res.revived = append(res.revived, name)
	}
}

// raiseAbove handles a record of our own name from a digest or an
// announcement: one of another incarnation of ours, or above our version,
// makes us raise our version above it. It reports whether it did.
func (t *topology) raiseAbove(e digestEntry) bool {
	if e.Name != t.ourName || (e.UID == t.ourUID && e.Version <= t.ourself().Version) {
		return false
	}
	return t.bumpOurselfAbove(e.Version)
}

// bumpOurselfAbove raises our version above v, if it is not already.
func (t *topology) bumpOurselfAbove(v uint64) bool {
	old := t.ourself()
	if old.Version > v || v == math.MaxUint64 {
		return false
	}
	p := *old
	p.Version = v + 1
	t.put(&p)
	return true
}

func (t *topology) forgetTombstone(name PeerName) {
	delete(t.tombstones, name)
}

func (t *topology) addTombstone(p *Peer) {
	t.tombstoneSeq++
	t.tombstones[p.Name] = tombstone{uid: p.UID, version: p.Version, seq: t.tombstoneSeq}
	t.tombstoneOrder = append(t.tombstoneOrder, tombstoneRef{name: p.Name, seq: t.tombstoneSeq})
	for len(t.tombstones) > maxTombstones && len(t.tombstoneOrder) > 0 {
		ref := t.tombstoneOrder[0]
		t.tombstoneOrder = t.tombstoneOrder[1:]
		if ts, ok := t.tombstones[ref.name]; ok && ts.seq == ref.seq {
			delete(t.tombstones, ref.name)
		}
	}
	if len(t.tombstoneOrder) > 2*maxTombstones {
		// Drop references to tombstones that were forgotten or renewed.
		live := t.tombstoneOrder[:0]
		for _, ref := range t.tombstoneOrder {
			if ts, ok := t.tombstones[ref.name]; ok && ts.seq == ref.seq {
				live = append(live, ref)
			}
		}
		t.tombstoneOrder = live
	}
}

// relayTargets decides which of our neighbours an entry of peer x, received
// from neighbour from, is passed on to: those adjacent neither to x (x sends
// each new version of its own entry to all its neighbours) nor to from
// (which passes on what is new to it by this same rule). When every peer
// has the same view, this reaches every peer and relays nothing in a full
// mesh. Entries sent point to point (answers to digests, repairs of stale
// entries) are not passed on by their sender, so the rule can miss peers;
// the digests exchanged while the topology changes repair that.
func (t *topology) relayTargets(x, from PeerName, neighbours []PeerName) []PeerName {
	return t.newRelayContext(from, neighbours).targets(x)
}

// relayContext caches what relay decisions for one received update share:
// our neighbours' entries, and which of them are adjacent to the sender.
type relayContext struct {
	t          *topology
	from       PeerName
	neighbours []*Peer
	names      []PeerName
	skip       []bool // the sender, or adjacent to it
}

func (t *topology) newRelayContext(from PeerName, neighbours []PeerName) *relayContext {
	rc := new(relayContext)
	t.initRelayContext(rc, from, neighbours)
	return rc
}

// initRelayContext readies rc, reusing its lists, for entries received
// from from.
func (t *topology) initRelayContext(rc *relayContext, from PeerName, neighbours []PeerName) {
	rc.t, rc.from, rc.names = t, from, neighbours
	rc.neighbours = slices.Grow(rc.neighbours[:0], len(neighbours))[:len(neighbours)]
	rc.skip = slices.Grow(rc.skip[:0], len(neighbours))[:len(neighbours)]
	fromPeer := t.get(from)
	for i, n := range neighbours {
		p := t.get(n)
		rc.neighbours[i] = p
		rc.skip[i] = n == from || adjacentPeers(p, fromPeer)
	}
}

// reset drops what rc points to, keeping its lists.
func (rc *relayContext) reset() {
	clear(rc.neighbours)
	rc.t, rc.names, rc.neighbours, rc.skip = nil, nil, rc.neighbours[:0], rc.skip[:0]
}

// targets returns the neighbours an entry of x is passed on to.
func (rc *relayContext) targets(x PeerName) []PeerName {
	var out []PeerName
	for _, i := range rc.appendTargets(nil, x) {
		out = append(out, rc.names[i])
	}
	return out
}

// appendTargets appends to dst the positions in the neighbour list of
// those an entry of x is passed on to.
func (rc *relayContext) appendTargets(dst []int, x PeerName) []int {
	xp := rc.t.get(x)
	for i, n := range rc.names {
		if rc.skip[i] || n == x || adjacentPeers(rc.neighbours[i], xp) {
			continue
		}
		dst = append(dst, i)
	}
	return dst
}

// adjacentPeers reports whether a and b both report a connection to each
// other.
func adjacentPeers(a, b *Peer) bool {
	if a == nil || b == nil {
		return false
	}
	_, ab := a.connectionTo(b.Name)
	_, ba := b.connectionTo(a.Name)
	return ab && ba
}

// nameHash mixes a peer name into 64 well-spread bits (SplitMix64's
// finalizer), for namesHash.
func nameHash(name PeerName) uint64 {
	h := uint64(name) + 0x9e3779b97f4a7c15
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return h ^ h>>31
}

// ourSlot returns our slot in the graph; we always have an entry.
func (t *topology) ourSlot() int32 { return t.graph.slots[t.ourName] }

// unlinkedGraceFactor is how many times longer than the grace period a
// peer that was never reachable is kept.
const unlinkedGraceFactor = 30

// maxUnlinkedGrace bounds the grace of a peer that was never reachable,
// where the grace period is long.
const maxUnlinkedGrace int64 = 30e9 // 30 s, in nanoseconds as gc takes times

// gc removes the peers that have been unreachable for at least grace
// (times in nanoseconds of the caller's clock) and returns them. A peer
// that becomes reachable again before that is kept. A peer that was never
// reachable is kept unlinkedGraceFactor times longer, and is not
// tombstoned when removed.
func (t *topology) gc(now, grace int64) []*Peer { return t.gcWith(now, grace, nil) }

// gcWith is gc given reach, the next hops over every reported connection
// by position in the graph's order (routeTable.unicastAll) of a route
// table computed from the topology as it is, or nil: a route pass has
// just computed them, and this saves a search of the graph.
func (t *topology) gcWith(now, grace int64, reach []int32) []*Peer {
	g := t.graph
	var hop []int32 // by slot; >= 0 when reachable
	if reach != nil && len(reach) == len(g.order) {
		hp := getSlots(len(g.names))
		defer putSlots(hp)
		hop = *hp
		for i, s := range g.order {
			hop[s] = reach[i]
		}
	} else {
		hops := g.nextHops(t.ourSlot(), false)
		defer putSlots(hops)
		hop = *hops
	}
	var doomed []int32
	for _, s := range g.order {
		if hop[s] >= 0 {
			g.linked[s] = true
			g.setReachable(s)
			continue
		}
		since := g.setUnreachable(s, now)
		limit := grace
		if !g.linked[s] {
			limit = max(grace, min(unlinkedGraceFactor*grace, maxUnlinkedGrace))
		}
		if now-since >= limit {
			doomed = append(doomed, s)
		}
	}
	var removed []*Peer
	for _, s := range doomed {
		p := t.get(g.names[s])
		wasLinked := g.linked[s]
		t.remove(p)
		if wasLinked && !p.isPlaceholder() {
			t.addTombstone(p)
		}
		removed = append(removed, p)
	}
	return removed
}

// pendingGC reports whether some peer is waiting to be removed.
func (t *topology) pendingGC() bool { return t.graph.unreachableCount > 0 }

// updatesFor returns the entries of the named peers (all peers when names
// is nil), for encoding. Unknown names are skipped.
func (t *topology) updatesFor(names []PeerName, dst []peerUpdate) []peerUpdate {
	add := func(p *Peer) {
		dst = append(dst, peerUpdate{peerSummary: p.summary(), Connections: p.conns})
	}
	if names == nil {
		t.peers.Ascend(func(p *Peer) bool { add(p); return true })
		return dst
	}
	for _, n := range names {
		if p := t.get(n); p != nil {
			add(p)
		}
	}
	return dst
}
