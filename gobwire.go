package mesh

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/gossip-mesh/mesh/internal/gobint"
)

// This file holds the subset of Go's gob encoding that the weave mesh
// protocol uses, written by hand so that encoding allocates nothing and
// decoding of untrusted input is fully bounded.
//
// A gob stream is a sequence of messages. Each message is a byte count
// (gob unsigned integer) followed by that many bytes: a type id (gob signed
// integer) and then either a type definition (negative id) or a value of
// that type. Values of types that are not structs start with a zero byte
// (the "singleton" field delta).

// Type ids of gob's predefined types.
const (
	gobTypeBool    = 1
	gobTypeInt     = 2
	gobTypeUint    = 3
	gobTypeFloat   = 4
	gobTypeBytes   = 5
	gobTypeString  = 6
	gobTypeComplex = 7

	// gobFirstUserType is the first id gob assigns to a user type.
	gobFirstUserType = 64
	// gobMaxTypeID is the largest type id gob can express (ids are int32).
	gobMaxTypeID = math.MaxInt32
)

// Errors returned by the gob decoders. All wrap ErrMalformed.
var (
	errGobTruncated     = fmt.Errorf("%w: truncated gob data", ErrMalformed)
	errGobBadUint       = fmt.Errorf("%w: invalid gob unsigned integer", ErrMalformed)
	errGobEmptyMessage  = fmt.Errorf("%w: empty gob message", ErrMalformed)
	errGobExtraData     = fmt.Errorf("%w: extra data in gob message", ErrMalformed)
	errGobSingleton     = fmt.Errorf("%w: non-zero field delta for a gob singleton value", ErrMalformed)
	errGobTooLong       = fmt.Errorf("%w: gob string or byte slice too long", ErrMalformed)
	errGobTypeRange     = fmt.Errorf("%w: gob type id out of range", ErrMalformed)
	errGobFieldRange    = fmt.Errorf("%w: gob field number out of range", ErrMalformed)
	errGobBadDefinition = fmt.Errorf("%w: unsupported gob type definition", ErrMalformed)
)

// appendRawInt appends v in gob's signed integer encoding.
func appendRawInt(dst []byte, v int64) []byte {
	return gobint.AppendUint(dst, gobint.IntToUint(v))
}

// appendGobUint appends one complete gob message holding the unsigned
// integer v: count, type id 3, singleton delta, value.
func appendGobUint(dst []byte, v uint64) []byte {
	dst = gobint.AppendUint(dst, uint64(2+gobint.Len(v)))
	dst = append(dst, gobTypeUint<<1, 0)
	return gobint.AppendUint(dst, v)
}

// appendGobString appends one complete gob message holding the string s:
// count, type id 6, singleton delta, length, bytes.
func appendGobString(dst []byte, s string) []byte {
	n := uint64(len(s))
	dst = gobint.AppendUint(dst, 2+uint64(gobint.Len(n))+n)
	dst = append(dst, gobTypeString<<1, 0)
	dst = gobint.AppendUint(dst, n)
	return append(dst, s...)
}

// appendGobBytes appends one complete gob message holding the byte slice p:
// count, type id 5, singleton delta, length, bytes.
func appendGobBytes(dst []byte, p []byte) []byte {
	n := uint64(len(p))
	dst = gobint.AppendUint(dst, 2+uint64(gobint.Len(n))+n)
	dst = append(dst, gobTypeBytes<<1, 0)
	dst = gobint.AppendUint(dst, n)
	return append(dst, p...)
}

// rawDecoder reads gob primitives from the inside of one message.
type rawDecoder struct {
	b   []byte
	off int
}

// remaining returns the number of unread bytes.
func (d *rawDecoder) remaining() int { return len(d.b) - d.off }

// uint reads a gob unsigned integer. Like gob itself it accepts encodings
// that are longer than necessary.
func (d *rawDecoder) uint() (uint64, error) {
	v, n, err := gobint.Uint(d.b[d.off:])
	switch err {
	case nil:
		d.off += n
		return v, nil
	case gobint.ErrTruncated:
		return 0, errGobTruncated
	default:
		return 0, errGobBadUint
	}
}

// int reads a gob signed integer.
func (d *rawDecoder) int() (int64, error) {
	u, err := d.uint()
	return gobint.UintToInt(u), err
}

// typeID reads a type id (a gob int that must fit gob's int32 type ids).
func (d *rawDecoder) typeID() (int64, error) {
	v, err := d.int()
	if err != nil {
		return 0, err
	}
	if v < -gobMaxTypeID || v > gobMaxTypeID {
		return 0, errGobTypeRange
	}
	return v, nil
}

// bytes reads a length-prefixed byte string of at most max bytes (none if
// max is negative). The result aliases the decoder's buffer.
func (d *rawDecoder) bytes(max int) ([]byte, error) {
	n, err := d.uint()
	if err != nil {
		return nil, err
	}
	if n > uint64(d.remaining()) {
		return nil, errGobTruncated
	}
	if max < 0 || n > uint64(max) {
		return nil, errGobTooLong
	}
	p := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return p, nil
}

// end reports an error unless every byte has been read.
func (d *rawDecoder) end() error {
	if d.off != len(d.b) {
		return errGobExtraData
	}
	return nil
}

// skipBasic reads and discards one value of a predefined gob type, as found
// in a struct field the receiver does not know. Types that cannot be skipped
// without further type information are rejected.
func (d *rawDecoder) skipBasic(typeID int64) error {
	switch typeID {
	case gobTypeBool, gobTypeInt, gobTypeUint, gobTypeFloat:
		_, err := d.uint()
		return err
	case gobTypeComplex:
		if _, err := d.uint(); err != nil {
			return err
		}
		_, err := d.uint()
		return err
	case gobTypeBytes, gobTypeString:
		_, err := d.bytes(d.remaining())
		return err
	}
	return fmt.Errorf("%w: cannot skip a field of gob type %d", ErrMalformed, typeID)
}

// gobReader reads consecutive gob messages holding values of predefined
// types from a buffer.
type gobReader struct {
	buf []byte
	off int
}

// newGobReader returns a reader of the gob messages in b.
func newGobReader(b []byte) gobReader { return gobReader{buf: b} }

// remaining returns the number of unread bytes.
func (r *gobReader) remaining() int { return len(r.buf) - r.off }

// next returns the body of the next message (without its count). The body
// aliases the reader's buffer.
func (r *gobReader) next() ([]byte, error) {
	d := rawDecoder{b: r.buf, off: r.off}
	n, err := d.uint()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errGobEmptyMessage
	}
	if n > uint64(d.remaining()) {
		return nil, errGobTruncated
	}
	body := r.buf[d.off : d.off+int(n) : d.off+int(n)]
	r.off = d.off + int(n)
	return body, nil
}

// value reads the next message, checks that it holds a value of the given
// predefined type and returns a decoder positioned at the value.
func (r *gobReader) value(typeID int64) (rawDecoder, error) {
	body, err := r.next()
	if err != nil {
		return rawDecoder{}, err
	}
	return openSingleton(body, typeID)
}

// openSingleton checks that a message body holds a non-struct value of the
// given type id and returns a decoder positioned at the value.
func openSingleton(body []byte, typeID int64) (rawDecoder, error) {
	d := rawDecoder{b: body}
	id, err := d.typeID()
	if err != nil {
		return d, err
	}
	if id != typeID {
		return d, fmt.Errorf("%w: gob value of type %d where type %d was expected", ErrMalformed, id, typeID)
	}
	delta, err := d.uint()
	if err != nil {
		return d, err
	}
	if delta != 0 {
		return d, errGobSingleton
	}
	return d, nil
}

// readUint reads one whole message holding an unsigned integer.
func (r *gobReader) readUint() (uint64, error) {
	d, err := r.value(gobTypeUint)
	if err != nil {
		return 0, err
	}
	v, err := d.uint()
	if err != nil {
		return 0, err
	}
	return v, d.end()
}

// readString reads one whole message holding a string of at most max
// bytes. The string is a copy.
func (r *gobReader) readString(max int) (string, error) {
	d, err := r.value(gobTypeString)
	if err != nil {
		return "", err
	}
	p, err := d.bytes(max)
	if err != nil {
		return "", err
	}
	if err := d.end(); err != nil {
		return "", err
	}
	return string(p), nil
}

// readBytes reads one whole message holding a byte slice of at most max
// bytes. The result aliases the reader's buffer.
func (r *gobReader) readBytes(max int) ([]byte, error) {
	d, err := r.value(gobTypeBytes)
	if err != nil {
		return nil, err
	}
	p, err := d.bytes(max)
	if err != nil {
		return nil, err
	}
	return p, d.end()
}

// gobReadChunk is how much readGobMessage reads at a time when a message
// does not fit the caller's buffer, so that a large count claimed by the
// remote only costs memory as the bytes actually arrive.
const gobReadChunk = 64 << 10

// gobSource is what readGobMessage reads from.
type gobSource interface {
	io.Reader
	io.ByteReader
}

// readGobMessage reads one count-prefixed gob message from a stream and
// returns its body (without the count). Messages longer than limit bytes are
// refused with an error wrapping ErrFrameTooLarge. The body is read into
// buf when it is large enough, else into a new buffer. It returns io.EOF
// only when the stream ends before the first byte of the message.
func readGobMessage(r gobSource, limit int, buf []byte) ([]byte, error) {
	c, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	count := uint64(c)
	if c >= 0x80 {
		n := 256 - int(c)
		if n > 8 {
			return nil, errGobBadUint
		}
		count = 0
		for range n {
			c, err := r.ReadByte()
			if err != nil {
				return nil, unexpectedEOF(err)
			}
			count = count<<8 | uint64(c)
		}
	}
	if count == 0 {
		return nil, errGobEmptyMessage
	}
	if limit < 0 || count > uint64(limit) {
		return nil, fmt.Errorf("%w: gob message of %d bytes > %d", ErrFrameTooLarge, count, limit)
	}
	n := int(count)
	if cap(buf) >= n {
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpectedEOF(err)
		}
		return buf, nil
	}
	buf = buf[:0]
	for len(buf) < n {
		step := min(max(len(buf), gobReadChunk), n-len(buf))
		if cap(buf)-len(buf) < step {
			grown := make([]byte, len(buf), len(buf)+step)
			copy(grown, buf)
			buf = grown
		}
		start := len(buf)
		buf = buf[:start+step]
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	return buf, nil
}

// unexpectedEOF turns an end of stream in the middle of a message into
// io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseGobBytesMessage parses a message body (as returned by
// readGobMessage) holding a byte slice and returns the bytes, aliasing
// body.
func parseGobBytesMessage(body []byte) ([]byte, error) {
	d, err := openSingleton(body, gobTypeBytes)
	if err != nil {
		return nil, err
	}
	p, err := d.bytes(len(body))
	if err != nil {
		return nil, err
	}
	return p, d.end()
}

// gobWireKind is the kind of a type described by a gob type definition.
type gobWireKind uint8

const (
	gobKindOther  gobWireKind = iota // array or a type with its own marshalling
	gobKindSlice                     // slice; Elem is the element type
	gobKindStruct                    // struct; fields are listed separately
	gobKindMap                       // map; Key and Elem are the key and element types
)

// gobWireType summarises a gob type definition (gob's wireType).
type gobWireType struct {
	Kind gobWireKind
	Key  int64 // map key type
	Elem int64 // slice, array or map element type
}

// gobFieldDef is one field of a struct type definition. Name aliases the
// definition's bytes.
type gobFieldDef struct {
	Name []byte
	Type int64
}

// gobMaxStructFields bounds the fields of a struct type definition.
const gobMaxStructFields = 128

// parseWireType parses the body of a type definition message after its
// (negative) type id: a gob wireType value. The fields of a struct type are
// appended to fields, which is returned.
//
// The wireType struct has fields ArrayT, SliceT, StructT, MapT,
// GobEncoderT, BinaryMarshalerT and TextMarshalerT, of which exactly one is
// set. Each of the inner types starts with an embedded CommonType {Name
// string; Id typeId}. The message must end with the definition.
func parseWireType(d *rawDecoder, fields []gobFieldDef) (gobWireType, []gobFieldDef, error) {
	var wt gobWireType
	which, err := d.uint()
	if err != nil {
		return wt, fields, err
	}
	var nfields uint64 // fields of the inner type, CommonType included
	switch which {
	case 1: // ArrayT: CommonType, Elem, Len
		wt.Kind, nfields = gobKindOther, 3
	case 2: // SliceT: CommonType, Elem
		wt.Kind, nfields = gobKindSlice, 2
	case 3: // StructT: CommonType, Field
		wt.Kind, nfields = gobKindStruct, 2
	case 4: // MapT: CommonType, Key, Elem
		wt.Kind, nfields = gobKindMap, 3
	case 5, 6, 7: // GobEncoderT, BinaryMarshalerT, TextMarshalerT: CommonType
		wt.Kind, nfields = gobKindOther, 1
	default:
		return wt, fields, errGobBadDefinition
	}
	field := uint64(0) // one more than the last field number read
	for {
		delta, err := d.uint()
		if err != nil {
			return wt, fields, err
		}
		if delta == 0 {
			break
		}
		if delta > nfields-field {
			return wt, fields, errGobFieldRange
		}
		field += delta
		switch f := field - 1; {
		case f == 0:
			if err := skipCommonType(d); err != nil {
				return wt, fields, err
			}
		case wt.Kind == gobKindStruct: // Field []fieldType
			if fields, err = parseFieldTypes(d, fields); err != nil {
				return wt, fields, err
			}
		case which == 1 && f == 2: // array Len
			if _, err := d.int(); err != nil {
				return wt, fields, err
			}
		default: // Elem (f == 1, or 2 for a map) or map Key (f == 1)
			id, err := d.typeID()
			if err != nil {
				return wt, fields, err
			}
			if id <= 0 {
				return wt, fields, errGobTypeRange
			}
			if wt.Kind == gobKindMap && f == 1 {
				wt.Key = id
			} else {
				wt.Elem = id
			}
		}
	}
	// Only one of wireType's fields may be set: the next byte ends it.
	if end, err := d.uint(); err != nil {
		return wt, fields, err
	} else if end != 0 {
		return wt, fields, errGobBadDefinition
	}
	if (wt.Kind == gobKindSlice && wt.Elem == 0) || (wt.Kind == gobKindMap && (wt.Key == 0 || wt.Elem == 0)) {
		return wt, fields, errGobBadDefinition
	}
	return wt, fields, d.end()
}

// skipCommonType reads a CommonType {Name string; Id typeId} struct value.
// The name and id it carries are informative only: gob uses the id of the
// definition message.
func skipCommonType(d *rawDecoder) error {
	field := uint64(0)
	for {
		delta, err := d.uint()
		if err != nil {
			return err
		}
		if delta == 0 {
			return nil
		}
		if delta > 2-field {
			return errGobFieldRange
		}
		field += delta
		if field == 1 {
			_, err = d.bytes(d.remaining())
		} else {
			_, err = d.typeID()
		}
		if err != nil {
			return err
		}
	}
}

// parseFieldTypes reads a []fieldType value, fieldType being
// {Name string; Id typeId}, and appends the fields to fields.
func parseFieldTypes(d *rawDecoder, fields []gobFieldDef) ([]gobFieldDef, error) {
	n, err := d.uint()
	if err != nil {
		return fields, err
	}
	// Every element takes at least one byte.
	if n > uint64(d.remaining()) {
		return fields, errGobTruncated
	}
	if n > gobMaxStructFields {
		return fields, fmt.Errorf("%w: gob struct with %d fields", ErrMalformed, n)
	}
	for range n {
		var f gobFieldDef
		field := uint64(0)
		for {
			delta, err := d.uint()
			if err != nil {
				return fields, err
			}
			if delta == 0 {
				break
			}
			if delta > 2-field {
				return fields, errGobFieldRange
			}
			field += delta
			if field == 1 {
				if f.Name, err = d.bytes(d.remaining()); err != nil {
					return fields, err
				}
			} else {
				if f.Type, err = d.typeID(); err != nil {
					return fields, err
				}
			}
		}
		if f.Type <= 0 {
			return fields, errGobTypeRange
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// parseDefinitionHeader reads the type id at the start of a message and,
// for a definition, validates the id being defined. It returns the id and
// whether the message is a definition.
func parseDefinitionHeader(d *rawDecoder) (id int64, isDef bool, err error) {
	id, err = d.typeID()
	if err != nil {
		return 0, false, err
	}
	if id >= 0 {
		if id == 0 {
			return 0, false, errGobTypeRange
		}
		return id, false, nil
	}
	id = -id
	if id < gobFirstUserType {
		return 0, false, fmt.Errorf("%w: gob definition of predefined type id %d", ErrMalformed, id)
	}
	return id, true, nil
}
