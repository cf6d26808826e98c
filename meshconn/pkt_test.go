package meshconn

import (
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"math"
	"strings"
	"testing"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// weavePkt has the shape of the datagrams of weave's meshconn: a struct
// gob-encoded on its own by a fresh encoder.
type weavePkt struct {
	SrcName mesh.PeerName
	SrcUID  mesh.PeerUID
	Buf     []byte
}

// gobEncodeWeave encodes p exactly as weave's meshconn does: a type named
// pkt, encoded by a fresh gob encoder. gob gives the type an id of its
// own, which depends on the types this process encoded before.
func gobEncodeWeave(t testing.TB, p weavePkt) []byte {
	t.Helper()
	type pkt struct {
		SrcName mesh.PeerName
		SrcUID  mesh.PeerUID
		Buf     []byte
	}
	var b bytes.Buffer
	require.NoError(t, gob.NewEncoder(&b).Encode(pkt(p)))
	return b.Bytes()
}

// gobDecode decodes msg with encoding/gob, as weave's meshconn does.
func gobDecode(t testing.TB, msg []byte) weavePkt {
	t.Helper()
	var w weavePkt
	require.NoError(t, gob.NewDecoder(bytes.NewReader(msg)).Decode(&w))
	return w
}

// weaveDef is the type definition weave's meshconn sends first, when pkt
// is the first type its process encodes (type id 64).
const weaveDef = "2f7f03010103706b" + "7401ff8000010301" + "075372634e616d65" + "0106000106537263" +
	"5549440106000103" + "427566010a000000"

// weaveVectors are datagrams as encoding/gob writes them for weave's pkt
// with type id 64: the definition, then the value message.
var weaveVectors = []struct {
	p     pkt
	value string
}{
	{pkt{SrcName: 0x020000000001, SrcUID: 99, Buf: []byte("from weave")}, "19ff8001fa0200000000010163010a66726f6d20776561766500"},
	{pkt{}, "03ff8000"},
	{pkt{SrcName: 1}, "05ff80010100"},
	{pkt{SrcUID: 5, Buf: []byte("x")}, "08ff80020501017800"},
	{pkt{SrcName: 0x7f, SrcUID: 0x80, Buf: make([]byte, 0x80)}, "ff8bff80017f01ff8001ff80" + strings.Repeat("00", 0x80) + "00"},
	{pkt{SrcName: math.MaxUint64, SrcUID: math.MaxUint64, Buf: []byte{0xff}}, "1aff8001f8ffffffffffffffff01f8ffffffffffffffff0101ff00"},
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func TestWeaveWireFormat(t *testing.T) {
	t.Run("vectors", func(t *testing.T) {
		for _, v := range weaveVectors {
			want := mustHex(t, weaveDef+v.value)
			require.Equal(t, want, v.p.encode(), "encoding of %+v", v.p)
			got, err := decodePkt(want)
			require.NoError(t, err)
			require.Equal(t, v.p.SrcName, got.SrcName)
			require.Equal(t, v.p.SrcUID, got.SrcUID)
			require.Equal(t, string(v.p.Buf), string(got.Buf))
			// encoding/gob agrees.
			require.Equal(t, weavePkt(got), gobDecode(t, want))
		}
	})

	values := []weavePkt{
		{SrcName: nameA, SrcUID: 99, Buf: []byte("from weave")},
		{},
		{SrcUID: 1},
		{SrcName: math.MaxUint64, Buf: bytes.Repeat([]byte{0xa5}, 70000)},
	}
	t.Run("from gob", func(t *testing.T) {
		for _, in := range values {
			for _, msg := range [][]byte{gobEncodeWeave(t, in), gobEncode(t, in)} {
				got, wt, err := decodeWire(msg)
				require.NoError(t, err)
				require.Equal(t, in.SrcName, got.SrcName)
				require.Equal(t, in.SrcUID, got.SrcUID)
				require.Equal(t, in.Buf, got.Buf)
				// Byte for byte what gob wrote, given its type id and name.
				require.Equal(t, msg, appendPkt(nil, &got, wt.id, string(wt.name)))
			}
			_, wt, err := decodeWire(gobEncodeWeave(t, in))
			require.NoError(t, err)
			require.Equal(t, "pkt", string(wt.name))
		}
	})
	t.Run("to gob", func(t *testing.T) {
		for _, in := range values {
			require.Equal(t, in, gobDecode(t, (*pkt)(&in).encode()))
		}
	})
	t.Run("through a Peer", func(t *testing.T) {
		p := NewPeer(nameB, 2, nil)
		require.NoError(t, p.OnGossipUnicast(nameA, gobEncodeWeave(t, values[0])))
		buf := make([]byte, 32)
		n, from, err := p.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, "from weave", string(buf[:n]))
		require.Equal(t, MeshAddr{PeerName: nameA, PeerUID: 99}, from)
	})
}

// gobEncode encodes p with encoding/gob as a weavePkt, a type of another
// name.
func gobEncode(t testing.TB, p weavePkt) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, gob.NewEncoder(&b).Encode(p))
	return b.Bytes()
}

// encodeWith encodes p with the given type id and name.
func encodeWith(p pkt, id int64, name string) []byte {
	return appendPkt(nil, &p, id, name)
}

func TestDecodeMalformed(t *testing.T) {
	valid := (&pkt{SrcName: nameA, SrcUID: 7, Buf: []byte("payload")}).encode()
	def := mustHex(t, weaveDef)
	// value builds a datagram from weave's definition and a value message
	// body, given in hex.
	value := func(body string) []byte {
		b := mustHex(t, body)
		return append(append(append([]byte(nil), def...), byte(len(b))), b...)
	}
	// withDef builds a datagram from a definition body, given in hex, and
	// an empty value of type 64.
	withDef := func(body string) []byte {
		b := mustHex(t, body)
		return append(append([]byte{byte(len(b))}, b...), 0x03, 0xff, 0x80, 0x00)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"nil", nil, errTruncated},
		{"zero count", []byte{0}, errEmptyMessage},
		{"count beyond the end", []byte{0x05, 0x7f}, errTruncated},
		{"huge count", []byte{0xf8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, errTruncated},
		{"nine-byte uint", []byte{0xf7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, errBadUint},
		{"non-minimal count", append([]byte{0xff, 0x2f}, def[1:]...), errBadUint},
		{"non-minimal count, leading zero", append([]byte{0xfe, 0x00, 0x2f}, def[1:]...), errBadUint},
		{"text", []byte("garbage"), errTruncated},
		{"text with a count that fits", []byte("\x07garbage"), errTypeID},
		{"definition of a predefined type", withDef("05"), errTypeID},
		{"definition of type id 63", withDef("7d"), errTypeID},
		{"definition id beyond int32", withDef("fcffffffff"), errTypeID},
		{"definition id MinInt64", withDef("f8ffffffffffffffff"), errTypeID},
		{"positive id for a definition", withDef("ff80"), errTypeID},
		{"a slice type", withDef("7f020101"), errTypeDef},
		{"empty name", withDef("7f03010100"), errTypeName},
		{"name beyond the message", withDef("7f03010105706b74"), errTruncated},
		{"name too long", encodeWith(pkt{}, 64, strings.Repeat("n", maxTypeNameLen+1)), errTypeName},
		{"other id in CommonType", withDef("7f0301010370" + "6b7401ff82" + hex.EncodeToString(pktFields)), errTypeDef},
		{"other field name", bytes.Replace(valid, []byte("SrcUID"), []byte("SrcUIX"), 1), errTypeDef},
		{"other field type", bytes.Replace(valid, []byte("Buf\x01\x0a"), []byte("Buf\x01\x0c"), 1), errTypeDef},
		{"definition only", def, errTruncated},
		{"trailing byte in the definition", withDef("7f03010103706b74" + "01ff80" + hex.EncodeToString(pktFields) + "00"), errTrailing},
		{"value of another type", value("ff8200"), errValueType},
		{"value of a predefined type", value("0600"), errTypeID},
		{"no end of struct", value("ff8001fa020000000001"), errTruncated},
		{"field delta 0 first", value("ff80"), errTruncated},
		{"field delta 4", value("ff800401"), errFieldDelta},
		{"huge field delta", value("ff80f8ffffffffffffffff01"), errFieldDelta},
		{"field after the last", value("ff8003017801"), errFieldDelta},
		{"zero name", value("ff80010000"), errZeroField},
		{"zero uid", value("ff80020000"), errZeroField},
		{"empty payload", value("ff80030000"), errZeroField},
		{"payload beyond the message", value("ff8003057800"), errTruncated},
		{"huge payload length", value("ff8003f8ffffffffffffffff00"), errTruncated},
		{"non-minimal name", value("ff8001ff0500"), errBadUint},
		{"trailing byte in the value", value("ff800000"), errTrailing},
		{"trailing byte", append(bytes.Clone(valid), 0), errTrailing},
		{"third message", append(bytes.Clone(valid), 0x03, 0xff, 0x80, 0x00), errTrailing},
		{"too large", (&pkt{Buf: make([]byte, MaxDatagramSize+1)}).encode(), errTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeWire(tc.msg)
			require.ErrorIs(t, err, tc.want)
			p, err := decodePkt(tc.msg)
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, mesh.ErrMalformed)
			require.Equal(t, pkt{}, p)
		})
	}
	require.ErrorIs(t, errTooLarge, ErrDatagramTooLarge)
	require.NotErrorIs(t, errTruncated, ErrDatagramTooLarge)
	require.Equal(t, "meshconn: malformed datagram: truncated", errTruncated.Error())

	// Every prefix of a valid datagram is an error.
	for i := range valid {
		_, err := decodePkt(valid[:i])
		require.ErrorIs(t, err, mesh.ErrMalformed, "prefix of %d bytes", i)
	}
}

// TestDecodeAllocations checks that decoding allocates the payload copy
// and nothing else, whatever the input claims.
func TestDecodeAllocations(t *testing.T) {
	valid := (&pkt{SrcName: nameA, SrcUID: 7, Buf: make([]byte, 1000)}).encode()
	hostile := [][]byte{
		{0xf8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		append(mustHex(t, weaveDef), 0x0d, 0xff, 0x80, 0x03, 0xf8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00),
		valid[:len(valid)-1],
		(&pkt{SrcName: nameA}).encode(),
	}
	for _, msg := range hostile {
		require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = decodePkt(msg) }), "% x", msg)
	}
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		p, err := decodePkt(valid)
		if err != nil || len(p.Buf) != 1000 {
			t.Fatalf("decoded %d bytes, %v", len(p.Buf), err)
		}
	}))
	// The payload is a copy: the message can be reused.
	p, err := decodePkt(valid)
	require.NoError(t, err)
	valid[len(valid)-2] = 0xee
	require.Zero(t, p.Buf[len(p.Buf)-1])

	// Encoding allocates the message only, of the right size.
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		_ = (&pkt{SrcName: nameA, SrcUID: 7, Buf: p.Buf}).encode()
	}))
	enc := (&pkt{SrcName: nameA, SrcUID: 7, Buf: p.Buf}).encode()
	require.Equal(t, len(enc), cap(enc))
}

// TestEncodeIDs checks the encoding for type ids and names of every size
// gob can give them.
func TestEncodeIDs(t *testing.T) {
	p := pkt{SrcName: nameA, SrcUID: math.MaxUint64, Buf: []byte("x")}
	for _, id := range []int64{64, 127, 128, 255, 256, 1 << 20, math.MaxInt32} {
		for _, name := range []string{"p", "pkt", strings.Repeat("n", 200), strings.Repeat("n", maxTypeNameLen)} {
			msg := encodeWith(p, id, name)
			require.Len(t, msg, encodedLen(&p, id, name))
			got, wt, err := decodeWire(msg)
			require.NoError(t, err, "id %d, name of %d bytes", id, len(name))
			require.Equal(t, p, got)
			require.Equal(t, id, wt.id)
			require.Equal(t, name, string(wt.name))
			// encoding/gob reads it, whatever the id.
			require.Equal(t, weavePkt(p), gobDecode(t, msg))
		}
	}
}

func FuzzDecodePkt(f *testing.F) {
	for _, v := range weaveVectors {
		f.Add(v.p.encode())
	}
	f.Add(encodeWith(pkt{SrcName: 1, SrcUID: 2, Buf: []byte{3}}, math.MaxInt32, "weavePkt"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, wt, err := decodeWire(msg)
		d, errCopy := decodePkt(msg)
		if err != nil {
			require.ErrorIs(t, err, mesh.ErrMalformed)
			require.Equal(t, err, errCopy)
			require.Equal(t, pkt{}, d)
			return
		}
		require.NoError(t, errCopy)
		require.LessOrEqual(t, len(p.Buf), MaxDatagramSize)
		require.LessOrEqual(t, len(wt.name), maxTypeNameLen)
		require.Equal(t, p.SrcName, d.SrcName)
		require.Equal(t, p.SrcUID, d.SrcUID)
		require.Equal(t, p.Buf, d.Buf)
		if len(d.Buf) > 0 {
			require.NotSame(t, &p.Buf[0], &d.Buf[0], "the payload must be a copy")
		}
		// The format is canonical: the same type id and name give back
		// the input.
		require.Equal(t, msg, appendPkt(nil, &p, wt.id, string(wt.name)))
		// What we write, we read back.
		again, err := decodePkt(d.encode())
		require.NoError(t, err)
		require.Equal(t, d, again)
		// encoding/gob, which weave's meshconn uses, reads what we
		// accept as we do.
		require.Equal(t, weavePkt(d), gobDecode(t, msg))
	})
}
