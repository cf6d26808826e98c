package mesh

// topoEncoder encodes the topology messages one connection's writer sends:
// entries, digests, announcements and pulls. It keeps its buffers from one
// batch to the next, so that a busy connection does not allocate for each
// message; release drops those a burst made large. The messages a method
// returns are valid until the next call. Not safe for concurrent use.
type topoEncoder struct {
	buf     []byte
	ends    []int
	msgs    [][]byte
	updates []peerUpdate
	records []digestEntry
	names   []PeerName
}

// smallEncoderBuffer is the largest buffer a topoEncoder keeps across
// release.
const smallEncoderBuffer = 16 << 10

// release drops the buffers a burst made large, or all of them when the
// connection has nothing more to send, so that an idle connection does not
// keep them.
func (e *topoEncoder) release(idle bool) {
	if idle || cap(e.buf) > smallEncoderBuffer {
		putBuffer(e.buf)
		e.buf = nil
	}
	if idle || cap(e.updates) > smallBatch {
		updatesPool.put(e.updates)
		e.updates = nil
	}
	if idle || cap(e.records) > smallBatch*8 {
		recordsPool.put(e.records)
		e.records = nil
	}
	if idle || cap(e.names) > smallBatch {
		namesPool.put(e.names)
		e.names = nil
	}
	if idle {
		*e = topoEncoder{}
		return
	}
	if cap(e.ends) > smallBatch {
		e.ends, e.msgs = nil, nil
	}
	clear(e.updates[:cap(e.updates)]) // no references to old entries
}

// startBuffer empties the buffer the messages are encoded into, taking
// one from the pool when the encoder has none.
func (e *topoEncoder) startBuffer() {
	if e.buf == nil {
		e.buf = getBuffer()
	}
	e.buf, e.ends = e.buf[:0], e.ends[:0]
}

// messages returns the messages ending at e.ends in e.buf.
func (e *topoEncoder) messages() [][]byte {
	e.msgs = e.msgs[:0]
	start := 0
	for _, end := range e.ends {
		e.msgs = append(e.msgs, e.buf[start:end:end])
		start = end
	}
	return e.msgs
}

// topology encodes the current entries of names (every peer when nil) as
// topology messages of at most maxPeersPerTopologyMessage entries.
func (e *topoEncoder) topology(peers *Peers, names []PeerName) [][]byte {
	if e.updates == nil {
		e.updates = updatesPool.get()
	}
	peers.mu.RLock()
	e.updates = peers.topo.updatesFor(names, e.updates[:0])
	peers.mu.RUnlock()
	e.buf = bufferPool.grow(e.buf[:0], topologySizeBound(e.updates))
	e.startBuffer()
	for u := e.updates; len(u) > 0; {
		n := min(len(u), maxPeersPerTopologyMessage)
		e.buf = appendTopology(e.buf, u[:n])
		e.ends = append(e.ends, len(e.buf))
		u = u[n:]
	}
	return e.messages()
}

// answers sorts out the answer to pulls, given the requester's records of
// the entries it asked for: those newer here go whole (the names
// returned), or as deltas (appended to out as frames by frame) when the
// requester has one of the versions of a large entry kept before ours
// (see deltaBases).
func (e *topoEncoder) answers(peers *Peers, records []digestEntry, frame func(delta []byte) error) ([]PeerName, error) {
	e.names = e.names[:0]
	var deltas [][2]*Peer // base, entry
	peers.mu.RLock()
	for _, r := range records {
		p := peers.topo.get(r.Name)
		if p == nil || p.isPlaceholder() {
			continue
		}
		if r.UID != 0 && !newerRecord(digestEntry{UID: p.UID, Version: p.Version}, r.UID, r.Version) {
			continue // the requester is up to date
		}
		if b := p.base(r.UID, r.Version); b != nil {
			deltas = append(deltas, [2]*Peer{b, p})
			continue
		}
		e.names = append(e.names, p.Name)
	}
	peers.mu.RUnlock()
	for _, bp := range deltas {
		d := diffEntries(bp[0], bp[1])
		e.buf = appendDelta(e.buf[:0], &d)
		if err := frame(e.buf); err != nil {
			return nil, err
		}
	}
	return e.names, nil
}

// digest encodes our digest: every peer's record but placeholders'.
func (e *topoEncoder) digest(peers *Peers) [][]byte {
	peers.mu.RLock()
	e.records = recordsPool.grow(e.records[:0], peers.topo.len())
	e.records = peers.topo.appendDigest(e.records)
	peers.mu.RUnlock()
	return e.digestRecords(e.records)
}

// announce encodes the current records of names, those we know.
func (e *topoEncoder) announce(peers *Peers, names []PeerName, to *LocalConnection) [][]byte {
	if e.records == nil {
		e.records = recordsPool.get()
	}
	e.records = e.records[:0]
	peers.mu.RLock()
	for _, n := range names {
		if p := peers.topo.unheard(n, to.heardBit); p != nil {
			e.records = append(e.records, digestEntry{Name: p.Name, UID: p.UID, Version: p.Version})
		}
	}
	peers.mu.RUnlock()
	return e.digestRecords(e.records)
}

// appendUnheard appends to out the names of the entries we have that
// neighbour to is not known to have in their current versions.
func appendUnheard(out []PeerName, peers *Peers, names []PeerName, to *LocalConnection) []PeerName {
	peers.mu.RLock()
	for _, n := range names {
		if peers.topo.unheard(n, to.heardBit) != nil {
			out = append(out, n)
		}
	}
	peers.mu.RUnlock()
	return out
}

// unheard returns the entry of name if we have one (not a placeholder)
// that the neighbour with heard bit bit is not known to have in this
// version, else nil.
func (t *topology) unheard(name PeerName, bit uint64) *Peer {
	if p := t.get(name); p != nil && !p.isPlaceholder() && !t.heard.has(p.Name, p.UID, p.Version, bit) {
		return p
	}
	return nil
}

// digestRecords encodes records as messages of at most maxDigestRecords.
func (e *topoEncoder) digestRecords(records []digestEntry) [][]byte {
	e.startBuffer()
	for len(records) > 0 {
		n := min(len(records), maxDigestRecords)
		e.buf = appendDigest(e.buf, records[:n])
		e.ends = append(e.ends, len(e.buf))
		records = records[n:]
	}
	return e.messages()
}
