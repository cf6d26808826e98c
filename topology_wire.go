package mesh

import (
	"fmt"
	"strings"
	"sync"

	"github.com/gossip-mesh/mesh/internal/gobint"
)

// A topology message (the payload of tagGossip on channel "topology") is a
// gob stream holding, for each peer, a peerSummary value followed by a
// []connectionSummary value. gob matches struct fields by name, so the
// field names are part of the wire format; the type ids are chosen by the
// sender and must be taken from the definitions in the stream.

// peerSummary is what the topology says about one peer.
type peerSummary struct {
	Name       PeerName // NameByte on the wire: NameSize bytes, big-endian
	NickName   string
	UID        PeerUID
	Version    uint64
	ShortID    PeerShortID
	HasShortID bool
}

// connectionSummary is one connection in a peer's topology entry.
type connectionSummary struct {
	Name          PeerName // NameByte on the wire
	RemoteTCPAddr string
	Outbound      bool
	Established   bool
}

// peerUpdate is one peer's topology entry with its connections.
type peerUpdate struct {
	peerSummary
	Connections []connectionSummary
	// connsSkipped is set when the decoder checked the connections but did
	// not keep them (nor the nickname), the entry being no newer than the
	// one held (see appendDecodedTopology).
	connsSkipped bool
}

// topologyLimits bounds what decodeTopology accepts. A limit that is zero
// or negative is not enforced (the input size still bounds everything).
type topologyLimits struct {
	MaxPeers       int // peer entries per message
	MaxConnections int // connections per peer
}

// entryBound is the most entries a topology holds, and so bounds what is
// remembered per entry: MaxPeers, or DefaultMaxPeers when not set.
func (l topologyLimits) entryBound() int { return orInt(l.MaxPeers, DefaultMaxPeers) }

// The type definitions weave sends, byte for byte (with their message
// counts): peerSummary is type 65, connectionSummary 66 and
// []connectionSummary 67.
const (
	topoPeerSummaryDef = "\x62\xff\x81\x03\x01\x01\x0bpeerSummary\x01\xff\x82\x00\x01\x06" +
		"\x01\x08NameByte\x01\x0a\x00" +
		"\x01\x08NickName\x01\x0c\x00" +
		"\x01\x03UID\x01\x06\x00" +
		"\x01\x07Version\x01\x06\x00" +
		"\x01\x07ShortID\x01\x06\x00" +
		"\x01\x0aHasShortID\x01\x02\x00" +
		"\x00\x00"
	topoConnSliceDef   = "\x0d\xff\x85\x02\x01\x02\xff\x86\x00\x01\xff\x84\x00\x00"
	topoConnSummaryDef = "\x5b\xff\x83\x03\x01\x01\x11connectionSummary\x01\xff\x84\x00\x01\x04" +
		"\x01\x08NameByte\x01\x0a\x00" +
		"\x01\x0dRemoteTCPAddr\x01\x0c\x00" +
		"\x01\x08Outbound\x01\x02\x00" +
		"\x01\x0bEstablished\x01\x02\x00" +
		"\x00\x00"

	// Type ids of peerSummary (65) and []connectionSummary (67) as gob ints.
	topoPeerSummaryID = "\xff\x82"
	topoConnSliceID   = "\xff\x86"

	// maxNameByteLen is the longest NameByte accepted; PeerNameFromBin
	// keeps the last NameSize bytes.
	maxNameByteLen = 8
	// maxTopologyTypes bounds the type definitions in one topology stream.
	maxTopologyTypes = 32
)

// appendTopology appends a gob stream holding every peer of peers with its
// connections, byte-identical to what weave sends for the same values. It
// allocates nothing when dst has enough capacity.
func appendTopology(dst []byte, peers []peerUpdate) []byte {
	for i := range peers {
		p := &peers[i]
		if i == 0 {
			dst = append(dst, topoPeerSummaryDef...)
		}
		dst = appendPeerSummary(dst, &p.peerSummary)
		if i == 0 {
			dst = append(dst, topoConnSliceDef...)
			dst = append(dst, topoConnSummaryDef...)
		}
		dst = appendConnSummaries(dst, p.Connections)
	}
	return dst
}

// topologySizeBound returns at least the size of the messages of at most
// maxPeersPerTopologyMessage entries appendTopology makes of peers, so
// that an encoder can size its buffer once.
func topologySizeBound(peers []peerUpdate) int {
	const (
		peerBound = 64 // a peerSummary but its nickname, and a connection list's header
		connBound = 24 // a connectionSummary but its address
	)
	messages := (len(peers) + maxPeersPerTopologyMessage - 1) / maxPeersPerTopologyMessage
	n := messages * (len(topoPeerSummaryDef) + len(topoConnSliceDef) + len(topoConnSummaryDef))
	for i := range peers {
		p := &peers[i]
		n += peerBound + len(p.NickName) + connBound*len(p.Connections)
		for j := range p.Connections {
			n += len(p.Connections[j].RemoteTCPAddr)
		}
	}
	return n
}

// appendPeerSummary appends a peerSummary value message. Zero fields are
// omitted, as gob does; NameByte is always NameSize bytes and so always
// sent.
func appendPeerSummary(dst []byte, p *peerSummary) []byte {
	size := len(topoPeerSummaryID) + 2 + NameSize + 1
	if p.NickName != "" {
		size += 1 + gobint.Len(uint64(len(p.NickName))) + len(p.NickName)
	}
	if p.UID != 0 {
		size += 1 + gobint.Len(uint64(p.UID))
	}
	if p.Version != 0 {
		size += 1 + gobint.Len(p.Version)
	}
	if p.ShortID != 0 {
		size += 1 + gobint.Len(uint64(p.ShortID))
	}
	if p.HasShortID {
		size += 2
	}
	dst = gobint.AppendUint(dst, uint64(size))
	dst = append(dst, topoPeerSummaryID...)
	// Fields are numbered from 1 here; each is preceded by the difference
	// from the previous field's number.
	dst = append(dst, 1, NameSize)
	dst = p.Name.appendBin(dst)
	last := byte(1)
	if p.NickName != "" {
		dst = append(dst, 2-last)
		dst = gobint.AppendUint(dst, uint64(len(p.NickName)))
		dst = append(dst, p.NickName...)
		last = 2
	}
	if p.UID != 0 {
		dst = append(dst, 3-last)
		dst = gobint.AppendUint(dst, uint64(p.UID))
		last = 3
	}
	if p.Version != 0 {
		dst = append(dst, 4-last)
		dst = gobint.AppendUint(dst, p.Version)
		last = 4
	}
	if p.ShortID != 0 {
		dst = append(dst, 5-last)
		dst = gobint.AppendUint(dst, uint64(p.ShortID))
		last = 5
	}
	if p.HasShortID {
		dst = append(dst, 6-last, 1)
	}
	return append(dst, 0)
}

// connSummaryLen returns the encoded size of one connectionSummary struct.
func connSummaryLen(c *connectionSummary) int {
	n := 1 + 1 + NameSize + 1
	if c.RemoteTCPAddr != "" {
		n += 1 + gobint.Len(uint64(len(c.RemoteTCPAddr))) + len(c.RemoteTCPAddr)
	}
	if c.Outbound {
		n += 2
	}
	if c.Established {
		n += 2
	}
	return n
}

// appendConnSummaries appends a []connectionSummary value message. An
// empty slice is still sent, with length zero.
func appendConnSummaries(dst []byte, conns []connectionSummary) []byte {
	size := len(topoConnSliceID) + 1 + gobint.Len(uint64(len(conns)))
	for i := range conns {
		size += connSummaryLen(&conns[i])
	}
	dst = gobint.AppendUint(dst, uint64(size))
	dst = append(dst, topoConnSliceID...)
	dst = append(dst, 0)
	dst = gobint.AppendUint(dst, uint64(len(conns)))
	for i := range conns {
		c := &conns[i]
		dst = append(dst, 1, NameSize)
		dst = c.Name.appendBin(dst)
		last := byte(1)
		if c.RemoteTCPAddr != "" {
			dst = append(dst, 2-last)
			dst = gobint.AppendUint(dst, uint64(len(c.RemoteTCPAddr)))
			dst = append(dst, c.RemoteTCPAddr...)
			last = 2
		}
		if c.Outbound {
			dst = append(dst, 3-last, 1)
			last = 3
		}
		if c.Established {
			dst = append(dst, 4-last, 1)
		}
		dst = append(dst, 0)
	}
	return dst
}

// topoField identifies a struct field the topology decoder knows by name.
type topoField uint8

const (
	topoFieldOther topoField = iota
	topoFieldNameByte
	topoFieldNickName
	topoFieldUID
	topoFieldVersion
	topoFieldShortID
	topoFieldHasShortID
	topoFieldRemoteTCPAddr
	topoFieldOutbound
	topoFieldEstablished
)

// topoFieldByName returns the field a name refers to.
func topoFieldByName(name []byte) topoField {
	switch string(name) {
	case "NameByte":
		return topoFieldNameByte
	case "NickName":
		return topoFieldNickName
	case "UID":
		return topoFieldUID
	case "Version":
		return topoFieldVersion
	case "ShortID":
		return topoFieldShortID
	case "HasShortID":
		return topoFieldHasShortID
	case "RemoteTCPAddr":
		return topoFieldRemoteTCPAddr
	case "Outbound":
		return topoFieldOutbound
	case "Established":
		return topoFieldEstablished
	}
	return topoFieldOther
}

// topoFieldType is the gob type each known field must have on the wire.
var topoFieldType = [...]int64{
	topoFieldNameByte:      gobTypeBytes,
	topoFieldNickName:      gobTypeString,
	topoFieldUID:           gobTypeUint,
	topoFieldVersion:       gobTypeUint,
	topoFieldShortID:       gobTypeUint,
	topoFieldHasShortID:    gobTypeBool,
	topoFieldRemoteTCPAddr: gobTypeString,
	topoFieldOutbound:      gobTypeBool,
	topoFieldEstablished:   gobTypeBool,
}

// topoRole says which Go struct a wire struct is decoded into.
type topoRole uint8

const (
	topoRolePeer topoRole = iota
	topoRoleConn
)

// has reports whether the struct of the role has field f.
func (r topoRole) has(f topoField) bool {
	switch f {
	case topoFieldNameByte:
		return true
	case topoFieldNickName, topoFieldUID, topoFieldVersion, topoFieldShortID, topoFieldHasShortID:
		return r == topoRolePeer
	case topoFieldRemoteTCPAddr, topoFieldOutbound, topoFieldEstablished:
		return r == topoRoleConn
	}
	return false
}

// topoFieldDef is a struct field of a received type definition.
type topoFieldDef struct {
	field topoField
	typ   int64
}

// topoType is a received type definition.
type topoType struct {
	id          int64
	kind        gobWireKind
	elem        int64
	first, last int // the struct's fields in topoDecoder.fields
}

// topoDecoder holds the state of one decodeTopology call.
type topoDecoder struct {
	types  []topoType
	fields []topoFieldDef
	raw    []gobFieldDef // scratch for parseWireType
	addrs  [][]byte      // scratch: the current peer's RemoteTCPAddr bytes
	// spare holds the connections of an entry that is checked but not
	// kept (see decodeConns).
	spare []connectionSummary
}

// define records the type definition in d (positioned after the id).
func (td *topoDecoder) define(id int64, d *rawDecoder) error {
	if td.lookup(id) != nil {
		return fmt.Errorf("%w: gob type %d defined twice", ErrMalformed, id)
	}
	if len(td.types) >= maxTopologyTypes {
		return fmt.Errorf("%w: more than %d gob type definitions", ErrMalformed, maxTopologyTypes)
	}
	wt, raw, err := parseWireType(d, td.raw[:0])
	td.raw = raw
	if err != nil {
		return err
	}
	t := topoType{id: id, kind: wt.Kind, elem: wt.Elem, first: len(td.fields)}
	if wt.Kind == gobKindStruct {
		for _, f := range raw {
			td.fields = append(td.fields, topoFieldDef{field: topoFieldByName(f.Name), typ: f.Type})
		}
	}
	t.last = len(td.fields)
	td.types = append(td.types, t)
	return nil
}

// lookup returns the definition of id, or nil.
func (td *topoDecoder) lookup(id int64) *topoType {
	for i := range td.types {
		if td.types[i].id == id {
			return &td.types[i]
		}
	}
	return nil
}

// structFields returns the fields of the struct type id after checking, as
// gob does, that it can be decoded into the struct of the role: it must be
// a struct, the fields the role knows must have the right wire types and
// at least one of them must be present.
func (td *topoDecoder) structFields(id int64, role topoRole) ([]topoFieldDef, error) {
	t := td.lookup(id)
	if t == nil {
		return nil, fmt.Errorf("%w: gob type %d used before its definition", ErrMalformed, id)
	}
	if t.kind != gobKindStruct {
		return nil, fmt.Errorf("%w: gob type %d is not a struct", ErrMalformed, id)
	}
	fields := td.fields[t.first:t.last]
	matched := false
	for _, f := range fields {
		if !role.has(f.field) {
			continue
		}
		if f.typ != topoFieldType[f.field] {
			return nil, fmt.Errorf("%w: topology field of type %d where type %d was expected",
				ErrMalformed, f.typ, topoFieldType[f.field])
		}
		matched = true
	}
	if !matched {
		return nil, fmt.Errorf("%w: gob type %d has no topology fields", ErrMalformed, id)
	}
	return fields, nil
}

// nextField reads a field delta of a struct value with the given fields.
// It returns the field, or ok false at the end of the struct.
func nextField(d *rawDecoder, fields []topoFieldDef, pos *int) (f topoFieldDef, ok bool, err error) {
	delta, err := d.uint()
	if err != nil || delta == 0 {
		return f, false, err
	}
	if delta > uint64(len(fields)-*pos) {
		return f, false, errGobFieldRange
	}
	*pos += int(delta)
	return fields[*pos-1], true, nil
}

// readNameByte reads a NameByte field.
func readNameByte(d *rawDecoder) (PeerName, error) {
	p, err := d.bytes(maxNameByteLen)
	if err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, fmt.Errorf("%w: empty NameByte", ErrMalformed)
	}
	return PeerNameFromBin(p), nil
}

// decodePeer decodes a peerSummary value of type id into p and returns the
// nickname bytes (aliasing the input).
func (td *topoDecoder) decodePeer(id int64, d *rawDecoder, p *peerSummary) (nick []byte, err error) {
	fields, err := td.structFields(id, topoRolePeer)
	if err != nil {
		return nil, err
	}
	named := false
	pos := 0
	for {
		f, ok, err := nextField(d, fields, &pos)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var v uint64
		switch f.field {
		case topoFieldNameByte:
			p.Name, err = readNameByte(d)
			named = true
		case topoFieldNickName:
			nick, err = d.bytes(maxNickNameLen)
		case topoFieldUID:
			v, err = d.uint()
			p.UID = PeerUID(v)
		case topoFieldVersion:
			p.Version, err = d.uint()
		case topoFieldShortID:
			v, err = d.uint()
			if err == nil && v > 0xffff {
				err = fmt.Errorf("%w: ShortID %d out of range", ErrMalformed, v)
			}
			p.ShortID = PeerShortID(v)
		case topoFieldHasShortID:
			v, err = d.uint()
			p.HasShortID = v != 0
		default:
			err = d.skipBasic(f.typ)
		}
		if err != nil {
			return nil, err
		}
	}
	if !named {
		return nil, fmt.Errorf("%w: peer summary without NameByte", ErrMalformed)
	}
	return nick, nil
}

// decodeConns decodes a []connectionSummary value of type id. The
// RemoteTCPAddr bytes are left in td.addrs (aliasing the input). Without
// keep, the value is checked all the same, but decoded into td.spare and
// nil is returned.
func (td *topoDecoder) decodeConns(id int64, d *rawDecoder, limit int, keep bool) ([]connectionSummary, error) {
	td.addrs = td.addrs[:0]
	t := td.lookup(id)
	if t == nil {
		return nil, fmt.Errorf("%w: gob type %d used before its definition", ErrMalformed, id)
	}
	if t.kind != gobKindSlice {
		return nil, fmt.Errorf("%w: gob type %d is not a slice", ErrMalformed, id)
	}
	fields, err := td.structFields(t.elem, topoRoleConn)
	if err != nil {
		return nil, err
	}
	if delta, err := d.uint(); err != nil {
		return nil, err
	} else if delta != 0 {
		return nil, errGobSingleton
	}
	n, err := d.uint()
	if err != nil {
		return nil, err
	}
	// Every element takes at least four bytes: a NameByte field of one
	// byte or more and the end of the struct.
	if n > uint64(d.remaining()/4) {
		return nil, errGobTruncated
	}
	if limit > 0 && n > uint64(limit) {
		return nil, fmt.Errorf("%w: %d connections, more than %d", ErrMalformed, n, limit)
	}
	if n == 0 {
		return nil, nil
	}
	// n is trusted as far as the limit and the input size bound it (every
	// element takes at least four bytes); without a limit, the slice grows
	// as elements are decoded.
	var conns []connectionSummary
	if keep {
		size := n
		if limit <= 0 {
			size = min(n, 64)
		}
		conns = make([]connectionSummary, 0, size)
	} else {
		conns = td.spare[:0]
	}
	for range n {
		conns = append(conns, connectionSummary{})
		c := &conns[len(conns)-1]
		var addr []byte
		named := false
		pos := 0
		for {
			f, ok, err := nextField(d, fields, &pos)
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			var v uint64
			switch f.field {
			case topoFieldNameByte:
				c.Name, err = readNameByte(d)
				named = true
			case topoFieldRemoteTCPAddr:
				addr, err = d.bytes(maxAddrLen)
			case topoFieldOutbound:
				v, err = d.uint()
				c.Outbound = v != 0
			case topoFieldEstablished:
				v, err = d.uint()
				c.Established = v != 0
			default:
				err = d.skipBasic(f.typ)
			}
			if err != nil {
				return nil, err
			}
		}
		if !named {
			return nil, fmt.Errorf("%w: connection summary without NameByte", ErrMalformed)
		}
		td.addrs = append(td.addrs, addr)
	}
	if !keep {
		td.spare = conns[:0]
		return nil, nil
	}
	return conns, nil
}

// setStrings copies the nickname and the connection addresses of p into
// one new string, so that the result does not alias the input and costs a
// single allocation.
func (td *topoDecoder) setStrings(p *peerUpdate, nick []byte) {
	total := len(nick)
	for _, a := range td.addrs {
		total += len(a)
	}
	if total == 0 {
		return
	}
	var sb strings.Builder
	sb.Grow(total)
	sb.Write(nick)
	for _, a := range td.addrs {
		sb.Write(a)
	}
	s := sb.String()
	if len(nick) > 0 {
		p.NickName = s[:len(nick)]
	}
	off := len(nick)
	for i, a := range td.addrs {
		if len(a) > 0 {
			p.Connections[i].RemoteTCPAddr = s[off : off+len(a)]
			off += len(a)
		}
	}
}

// decodeTopology decodes a topology message. Type ids are taken from the
// definitions in the stream, which may appear anywhere before their first
// use; struct fields are matched by name and fields it does not know are
// skipped when they have a basic type. The strings in the result do not
// alias b.
func decodeTopology(b []byte, lim topologyLimits) ([]peerUpdate, error) {
	return appendDecodedTopology(nil, b, lim, nil)
}

// topoDecoders recycles decoders with their scratch lists: a busy router
// decodes topology messages all the time.
var topoDecoders = sync.Pool{New: func() any { return new(topoDecoder) }}

// appendDecodedTopology is decodeTopology, appending the entries to peers.
// When old is not nil, it is asked about each entry once its summary is
// decoded: for an entry it reports as no newer than the one held, the
// connections are checked but not kept, and neither is the nickname (the
// update has connsSkipped set). Most entries a busy router receives are
// copies of what it has, and those then cost no allocation.
func appendDecodedTopology(peers []peerUpdate, b []byte, lim topologyLimits, old func(peerSummary) bool) ([]peerUpdate, error) {
	td := topoDecoders.Get().(*topoDecoder)
	defer func() {
		if cap(td.types) <= maxTopologyTypes && cap(td.fields) <= 64 && cap(td.raw) <= 64 && cap(td.addrs) <= 1024 && cap(td.spare) <= 1024 {
			// Nothing kept may point into a message.
			clear(td.types[:cap(td.types)])
			clear(td.fields[:cap(td.fields)])
			clear(td.raw[:cap(td.raw)])
			clear(td.addrs[:cap(td.addrs)])
			clear(td.spare[:cap(td.spare)])
			td.types, td.fields, td.raw, td.addrs = td.types[:0], td.fields[:0], td.raw[:0], td.addrs[:0]
			topoDecoders.Put(td)
		}
	}()
	td.types, td.fields, td.raw, td.addrs = td.types[:0], td.fields[:0], td.raw[:0], td.addrs[:0]

	var (
		cur      peerUpdate
		nick     []byte
		havePeer bool
		// Like gob, refuse definitions that no value follows.
		pendingDefs bool
	)
	r := newGobReader(b)
	for r.remaining() > 0 {
		body, err := r.next()
		if err != nil {
			return nil, err
		}
		d := rawDecoder{b: body}
		id, isDef, err := parseDefinitionHeader(&d)
		if err != nil {
			return nil, err
		}
		switch {
		case isDef:
			if err := td.define(id, &d); err != nil {
				return nil, err
			}
			pendingDefs = true
			continue
		case !havePeer:
			if lim.MaxPeers > 0 && len(peers) >= lim.MaxPeers {
				return nil, fmt.Errorf("%w: more than %d peers in a topology message", ErrMalformed, lim.MaxPeers)
			}
			cur = peerUpdate{}
			if nick, err = td.decodePeer(id, &d, &cur.peerSummary); err != nil {
				return nil, err
			}
			cur.connsSkipped = old != nil && old(cur.peerSummary)
			havePeer = true
		default:
			if cur.Connections, err = td.decodeConns(id, &d, lim.MaxConnections, !cur.connsSkipped); err != nil {
				return nil, err
			}
			havePeer = false
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		pendingDefs = false
		if !havePeer {
			if !cur.connsSkipped {
				td.setStrings(&cur, nick)
			}
			peers = append(peers, cur)
		}
	}
	if havePeer {
		return nil, fmt.Errorf("%w: peer summary without its connections", ErrMalformed)
	}
	if pendingDefs {
		return nil, fmt.Errorf("%w: gob type definition without a value", ErrMalformed)
	}
	return peers, nil
}
