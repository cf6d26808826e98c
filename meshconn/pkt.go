package meshconn

import (
	"bytes"
	"math"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/internal/gobint"
)

// pkt is one datagram as it travels in a unicast message, with the same
// field names as weave's meshconn, so that the two decode each other's
// datagrams.
type pkt struct {
	SrcName mesh.PeerName
	SrcUID  mesh.PeerUID
	Buf     []byte
}

// The wire format is what encoding/gob writes when a fresh encoder encodes
// one pkt, as weave's meshconn does: two gob messages, each a byte count
// (gob unsigned integer) followed by that many bytes.
//
// The first defines the struct type: its id, negated, as a gob signed
// integer, then the wireType of the definition:
//
//	03                  field delta to wireType.StructT
//	01                  field delta to structType.CommonType
//	01 len name         CommonType.Name, the Go type's name ("pkt")
//	01 id               CommonType.Id, as a gob signed integer
//	00                  end of CommonType
//	01 03               structType.Field, a slice of three fieldTypes:
//	01 07 "SrcName" 01 06 00    name, type 3 (uint) as a signed integer
//	01 06 "SrcUID"  01 06 00
//	01 03 "Buf"     01 0a 00    type 5 ([]byte)
//	00 00               end of structType and of wireType
//
// The second holds the value: the type id again, then the fields that are
// not zero, each as a field delta (from -1 for the first) and the value,
// then a zero delta. gob numbers user types from 64 in the order a process
// first encodes them, so the id can be any in [64, MaxInt32], and the name
// can be any (gob ignores it); the decoder takes any id, and names of up to
// maxTypeNameLen bytes. Everything else is fixed: the decoder accepts only
// the bytes gob's encoder writes, which makes the encoding canonical:
// encoding what was decoded, with the same type id and name, gives back the
// same bytes.

// gobFirstUserType is the first type id gob gives a user type.
const gobFirstUserType = 64

// pktTypeID and pktTypeName are what encode writes: the id gob gives the
// first type a process encodes, and the name of weave's type.
const (
	pktTypeID   = gobFirstUserType
	pktTypeName = "pkt"
)

// maxTypeNameLen bounds the length of the type name in a definition.
const maxTypeNameLen = 1024

// pktFields is the end of a type definition after CommonType's Id: the end
// of CommonType, the three fields and the end of structType and wireType.
var pktFields = []byte("\x00" +
	"\x01\x03" +
	"\x01\x07SrcName\x01\x06\x00" +
	"\x01\x06SrcUID\x01\x06\x00" +
	"\x01\x03Buf\x01\x0a\x00" +
	"\x00\x00")

// malformedError reports a datagram that cannot be decoded. It matches
// mesh.ErrMalformed, and cause when not nil.
type malformedError struct {
	what  string
	cause error
}

func (e *malformedError) Error() string { return "meshconn: malformed datagram: " + e.what }

func (e *malformedError) Is(target error) bool {
	return target == mesh.ErrMalformed || (e.cause != nil && target == e.cause)
}

var (
	errTruncated    = &malformedError{what: "truncated"}
	errTrailing     = &malformedError{what: "trailing bytes"}
	errBadUint      = &malformedError{what: "invalid or non-minimal gob unsigned integer"}
	errEmptyMessage = &malformedError{what: "empty gob message"}
	errTypeID       = &malformedError{what: "gob type id out of range"}
	errTypeDef      = &malformedError{what: "not the definition of weave's pkt struct"}
	errTypeName     = &malformedError{what: "empty or too long type name"}
	errValueType    = &malformedError{what: "value of another type than the one defined"}
	errFieldDelta   = &malformedError{what: "invalid field number"}
	errZeroField    = &malformedError{what: "zero value sent for a field"}
	errTooLarge     = &malformedError{what: "datagram larger than MaxDatagramSize", cause: ErrDatagramTooLarge}
)

// defBodyLen returns the length of the body of a type definition message.
func defBodyLen(typeID int64, name string) int {
	return gobint.Len(gobint.IntToUint(-typeID)) + 3 + gobint.Len(uint64(len(name))) + len(name) +
		1 + gobint.Len(gobint.IntToUint(typeID)) + len(pktFields)
}

// valueBodyLen returns the length of the body of the value message of p.
func valueBodyLen(p *pkt, typeID int64) int {
	n := gobint.Len(gobint.IntToUint(typeID)) + 1
	if p.SrcName != 0 {
		n += 1 + gobint.Len(uint64(p.SrcName))
	}
	if p.SrcUID != 0 {
		n += 1 + gobint.Len(uint64(p.SrcUID))
	}
	if len(p.Buf) > 0 {
		n += 1 + gobint.Len(uint64(len(p.Buf))) + len(p.Buf)
	}
	return n
}

// encodedLen returns the length of the encoding of p.
func encodedLen(p *pkt, typeID int64, name string) int {
	def, val := defBodyLen(typeID, name), valueBodyLen(p, typeID)
	return gobint.Len(uint64(def)) + def + gobint.Len(uint64(val)) + val
}

// appendPkt appends the encoding of p as gob writes it when the struct's
// type id is typeID, in [64, MaxInt32], and its name is name, not empty.
func appendPkt(dst []byte, p *pkt, typeID int64, name string) []byte {
	dst = gobint.AppendUint(dst, uint64(defBodyLen(typeID, name)))
	dst = gobint.AppendUint(dst, gobint.IntToUint(-typeID))
	dst = append(dst, 3, 1, 1)
	dst = gobint.AppendUint(dst, uint64(len(name)))
	dst = append(dst, name...)
	dst = append(dst, 1)
	dst = gobint.AppendUint(dst, gobint.IntToUint(typeID))
	dst = append(dst, pktFields...)

	dst = gobint.AppendUint(dst, uint64(valueBodyLen(p, typeID)))
	dst = gobint.AppendUint(dst, gobint.IntToUint(typeID))
	delta := byte(1)
	if p.SrcName != 0 {
		dst = append(dst, delta)
		dst = gobint.AppendUint(dst, uint64(p.SrcName))
		delta = 0
	}
	delta++
	if p.SrcUID != 0 {
		dst = append(dst, delta)
		dst = gobint.AppendUint(dst, uint64(p.SrcUID))
		delta = 0
	}
	delta++
	if len(p.Buf) > 0 {
		dst = append(dst, delta)
		dst = gobint.AppendUint(dst, uint64(len(p.Buf)))
		dst = append(dst, p.Buf...)
	}
	return append(dst, 0)
}

// encode returns the encoding of p, as weave's meshconn writes it, in a
// slice of its own.
func (p *pkt) encode() []byte {
	return appendPkt(make([]byte, 0, encodedLen(p, pktTypeID, pktTypeName)), p, pktTypeID, pktTypeName)
}

// reader reads gob primitives from a buffer, with bounds checks.
type reader struct {
	b   []byte
	off int
}

func (r *reader) remaining() int { return len(r.b) - r.off }

// uint reads a gob unsigned integer, which must be in its minimal form,
// the only one gob writes.
func (r *reader) uint() (uint64, error) {
	v, n, err := gobint.Uint(r.b[r.off:])
	switch {
	case err == gobint.ErrTruncated:
		return 0, errTruncated
	case err != nil || n != gobint.Len(v):
		return 0, errBadUint
	}
	r.off += n
	return v, nil
}

// int reads a gob signed integer.
func (r *reader) int() (int64, error) {
	u, err := r.uint()
	return gobint.UintToInt(u), err
}

// typeID reads the id of a user type: positive, or negative when defined.
func (r *reader) typeID(defined bool) (int64, error) {
	v, err := r.int()
	if err != nil {
		return 0, err
	}
	if defined {
		if v == math.MinInt64 {
			return 0, errTypeID
		}
		v = -v
	}
	if v < gobFirstUserType || v > math.MaxInt32 {
		return 0, errTypeID
	}
	return v, nil
}

// length reads a length, which must be at most the bytes remaining.
func (r *reader) length() (int, error) {
	n, err := r.uint()
	if err != nil {
		return 0, err
	}
	if n > uint64(r.remaining()) {
		return 0, errTruncated
	}
	return int(n), nil
}

// message reads the count of a gob message and returns a reader of its
// body.
func (r *reader) message() (reader, error) {
	n, err := r.length()
	if err != nil {
		return reader{}, err
	}
	if n == 0 {
		return reader{}, errEmptyMessage
	}
	body := reader{b: r.b[r.off : r.off+n]}
	r.off += n
	return body, nil
}

// expect reads len(want) bytes, which must be want.
func (r *reader) expect(want []byte, err error) error {
	if r.remaining() < len(want) {
		return errTruncated
	}
	if !bytes.Equal(r.b[r.off:r.off+len(want)], want) {
		return err
	}
	r.off += len(want)
	return nil
}

// end checks that every byte has been read.
func (r *reader) end() error {
	if r.remaining() != 0 {
		return errTrailing
	}
	return nil
}

// wireType is what the type definition of a datagram says: the only parts
// that vary between encoders.
type wireType struct {
	id   int64
	name []byte // aliases the decoded message
}

// decodeWire decodes msg, checking every length against the bytes left
// before using it. The payload, p.Buf, aliases msg; nothing is allocated.
func decodeWire(msg []byte) (pkt, wireType, error) {
	var (
		p  pkt
		wt wireType
	)
	r := reader{b: msg}
	def, err := r.message()
	if err != nil {
		return p, wt, err
	}
	if wt.id, err = def.typeID(true); err != nil {
		return p, wt, err
	}
	if err := def.expect([]byte{3, 1, 1}, errTypeDef); err != nil {
		return p, wt, err
	}
	n, err := def.length()
	if err != nil {
		return p, wt, err
	}
	if n == 0 || n > maxTypeNameLen {
		return p, wt, errTypeName
	}
	wt.name = def.b[def.off : def.off+n : def.off+n]
	def.off += n
	if err := def.expect([]byte{1}, errTypeDef); err != nil {
		return p, wt, err
	}
	if id, err := def.typeID(false); err != nil {
		return p, wt, err
	} else if id != wt.id {
		return p, wt, errTypeDef
	}
	if err := def.expect(pktFields, errTypeDef); err != nil {
		return p, wt, err
	}
	if err := def.end(); err != nil {
		return p, wt, err
	}

	val, err := r.message()
	if err != nil {
		return p, wt, err
	}
	if err := r.end(); err != nil {
		return p, wt, err
	}
	if id, err := val.typeID(false); err != nil {
		return p, wt, err
	} else if id != wt.id {
		return p, wt, errValueType
	}
	field := -1
	for {
		delta, err := val.uint()
		if err != nil {
			return p, wt, err
		}
		if delta == 0 {
			break
		}
		if delta > 3 || field+int(delta) > 2 {
			return p, wt, errFieldDelta
		}
		field += int(delta)
		switch field {
		case 0, 1:
			v, err := val.uint()
			if err != nil {
				return p, wt, err
			}
			if v == 0 {
				return p, wt, errZeroField
			}
			if field == 0 {
				p.SrcName = mesh.PeerName(v)
			} else {
				p.SrcUID = mesh.PeerUID(v)
			}
		case 2:
			n, err := val.length()
			if err != nil {
				return p, wt, err
			}
			if n == 0 {
				return p, wt, errZeroField
			}
			if n > MaxDatagramSize {
				return p, wt, errTooLarge
			}
			p.Buf = val.b[val.off : val.off+n : val.off+n]
			val.off += n
		}
	}
	if err := val.end(); err != nil {
		return p, wt, err
	}
	return p, wt, nil
}

// decodePkt decodes a message received from the network, which may be
// anything: lengths are checked against the bytes present before use, a
// payload is at most MaxDatagramSize bytes, and malformed input, trailing
// bytes included, is an error that matches mesh.ErrMalformed. The only
// allocation is the copy of the payload.
func decodePkt(msg []byte) (pkt, error) {
	p, _, err := decodeWire(msg)
	if err != nil {
		return pkt{}, err
	}
	if p.Buf != nil {
		buf := make([]byte, len(p.Buf))
		copy(buf, p.Buf)
		p.Buf = buf
	}
	return p, nil
}
