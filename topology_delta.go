package mesh

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// Deltas of a peer's own entry: an extension between mesh peers that
// understand them (feature featureTopologyDigest, see ourDigestLevel).
//
// A peer sends its own entry to each neighbour whenever one of its
// connections changes, and the entry lists all its connections: in weave's
// format the update for one connection grows with the peer's degree, which
// for the hub of a star is the size of the mesh. Between mesh peers, a
// connection remembers the version of our entry it last carried; the next
// change goes as the difference from that version (connections added or
// changed, connections removed), whose size depends on the change only. The
// receiver applies it if its copy of our entry is exactly that version,
// ignores it if its copy is already as new, and otherwise asks for the
// whole entry with a pull (topology_pull.go).
//
// Entries of other peers travel as deltas too, in answer to a pull from a
// neighbour a few versions behind, when the entry is large enough for its
// previous versions to be kept (deltaMinConns, deltaBases): so the change
// of one connection of the hub of a large star reaches every peer as a few
// dozen bytes, not as the hub's whole entry, even while the hub changes
// faster than its versions spread.

const (
	// deltaChannel is the gossip channel name deltas travel under.
	deltaChannel = "topology-delta"
	// deltaFixedSize is the size of a delta before its connections: name,
	// UID, from and to versions, short ID flag and value, and the counts of
	// added and removed connections.
	deltaFixedSize = NameSize + 8 + 8 + 8 + 1 + 2 + 2 + 2
	// deltaMinConns is the least number of connections of an entry for
	// which the previous version is kept, to answer pulls with a delta:
	// below it a whole entry is small anyway.
	deltaMinConns = 16
	// deltaBases is how many versions of such an entry before the current
	// one are kept as bases for deltas. They share their connection lists
	// with the entries they were.
	deltaBases = 4
	// baseQuietInterval is how often the topology loop drops the delta
	// bases of entries that stopped changing (see dropQuietBases).
	baseQuietInterval = 10 * time.Second
)

// basesRecord is an entry that keeps delta bases, as dropQuietBases last
// saw it: fresh until a call of dropQuietBases has seen it.
type basesRecord struct {
	entry *Peer
	fresh bool
}

// recordBases notes that entry p keeps delta bases.
func (t *topology) recordBases(p *Peer) {
	if t.withBases == nil {
		t.withBases = make(map[PeerName]basesRecord)
	}
	t.withBases[p.Name] = basesRecord{entry: p, fresh: true}
}

// dropQuietBases drops the delta bases of the entries that have not
// changed since its previous call, and returns how many it dropped. The
// bases serve neighbours a few versions behind while an entry changes;
// once it has been quiet for a while they have caught up, and the bases
// would only hold memory (in a hub-and-spoke mesh, every router keeps the
// hubs' entries, each a list of the whole mesh). Called every
// baseQuietInterval, it drops bases between one and two intervals after
// the entry's last change.
func (t *topology) dropQuietBases() int {
	dropped := 0
	for name, rec := range t.withBases {
		cur := t.get(name)
		switch {
		case cur != rec.entry:
			// Replaced by an entry without bases, or removed.
			delete(t.withBases, name)
		case rec.fresh:
			t.withBases[name] = basesRecord{entry: cur}
		default:
			q := *cur
			q.prev = nil
			t.put(&q)
			delete(t.withBases, name)
			dropped++
		}
	}
	if len(t.withBases) == 0 {
		t.withBases = nil
	}
	return dropped
}

// entryDelta turns version From of a peer's entry into version To.
type entryDelta struct {
	Name       PeerName
	UID        PeerUID
	From, To   uint64
	ShortID    PeerShortID
	HasShortID bool
	// Add lists connections new or changed in To; Del the peers whose
	// connections To no longer lists.
	Add []connectionSummary
	Del []PeerName
}

// diffEntries returns the delta from old to cur, two versions of the same
// peer's entry, whose connections are sorted by name without duplicates.
func diffEntries(old, cur *Peer) entryDelta {
	d := entryDelta{Name: cur.Name, UID: cur.UID, From: old.Version, To: cur.Version, ShortID: cur.ShortID, HasShortID: cur.HasShortID}
	i, j := 0, 0
	for i < len(old.conns) || j < len(cur.conns) {
		switch {
		case j == len(cur.conns) || (i < len(old.conns) && old.conns[i].Name < cur.conns[j].Name):
			d.Del = append(d.Del, old.conns[i].Name)
			i++
		case i == len(old.conns) || cur.conns[j].Name < old.conns[i].Name:
			d.Add = append(d.Add, cur.conns[j])
			j++
		default:
			if old.conns[i] != cur.conns[j] {
				d.Add = append(d.Add, cur.conns[j])
			}
			i++
			j++
		}
	}
	return d
}

// appendDelta appends the encoding of d.
func appendDelta(dst []byte, d *entryDelta) []byte {
	dst = d.Name.appendBin(dst)
	dst = binary.BigEndian.AppendUint64(dst, uint64(d.UID))
	dst = binary.BigEndian.AppendUint64(dst, d.From)
	dst = binary.BigEndian.AppendUint64(dst, d.To)
	var flag byte
	if d.HasShortID {
		flag = 1
	}
	dst = append(dst, flag)
	dst = binary.BigEndian.AppendUint16(dst, uint16(d.ShortID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(d.Add)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(d.Del)))
	for _, c := range d.Add {
		dst = c.Name.appendBin(dst)
		var f byte
		if c.Outbound {
			f |= 1
		}
		if c.Established {
			f |= 2
		}
		dst = append(dst, f)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(c.RemoteTCPAddr)))
		dst = append(dst, c.RemoteTCPAddr...)
	}
	for _, n := range d.Del {
		dst = n.appendBin(dst)
	}
	return dst
}

// parseDelta decodes one delta, within the limits of a topology entry.
func parseDelta(b []byte, limits topologyLimits) (entryDelta, error) {
	var d entryDelta
	bad := func(what string) (entryDelta, error) {
		return entryDelta{}, fmt.Errorf("%w: topology delta: %s", ErrMalformed, what)
	}
	if len(b) < deltaFixedSize {
		return bad("short")
	}
	d.Name = PeerNameFromBin(b[:NameSize])
	b = b[NameSize:]
	d.UID = PeerUID(binary.BigEndian.Uint64(b))
	d.From = binary.BigEndian.Uint64(b[8:])
	d.To = binary.BigEndian.Uint64(b[16:])
	switch b[24] {
	case 0:
	case 1:
		d.HasShortID = true
	default:
		return bad("short ID flag")
	}
	d.ShortID = PeerShortID(binary.BigEndian.Uint16(b[25:]))
	nAdd, nDel := int(binary.BigEndian.Uint16(b[27:])), int(binary.BigEndian.Uint16(b[29:]))
	b = b[31:]
	if d.To <= d.From || d.UID == 0 {
		return bad("versions or UID")
	}
	if limits.MaxConnections > 0 && nAdd+nDel > limits.MaxConnections {
		return bad("too many connections")
	}
	if nAdd > 0 {
		d.Add = make([]connectionSummary, 0, min(nAdd, len(b)/(NameSize+3)))
	}
	for range nAdd {
		if len(b) < NameSize+3 {
			return bad("short connection")
		}
		c := connectionSummary{Name: PeerNameFromBin(b[:NameSize]), Outbound: b[NameSize]&1 != 0, Established: b[NameSize]&2 != 0}
		if b[NameSize]&^3 != 0 {
			return bad("connection flags")
		}
		n := int(binary.BigEndian.Uint16(b[NameSize+1:]))
		b = b[NameSize+3:]
		if n > maxAddrLen || n > len(b) {
			return bad("address")
		}
		c.RemoteTCPAddr = string(b[:n])
		b = b[n:]
		d.Add = append(d.Add, c)
	}
	if len(b) != nDel*NameSize {
		return bad("removed connections")
	}
	for i := range nDel {
		d.Del = append(d.Del, PeerNameFromBin(b[i*NameSize:(i+1)*NameSize]))
	}
	return d, nil
}

// deltaResult says what a delta can do to the topology.
type deltaResult int

const (
	// deltaApplies: the update built from the delta is to be merged.
	deltaApplies deltaResult = iota
	// deltaStale: our copy is already as new as the delta's result.
	deltaStale
	// deltaNoBase: our copy is not the version the delta starts from; the
	// whole entry is needed.
	deltaNoBase
	// deltaTooLarge: the entry built would list more connections than a
	// peer may report.
	deltaTooLarge
)

// deltaUpdate builds the entry the delta makes of our copy of the peer.
func (t *topology) deltaUpdate(d *entryDelta) (peerUpdate, deltaResult) {
	p := t.get(d.Name)
	if p == nil || p.isPlaceholder() || p.UID != d.UID {
		return peerUpdate{}, deltaNoBase
	}
	if p.Version >= d.To {
		return peerUpdate{}, deltaStale
	}
	if p.Version != d.From {
		return peerUpdate{}, deltaNoBase
	}
	// The connections kept: ours, but those removed or replaced. Both
	// lists are walked in name order, so this is linear however large the
	// entry and the delta.
	gone := make([]PeerName, 0, len(d.Del)+len(d.Add))
	gone = append(gone, d.Del...)
	for _, a := range d.Add {
		gone = append(gone, a.Name)
	}
	slices.Sort(gone)
	conns := make([]connectionSummary, 0, len(p.conns)+len(d.Add))
	k := 0
	for _, c := range p.conns {
		for k < len(gone) && gone[k] < c.Name {
			k++
		}
		if k < len(gone) && gone[k] == c.Name {
			continue
		}
		conns = append(conns, c)
	}
	conns = append(conns, d.Add...)
	conns = sortConnections(conns)
	if t.limits.MaxConnections > 0 && len(conns) > t.limits.MaxConnections {
		return peerUpdate{}, deltaTooLarge
	}
	u := peerUpdate{
		peerSummary: peerSummary{Name: p.Name, NickName: p.NickName, UID: p.UID, Version: d.To, ShortID: d.ShortID, HasShortID: d.HasShortID},
		Connections: conns,
	}
	return u, deltaApplies
}

// handleDelta merges a delta of an entry received from neighbour c (its
// own, or an answer to a pull), or asks c for the whole entry when our
// copy is not the delta's base. A delta that would make an entry larger
// than any peer may report breaks the protocol.
func (router *Router) handleDelta(c *LocalConnection, payload []byte) error {
	d, err := parseDelta(payload, router.limits)
	if err != nil {
		return err
	}
	router.Peers.mu.RLock()
	u, res := router.Peers.topo.deltaUpdate(&d)
	var have digestEntry
	if p := router.Peers.topo.get(d.Name); res == deltaNoBase && p != nil && !p.isPlaceholder() {
		have = digestEntry{Name: p.Name, UID: p.UID, Version: p.Version}
	}
	router.Peers.mu.RUnlock()
	switch res {
	case deltaTooLarge:
		return fmt.Errorf("%w: topology delta makes %s list more than %d connections", ErrMalformed, d.Name, router.limits.MaxConnections)
	case deltaApplies:
		router.mergeUpdates(c, []peerUpdate{u})
	case deltaNoBase:
		have.Name = d.Name
		c.q.pushPull([]digestEntry{have})
	}
	return nil
}
