package mesh

import "math/bits"

// heardSet remembers, for each entry, the newest version some neighbours
// are known to have, so that an announcement of that version (or an older
// one) is not sent to them (see topoEncoder.announce). While a large mesh
// forms, a peer's neighbours announce to each other the same new versions
// at about the same time: without it, every peer receives an announcement
// of each version from almost every neighbour, which costs more than the
// entries themselves.
//
// A neighbour is known to have a version when it announced it, sent the
// entry, or listed it in a digest (of a digest, which may list every
// entry, only versions newer than ours are remembered). Neighbours are told
// apart by a bit of their own (acquire); the first 64 connections get one,
// later ones none, and are always announced to. Only the newest version
// heard of an entry is remembered, with the neighbours that have it or
// newer: a newer one starts the set again. Forgetting is always safe; it
// costs an announcement, so at most limit entries are remembered, whatever
// names neighbours make up. Not safe for concurrent use: the topology's
// lock guards it. Free of I/O and clocks.
type heardSet struct {
	m map[PeerName]heardRecord
	// used has a bit set for each neighbour given one.
	used uint64
	// limit bounds len(m); no bound when 0.
	limit int
}

type heardRecord struct {
	uid     PeerUID
	version uint64
	// from has the bits of the neighbours known to have this version or
	// a newer one.
	from uint64
	// fresh is set by note, and cleared by sweep.
	fresh bool
}

// acquire returns a free neighbour bit, or 0 when all 64 are in use.
func (h *heardSet) acquire() uint64 {
	if h.used == ^uint64(0) {
		return 0
	}
	bit := uint64(1) << bits.TrailingZeros64(^h.used)
	h.used |= bit
	return bit
}

// release forgets what the neighbour with bit has, and frees the bit.
func (h *heardSet) release(bit uint64) {
	if bit == 0 || h.used&bit == 0 {
		return
	}
	h.used &^= bit
	for name, r := range h.m {
		if r.from&bit == 0 {
			continue
		}
		r.from &^= bit
		if r.from == 0 {
			delete(h.m, name)
			continue
		}
		h.m[name] = r
	}
	if len(h.m) == 0 {
		h.m = nil // a map keeps its size once grown
	}
}

// note records that the neighbour with bit has version of name's entry
// of incarnation uid, or a newer one.
func (h *heardSet) note(name PeerName, uid PeerUID, version uint64, bit uint64) {
	if bit == 0 || uid == 0 {
		return
	}
	r, ok := h.m[name]
	switch {
	case !ok || newerRecord(digestEntry{UID: uid, Version: version}, r.uid, r.version):
		r = heardRecord{uid: uid, version: version, from: bit, fresh: true}
	case uid == r.uid && version == r.version && r.from&bit == 0:
		r.from |= bit
		r.fresh = true
	default:
		return // known already, or older: says nothing of r's version
	}
	if !ok && h.limit > 0 && len(h.m) >= h.limit {
		return
	}
	if h.m == nil {
		h.m = make(map[PeerName]heardRecord)
	}
	h.m[name] = r
}

// has reports whether the neighbour with bit is known to have version of
// name's entry of incarnation uid, or a newer one.
func (h *heardSet) has(name PeerName, uid PeerUID, version uint64, bit uint64) bool {
	if bit == 0 {
		return false
	}
	r, ok := h.m[name]
	if !ok || r.from&bit == 0 {
		return false
	}
	return !newerRecord(digestEntry{UID: uid, Version: version}, r.uid, r.version)
}

// sweep forgets the records no note touched since the sweep before, and
// those of versions we have (have gives our UID and version of an entry),
// whose announcements leave within the announce delay, a second at most:
// forgetting one early costs an announcement. A mesh at rest thus keeps
// none. It is called every baseQuietInterval.
func (h *heardSet) sweep(have func(PeerName) digestEntry) {
	for name, r := range h.m {
		ours := have(name)
		if !r.fresh || !newerRecord(digestEntry{UID: r.uid, Version: r.version}, ours.UID, ours.Version) {
			delete(h.m, name)
			continue
		}
		r.fresh = false
		h.m[name] = r
	}
	if len(h.m) == 0 {
		h.m = nil
	}
}

// forget drops what is remembered of name's entry.
func (h *heardSet) forget(name PeerName) {
	delete(h.m, name)
}

// len returns the number of entries remembered.
func (h *heardSet) len() int { return len(h.m) }
