package mesh

import (
	"cmp"
	"slices"
	"time"
)

// Topology announcements: an extension between mesh peers that understand
// them (feature featureTopologyDigest, see ourDigestLevel).
//
// weave relays every changed topology entry whole to its neighbours, so in
// a mesh where each peer has d neighbours, every peer receives each new
// entry up to d times, and an entry is as large as its peer's connections.
// Between mesh peers, a relaying peer instead announces what changed: a
// digest record (name, UID, version; 22 bytes) per entry, under
// announceChannel. A peer that finds an announced entry newer than its own
// asks the announcer for it with a digest record of its own version under
// pullChannel, unless it already asked a neighbour for that entry less
// than pullTimeout ago (see pullsInFlight); the announcer answers with the
// entry on the ordinary topology channel. Each peer thus receives each
// entry about once, plus d small records. A relaying peer announces newer
// versions of entries it had at most once per announce delay (see
// Router.announceDelay); but the entries of peers new to it it sends
// whole, at once, to the neighbours not known to have them: they are what
// makes a peer known, and sent whole they take one message per hop rather
// than three (announcement, pull, answer). A peer's own changes go to
// its neighbours as deltas (topology_delta.go); neighbours that are weave
// peers get every entry whole, as weave expects.

const (
	// announceChannel is the gossip channel name announcements travel
	// under, as digest records.
	announceChannel = "topology-announce"
	// pullChannel is the gossip channel name of requests for entries, as
	// digest records of the requester's versions.
	pullChannel = "topology-pull"
	// pullTimeout is how long a peer waits for an entry it asked one
	// neighbour for before asking another that announces it, or before
	// a digest exchange may ask for it again; pullTimeoutPerPeer makes
	// it longer in larger meshes, up to maxPullTimeout. A neighbour that
	// goes away releases what was asked of it at once, so the timeout
	// only serves answers that never come, which are rare; and asking
	// again too early costs a second copy of every entry asked for. A
	// thousand routers forming a mesh in one process on two cores answer
	// in 1 to 10 s, as every message waits for a core behind thousands
	// of others.
	pullTimeout        = time.Second
	pullTimeoutPerPeer = 15 * time.Millisecond
	maxPullTimeout     = 15 * time.Second
	// ourDigestLevel is the level of featureTopologyDigest we send. A
	// peer that sends this level or a higher one understands digests
	// answered by pulls, sync requests, announcements and deltas; with
	// any other peer, topology goes whole, as with weave.
	ourDigestLevel = 4
)

// pullCandidate is an announced entry newer than ours: what was announced,
// and the digest record of what we have (UID and version 0 when we have
// nothing), which is what a pull request for it carries.
type pullCandidate struct {
	announced digestEntry
	have      digestEntry
}

// wanted returns the announced entries newer than ours.
func (t *topology) wanted(announced []digestEntry) []pullCandidate {
	return t.appendWanted(nil, announced)
}

// appendWanted appends the announced entries newer than ours to out.
func (t *topology) appendWanted(out []pullCandidate, announced []digestEntry) []pullCandidate {
	for _, e := range announced {
		if e.Name == t.ourName || e.UID == 0 {
			continue // our own entry is ours to announce
		}
		p := t.get(e.Name)
		have := digestEntry{Name: e.Name}
		switch {
		case p == nil:
			if ts, ok := t.tombstones[e.Name]; ok && ts.uid == e.UID && e.Version <= ts.version {
				continue // a stale copy of a peer we removed
			}
		case !p.isPlaceholder():
			s := peerSummary{UID: e.UID, Version: e.Version}
			if !s.newerThan(p) {
				continue
			}
			have.UID, have.Version = p.UID, p.Version
		}
		// A placeholder means a peer we reach reports a connection to
		// this one: its entry is wanted even if we removed it before, as
		// apply takes it.
		out = append(out, pullCandidate{announced: e, have: have})
	}
	return out
}

// record returns the digest record of what we have of name's entry: UID
// and version 0 when we have none, or only a placeholder. A pull request
// carries it.
func (t *topology) record(name PeerName) digestEntry {
	if p := t.get(name); p != nil && !p.isPlaceholder() {
		return digestEntry{Name: name, UID: p.UID, Version: p.Version}
	}
	return digestEntry{Name: name}
}

// pullsInFlight remembers which entries we asked a neighbour for, from
// whom and when, so that an entry announced by several neighbours is
// fetched once. At most one request per entry we have is out at a time:
// a later version announced while one is out is remembered, and asked for
// once the answer arrives if the answer is older, or at once if the
// request expires or its neighbour goes away. (A later version of an
// entry we do not have at all is asked for at once: that entry is what
// makes its peer known, and it is asked for once per peer.) A peer whose entry changes faster
// than its versions spread is thus fetched about once per round trip, not
// once per version; and a busy neighbour that answers late does not make
// us fetch the same entry again elsewhere. It reads no clock: times are
// passed in.
type pullsInFlight struct {
	m map[PeerName]pullRequest
	// peak is the most requests m has held since it was made: a map
	// keeps its size once grown, so an empty one is dropped if it grew
	// past keepPulls, and kept otherwise rather than grown again.
	peak int
	// unknown counts the requests for entries we had none of when we
	// asked, and have received none of since.
	unknown int
}

// keepPulls is the largest number of requests whose map is kept when it
// empties.
const keepPulls = 256

type pullRequest struct {
	uid     PeerUID
	version uint64
	at      int64
	// from is the neighbour asked.
	from PeerName
	// unknown is set when we have no entry of the peer (or only a
	// placeholder).
	unknown bool
	// later is a version announced after the request went out, by
	// laterFrom; its UID is 0 when there is none.
	later     digestEntry
	laterFrom PeerName
}

// pullOrder is a request to send: the record of what we have of an entry,
// to ask neighbour to for it.
type pullOrder struct {
	to   PeerName
	have digestEntry
}

// maxPullsInFlight bounds the requests remembered; beyond it, the oldest
// are forgotten (and may be asked for again).
const maxPullsInFlight = 1 << 16

// claim keeps the candidates announced by neighbour from that are not
// already asked for less than timeout ago, records them as asked of from
// at now, and returns the records of the pull request to send. A
// candidate later than the one asked for is remembered for later, but for
// an entry we do not have at all, which is asked for now.
func (p *pullsInFlight) claim(cands []pullCandidate, from PeerName, now, timeout int64) []digestEntry {
	return p.appendClaimed(nil, cands, from, now, timeout)
}

// appendClaimed is claim, appending the records to out.
func (p *pullsInFlight) appendClaimed(out []digestEntry, cands []pullCandidate, from PeerName, now, timeout int64) []digestEntry {
	if p.m == nil {
		p.m = make(map[PeerName]pullRequest)
	}
	for _, c := range cands {
		a := c.announced
		if r, ok := p.m[a.Name]; ok && now-r.at < timeout {
			if !newerRecord(a, r.uid, r.version) {
				continue
			}
			if c.have.UID != 0 {
				// A newer version of an entry we have: asked for once
				// the answer is in.
				if r.later.UID == 0 || newerRecord(a, r.later.UID, r.later.Version) {
					r.later, r.laterFrom = a, from
					p.set(a.Name, r)
				}
				continue
			}
			// An entry we do not have at all is what makes its peer
			// known: a later version of it is asked of this neighbour
			// too, whichever answers first.
		}
		if len(p.m) >= maxPullsInFlight {
			p.expire(now, timeout)
			if len(p.m) >= maxPullsInFlight {
				clear(p.m)
				p.unknown = 0
			}
		}
		p.set(a.Name, pullRequest{uid: a.UID, version: a.Version, at: now, from: from, unknown: c.have.UID == 0})
		p.peak = max(p.peak, len(p.m))
		out = append(out, c.have)
	}
	return out
}

// newerRecord reports whether a supersedes the entry (uid, version).
func newerRecord(a digestEntry, uid PeerUID, version uint64) bool {
	return a.Version > version || (a.Version == version && a.UID > uid)
}

// received forgets the request that peer's entry, just merged, satisfies.
// If a later version was announced meanwhile and this entry is older, it
// returns the request for it, recorded as asked at now.
func (p *pullsInFlight) received(peer *Peer, now int64) (pullOrder, bool) {
	r, ok := p.m[peer.Name]
	if !ok {
		return pullOrder{}, false
	}
	if newerRecord(digestEntry{UID: r.uid, Version: r.version}, peer.UID, peer.Version) {
		if r.unknown && !peer.isPlaceholder() {
			// Still waited for, but no longer the entry of an unknown
			// peer.
			r.unknown = false
			p.set(peer.Name, r)
		}
		return pullOrder{}, false
	}
	if r.later.UID != 0 && newerRecord(r.later, peer.UID, peer.Version) {
		p.set(peer.Name, r.laterRequest(now))
		return pullOrder{to: r.laterFrom, have: digestEntry{Name: peer.Name, UID: peer.UID, Version: peer.Version}}, true
	}
	p.forget(peer.Name)
	return pullOrder{}, false
}

// forget drops the request for name.
func (p *pullsInFlight) forget(name PeerName) {
	p.del(name)
	p.dropIfEmpty()
}

// set records r as the request for name.
func (p *pullsInFlight) set(name PeerName, r pullRequest) {
	if old, ok := p.m[name]; ok && old.unknown {
		p.unknown--
	}
	if r.unknown {
		p.unknown++
	}
	p.m[name] = r
}

// del drops the request for name.
func (p *pullsInFlight) del(name PeerName) {
	if old, ok := p.m[name]; ok {
		if old.unknown {
			p.unknown--
		}
		delete(p.m, name)
	}
}

// dropIdle drops the map when empty, whatever its size. It is called once
// per digest interval: a quiet router then holds no map, and one that
// pulls keeps its map from one request to the next.
func (p *pullsInFlight) dropIdle() {
	if len(p.m) == 0 {
		p.m, p.peak = nil, 0
	}
}

// dropIfEmpty drops the map once empty, if it grew large.
func (p *pullsInFlight) dropIfEmpty() {
	if len(p.m) == 0 && p.peak > keepPulls {
		p.m, p.peak = nil, 0
	}
}

// expire forgets requests made age or more before now, and returns how
// many.
func (p *pullsInFlight) expire(now, age int64) int {
	return p.expireOrders(now, age, nil, nil)
}

// expireOrders is expire, but a request for which another neighbour
// announced a later version is asked of that neighbour instead: orders
// gets the request, recorded as asked at now, with the record have gives
// of what we have of the entry.
func (p *pullsInFlight) expireOrders(now, age int64, have func(PeerName) digestEntry, orders *[]pullOrder) int {
	return p.release(now, func(r pullRequest) bool { return now-r.at >= age }, have, orders)
}

// neighbourGone releases the requests made of neighbour name, which will
// not be answered, and returns how many. Those for which another
// neighbour announced a later version are asked of it instead (appended
// to orders).
func (p *pullsInFlight) neighbourGone(name PeerName, now int64, have func(PeerName) digestEntry, orders *[]pullOrder) int {
	return p.release(now, func(r pullRequest) bool { return r.from == name }, have, orders)
}

// laterRequest is the request for r's later version, asked at now.
func (r pullRequest) laterRequest(now int64) pullRequest {
	return pullRequest{uid: r.later.UID, version: r.later.Version, at: now, from: r.laterFrom}
}

// release drops the requests done says are over; with orders, those with
// a later version announced by another neighbour are asked of it.
func (p *pullsInFlight) release(now int64, done func(pullRequest) bool, have func(PeerName) digestEntry, orders *[]pullOrder) int {
	n := 0
	for name, r := range p.m {
		if !done(r) {
			continue
		}
		n++
		if orders != nil && r.later.UID != 0 && r.laterFrom != r.from {
			p.set(name, r.laterRequest(now))
			*orders = append(*orders, pullOrder{to: r.laterFrom, have: have(name)})
			continue
		}
		p.del(name)
	}
	p.dropIfEmpty()
	return n
}

// handleAnnounce asks neighbour c for the announced entries newer than
// ours that no other neighbour is already sending us.
func (router *Router) handleAnnounce(c *LocalConnection, payload []byte) error {
	d, err := c.rs.parseDigest(payload)
	if err != nil {
		return err
	}
	router.pullNewer(c, d, true)
	return nil
}

// pullNewer asks neighbour c for the entries of records (announced or
// from its digest) newer than ours, but those already asked of another
// neighbour less than pullTimeout ago. What c has is remembered (see
// heardSet): every record it announced, as it got those versions just now
// and we may be about to announce them too; of a digest, which may list
// every entry, only the versions newer than ours.
// A record of our own name from another incarnation of ours, or above our
// version, makes us raise our version above it, as an entry would.
func (router *Router) pullNewer(c *LocalConnection, records []digestEntry, announced bool) {
	now := time.Now().UnixNano()
	router.Peers.mu.Lock()
	bumped := false
	for _, e := range records {
		if e.Name == router.Ourself.Name && router.Peers.topo.raiseAbove(e) {
			bumped = true
		}
		if announced {
			router.Peers.topo.heard.note(e.Name, e.UID, e.Version, c.heardBit)
		}
	}
	if c.rs.cands == nil {
		c.rs.cands = candidatesPool.get()
	}
	if c.rs.pull == nil {
		c.rs.pull = recordsPool.get()
	}
	c.rs.cands = router.Peers.topo.appendWanted(c.rs.cands[:0], records)
	if !announced {
		for _, w := range c.rs.cands {
			router.Peers.topo.heard.note(w.announced.Name, w.announced.UID, w.announced.Version, c.heardBit)
		}
	}
	c.rs.pull = router.pulls.appendClaimed(c.rs.pull[:0], c.rs.cands, c.remoteName, now, int64(router.pullTimeout()))
	router.Peers.mu.Unlock()
	if len(c.rs.pull) > 0 {
		c.q.pushPull(c.rs.pull)
	}
	c.rs.release()
	if bumped {
		router.ourEntryRaised()
	}
}

// readScratch holds the lists a connection's reader uses to handle
// digests and announcements, kept from one message to the next.
type readScratch struct {
	records []digestEntry
	cands   []pullCandidate
	pull    []digestEntry
}

// parseDigest decodes a digest message into the scratch records.
func (s *readScratch) parseDigest(b []byte) ([]digestEntry, error) {
	s.records = recordsPool.grow(s.records[:0], min(len(b)/digestRecordSize, maxDigestRecords))
	var err error
	s.records, err = appendParsedDigest(s.records, b)
	return s.records, err
}

// release gives the lists back to their pools once a message made them
// more than small: a connection gets announcements of a few entries
// often, and whole digests rarely.
func (s *readScratch) release() {
	const small = 16
	if cap(s.records) > small {
		recordsPool.put(s.records)
		s.records = nil
	}
	if cap(s.cands) > small {
		candidatesPool.put(s.cands)
		s.cands = nil
	}
	if cap(s.pull) > small {
		recordsPool.put(s.pull)
		s.pull = nil
	}
}

// handlePull answers neighbour c's request with the entries it asked for
// that are newer here, when its writer next sends topology (see
// topoEncoder.answers).
func (router *Router) handlePull(c *LocalConnection, payload []byte) error {
	d, err := c.rs.parseDigest(payload)
	if err != nil {
		return err
	}
	if len(d) > 0 {
		c.q.pushAnswers(d)
	}
	c.rs.release()
	return nil
}

// learning reports whether we know peers only by name, or ask neighbours
// for the entries of peers we know nothing of or only by name (see
// discoveryPace).
func (router *Router) learning() bool {
	router.Peers.mu.RLock()
	defer router.Peers.mu.RUnlock()
	return router.Peers.topo.learning(&router.pulls)
}

// learning reports whether the topology holds a placeholder, or pulls
// awaits the entry of a peer the topology had none of, or a placeholder,
// when it was asked for. It costs no scan: discovery asks after every
// burst of changes.
func (t *topology) learning(pulls *pullsInFlight) bool {
	return t.placeholders > 0 || pulls.unknown > 0
}

// pullTimeout is how long an entry asked of a neighbour is waited for.
func (router *Router) pullTimeout() time.Duration {
	return perPeer(router.Peers.count(), pullTimeoutPerPeer, pullTimeout, maxPullTimeout)
}

// expirePulls forgets requests that were not answered in time, so that
// the entries can be asked of another neighbour, and reports whether there
// were any. It runs every digest interval, and then drops the map of
// requests if there are none left (see dropIdle).
func (router *Router) expirePulls() bool {
	var orders []pullOrder
	router.Peers.mu.Lock()
	n := router.pulls.expireOrders(time.Now().UnixNano(), int64(router.pullTimeout()), router.Peers.topo.record, &orders)
	router.pulls.dropIdle()
	router.Peers.mu.Unlock()
	router.sendPulls(orders)
	return n > 0
}

// pullsNeighbourGone releases the requests made of a neighbour that went
// away, asking another neighbour that announced a later version where there is
// one.
func (router *Router) pullsNeighbourGone(name PeerName) {
	var orders []pullOrder
	router.Peers.mu.Lock()
	router.pulls.neighbourGone(name, time.Now().UnixNano(), router.Peers.topo.record, &orders)
	router.Peers.mu.Unlock()
	router.sendPulls(orders)
}

// sendPulls queues each request on the connection to its neighbour. A
// request for a neighbour gone since is dropped: the entry is asked for
// again when next announced, or found by a digest exchange.
func (router *Router) sendPulls(orders []pullOrder) {
	if len(orders) == 0 {
		return
	}
	slices.SortFunc(orders, func(a, b pullOrder) int { return cmp.Compare(a.to, b.to) })
	records := make([]digestEntry, 0, len(orders))
	for i := 0; i < len(orders); {
		j := i
		records = records[:0]
		for ; j < len(orders) && orders[j].to == orders[i].to; j++ {
			records = append(records, orders[j].have)
		}
		if c := router.connectionTo(orders[i].to); c != nil && c.digests {
			c.q.pushPull(records)
		}
		i = j
	}
}
