package mesh

import "time"

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
// pullChannel, unless it already asked another neighbour for that version
// less than pullTimeout ago; the announcer answers with the entry on the
// ordinary topology channel. Each peer thus receives each entry about once,
// plus d small records. A peer's own entry is still sent whole to its
// neighbours, who all need it; neighbours that are weave peers get every
// entry whole, as weave expects.

const (
	// announceChannel is the gossip channel name announcements travel
	// under, as digest records.
	announceChannel = "topology-announce"
	// pullChannel is the gossip channel name of requests for entries, as
	// digest records of the requester's versions.
	pullChannel = "topology-pull"
	// pullTimeout is how long a peer waits for an entry it asked one
	// neighbour for before asking another that announces it.
	pullTimeout = time.Second
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

// pullsInFlight remembers which entries we asked a neighbour for and when,
// so that an entry announced by several neighbours is fetched once. It
// reads no clock: times are passed in.
type pullsInFlight struct {
	m map[PeerName]pullRequest
}

type pullRequest struct {
	uid     PeerUID
	version uint64
	at      int64
}

// maxPullsInFlight bounds the requests remembered; beyond it, the oldest
// are forgotten (and may be asked for again).
const maxPullsInFlight = 1 << 16

// claim keeps the candidates not already asked for, at their announced
// version or a later one, less than timeout ago, and records them as asked
// for at now. It returns the records of the pull request to send.
func (p *pullsInFlight) claim(cands []pullCandidate, now, timeout int64) []digestEntry {
	return p.appendClaimed(nil, cands, now, timeout)
}

// appendClaimed is claim, appending the records to out.
func (p *pullsInFlight) appendClaimed(out []digestEntry, cands []pullCandidate, now, timeout int64) []digestEntry {
	if p.m == nil {
		p.m = make(map[PeerName]pullRequest)
	}
	for _, c := range cands {
		a := c.announced
		if r, ok := p.m[a.Name]; ok && now-r.at < timeout && !newerRecord(a, r.uid, r.version) {
			continue
		}
		if len(p.m) >= maxPullsInFlight {
			p.expire(now, timeout)
			if len(p.m) >= maxPullsInFlight {
				clear(p.m)
			}
		}
		p.m[a.Name] = pullRequest{uid: a.UID, version: a.Version, at: now}
		out = append(out, c.have)
	}
	return out
}

// newerRecord reports whether a supersedes the entry (uid, version).
func newerRecord(a digestEntry, uid PeerUID, version uint64) bool {
	return a.Version > version || (a.Version == version && a.UID > uid)
}

// received forgets the request that peer's entry satisfies.
func (p *pullsInFlight) received(peer *Peer) {
	if r, ok := p.m[peer.Name]; ok && !newerRecord(digestEntry{UID: r.uid, Version: r.version}, peer.UID, peer.Version) {
		delete(p.m, peer.Name)
		if len(p.m) == 0 {
			p.m = nil // a map keeps its size once grown
		}
	}
}

// expire forgets requests made age or more before now, and returns how
// many.
func (p *pullsInFlight) expire(now, age int64) int {
	n := 0
	for name, r := range p.m {
		if now-r.at >= age {
			delete(p.m, name)
			n++
		}
	}
	if len(p.m) == 0 {
		p.m = nil
	}
	return n
}

// handleAnnounce asks neighbour c for the announced entries newer than
// ours that no other neighbour is already sending us.
func (router *Router) handleAnnounce(c *LocalConnection, payload []byte) error {
	d, err := c.rs.parseDigest(payload)
	if err != nil {
		return err
	}
	router.pullNewer(c, d)
	return nil
}

// pullNewer asks neighbour c for the entries of records (announced or
// from its digest) newer than ours, but those already asked of another
// neighbour less than pullTimeout ago.
// A record of our own name from another incarnation of ours, or above our
// version, makes us raise our version above it, as an entry would.
func (router *Router) pullNewer(c *LocalConnection, records []digestEntry) {
	now := time.Now().UnixNano()
	router.Peers.mu.Lock()
	bumped := false
	for _, e := range records {
		if e.Name == router.Ourself.Name && router.Peers.topo.raiseAbove(e) {
			bumped = true
		}
	}
	c.rs.cands = router.Peers.topo.appendWanted(c.rs.cands[:0], records)
	c.rs.pull = router.pulls.appendClaimed(c.rs.pull[:0], c.rs.cands, now, int64(pullTimeout))
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
	var err error
	s.records, err = appendParsedDigest(s.records[:0], b)
	return s.records, err
}

// release drops the lists once a message made them more than small: a
// connection gets announcements of a few entries often, and whole digests
// rarely.
func (s *readScratch) release() {
	const small = 16
	if cap(s.records) > small {
		s.records = nil
	}
	if cap(s.cands) > small {
		s.cands = nil
	}
	if cap(s.pull) > small {
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

// expirePulls forgets requests that were not answered in time, so that
// the entries can be asked of another neighbour, and reports whether there
// were any.
func (router *Router) expirePulls() bool {
	router.Peers.mu.Lock()
	n := router.pulls.expire(time.Now().UnixNano(), int64(pullTimeout))
	router.Peers.mu.Unlock()
	return n > 0
}
