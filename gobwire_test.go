package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"github.com/stretchr/testify/require"
)

// wireFrame is a frame body (tag byte + payload) found in the weave
// vectors, decrypted when it was encrypted.
type wireFrame struct {
	scenario, name, sender string
	description            string
	v1                     bool
	body                   []byte
	want                   map[string]any // the vector's description of the frame
}

// String names the frame by scenario and vector.
func (f *wireFrame) String() string { return f.scenario + "/" + f.name }

// vectorFrames returns every frame after the handshake in the vectors:
// v2 frames without their length prefix, v1 messages without their gob
// []byte wrapper.
func vectorFrames(t testing.TB) []wireFrame {
	t.Helper()
	vs := loadVectors(t)
	var out []wireFrame
	for si := range vs.Scenarios {
		s := &vs.Scenarios[si]
		v1 := strings.HasPrefix(s.Name, "v1-")
		for vi := range s.Vectors {
			v := &s.Vectors[vi]
			raw := v.bytes(t)
			f := wireFrame{scenario: s.Name, name: v.Name, sender: v.Sender, description: v.Description, v1: v1}
			if v1 {
				msg, ok := v.Decoded["message"].(map[string]any)
				if !ok {
					continue
				}
				br := bufio.NewReader(bytes.NewReader(raw))
				gm, err := readGobMessage(br, len(raw), nil)
				require.NoError(t, err, "%s/%s", s.Name, v.Name)
				require.Zero(t, br.Buffered(), "%s/%s: bytes after the gob message", s.Name, v.Name)
				inner, err := parseGobBytesMessage(gm)
				require.NoError(t, err, "%s/%s", s.Name, v.Name)
				f.body, f.want = inner, msg
				if v.PlaintextHex != "" {
					f.body = v.plaintext(t)
				}
			} else {
				if _, ok := v.Decoded["tag"]; !ok && v.Name != "probe-empty-frame" {
					continue
				}
				require.GreaterOrEqual(t, len(raw), 4)
				require.Equal(t, uint32(len(raw)-4), binary.BigEndian.Uint32(raw), "%s/%s: length prefix", s.Name, v.Name)
				f.body, f.want = raw[4:], v.Decoded
				if v.PlaintextHex != "" {
					f.body = v.plaintext(t)
				}
			}
			out = append(out, f)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func TestAppendRawUint(t *testing.T) {
	tests := []struct {
		v    uint64
		want string
	}{
		{0, "00"},
		{1, "01"},
		{127, "7f"},
		{128, "ff80"},
		{255, "ffff"},
		{256, "fe0100"},
		{0xffff, "feffff"},
		{0x10000, "fd010000"},
		{2199023255553, "fa020000000001"},
		{0x1122334455667788, "f81122334455667788"},
		{math.MaxUint64, "f8ffffffffffffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := gobint.AppendUint([]byte{0xaa}, tt.v)
			require.Equal(t, append([]byte{0xaa}, mustHex(t, tt.want)...), got)
			require.Equal(t, len(tt.want)/2, gobint.Len(tt.v))
			d := rawDecoder{b: got[1:]}
			v, err := d.uint()
			require.NoError(t, err)
			require.Equal(t, tt.v, v)
			require.NoError(t, d.end())
		})
	}
}

func TestAppendRawInt(t *testing.T) {
	tests := []struct {
		v    int64
		want string
	}{
		{0, "00"},
		{3, "06"},
		{5, "0a"},
		{6, "0c"},
		{-1, "01"},
		{-64, "7f"},
		{64, "ff80"},
		{-65, "ff81"},
		{65, "ff82"},
		{67, "ff86"},
		{math.MaxInt64, "f8fffffffffffffffe"},
		{math.MinInt64, "f8ffffffffffffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := appendRawInt(nil, tt.v)
			require.Equal(t, mustHex(t, tt.want), got)
			d := rawDecoder{b: got}
			v, err := d.int()
			require.NoError(t, err)
			require.Equal(t, tt.v, v)
		})
	}
}

// gobEncode returns what encoding/gob writes for v on a fresh encoder.
func gobEncode(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, gob.NewEncoder(&buf).Encode(v))
	return buf.Bytes()
}

func TestGobMessagesMatchEncodingGob(t *testing.T) {
	uints := []uint64{0, 1, 127, 128, 255, 256, 2199023255705, math.MaxUint64}
	for _, v := range uints {
		got := appendGobUint(nil, v)
		require.Equal(t, gobEncode(t, v), got, "uint %d", v)
		r := newGobReader(got)
		back, err := r.readUint()
		require.NoError(t, err)
		require.Equal(t, v, back)
		require.Zero(t, r.remaining())
	}
	for _, n := range []int{0, 1, 3, 123, 124, 125, 126, 127, 128, 255, 256, 70000} {
		s := strings.Repeat("x", n)
		got := appendGobString(nil, s)
		require.Equal(t, gobEncode(t, s), got, "string of %d", n)
		r := newGobReader(got)
		back, err := r.readString(n)
		require.NoError(t, err)
		require.Equal(t, s, back)

		p := []byte(s)
		got = appendGobBytes(nil, p)
		require.Equal(t, gobEncode(t, p), got, "[]byte of %d", n)
		r = newGobReader(got)
		bp, err := r.readBytes(n)
		require.NoError(t, err)
		require.Equal(t, p, bp)
		// The result aliases the input.
		if n > 0 {
			require.Same(t, &got[len(got)-1], &bp[len(bp)-1])
		}
		body, err := newGobReaderBody(got)
		require.NoError(t, err)
		pb, err := parseGobBytesMessage(body)
		require.NoError(t, err)
		require.Equal(t, p, pb)
	}
}

// newGobReaderBody returns the body of the single message in b.
func newGobReaderBody(b []byte) ([]byte, error) {
	r := newGobReader(b)
	body, err := r.next()
	if err == nil && r.remaining() != 0 {
		err = errGobExtraData
	}
	return body, err
}

func TestGobEncodersDecodeWithEncodingGob(t *testing.T) {
	var b []byte
	b = appendGobString(b, "channel")
	b = appendGobUint(b, 2199023255705)
	b = appendGobBytes(b, []byte("payload"))
	b = appendGobBytes(b, nil)
	dec := gob.NewDecoder(bytes.NewReader(b))
	var s string
	var u uint64
	var p, empty []byte
	require.NoError(t, dec.Decode(&s))
	require.NoError(t, dec.Decode(&u))
	require.NoError(t, dec.Decode(&p))
	require.NoError(t, dec.Decode(&empty))
	require.Equal(t, "channel", s)
	require.Equal(t, uint64(2199023255705), u)
	require.Equal(t, []byte("payload"), p)
	require.Empty(t, empty)
	require.ErrorIs(t, dec.Decode(&p), io.EOF)
}

func TestGobReaderErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		read func(r *gobReader) error
	}{
		{"empty input", "", readUintErr},
		{"count truncated", "fe01", readUintErr},
		{"zero count", "00", readUintErr},
		{"count beyond input", "0506000102", readUintErr},
		{"bad uint prefix", "f7000000000000000000", readUintErr},
		{"0x80 prefix", "80", readUintErr},
		{"wrong type", "060c0003766563", readUintErr},
		{"non-zero singleton delta", "03060101", readUintErr},
		{"value truncated", "040600fa01", readUintErr},
		{"trailing byte in message", "0406000100", readUintErr},
		{"type id out of range", "0af9ffffffffffff060001", readUintErr},
		{"string too long", "060c0003766563", func(r *gobReader) error { _, err := r.readString(2); return err }},
		{"string length beyond message", "060c0009766563", func(r *gobReader) error { _, err := r.readString(100); return err }},
		{"string trailing byte", "070c000376656300", func(r *gobReader) error { _, err := r.readString(100); return err }},
		{"bytes as string", "060a0003766563", func(r *gobReader) error { _, err := r.readString(100); return err }},
		{"bytes too long", "060a0003766563", func(r *gobReader) error { _, err := r.readBytes(2); return err }},
		{"string as bytes", "060c0003766563", func(r *gobReader) error { _, err := r.readBytes(100); return err }},
		{"bytes trailing byte", "070a000376656300", func(r *gobReader) error { _, err := r.readBytes(100); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGobReader(mustHex(t, tt.hex))
			err := tt.read(&r)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

// readUintErr reads a uint message and returns only the error.
func readUintErr(r *gobReader) error {
	_, err := r.readUint()
	return err
}

func TestGobReaderAcceptsLongUintEncodings(t *testing.T) {
	// gob accepts integers encoded with more bytes than needed.
	r := newGobReader(mustHex(t, "050600fe0005"))
	v, err := r.readUint()
	require.NoError(t, err)
	require.Equal(t, uint64(5), v)
}

func TestParseGobBytesMessageErrors(t *testing.T) {
	for _, h := range []string{"", "0a", "0a00", "0a0001", "0a000100ff", "0c000100", "0a010100", "0a00ff"} {
		t.Run(h, func(t *testing.T) {
			_, err := parseGobBytesMessage(mustHex(t, h))
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
	p, err := parseGobBytesMessage(mustHex(t, "0a0000"))
	require.NoError(t, err)
	require.Empty(t, p)
}

func TestReadGobMessage(t *testing.T) {
	var stream []byte
	stream = appendGobString(stream, "abc")
	stream = appendGobBytes(stream, bytes.Repeat([]byte{7}, 300))
	stream = appendGobUint(stream, 42)
	r := bufio.NewReader(bytes.NewReader(stream))
	buf := make([]byte, 0, 512)

	body, err := readGobMessage(r, 1000, buf)
	require.NoError(t, err)
	require.Equal(t, mustHex(t, "0c0003616263"), body)
	require.Same(t, &buf[:1][0], &body[0], "the caller's buffer is reused")

	body, err = readGobMessage(r, 1000, buf)
	require.NoError(t, err)
	p, err := parseGobBytesMessage(body)
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{7}, 300), p)

	body, err = readGobMessage(r, 1000, nil)
	require.NoError(t, err)
	require.Equal(t, mustHex(t, "06002a"), body)

	_, err = readGobMessage(r, 1000, buf)
	require.ErrorIs(t, err, io.EOF)
}

func TestReadGobMessageErrors(t *testing.T) {
	tests := []struct {
		name  string
		hex   string
		limit int
		want  error
	}{
		{"empty stream", "", 100, io.EOF},
		{"count truncated", "fe01", 100, io.ErrUnexpectedEOF},
		{"body truncated", "050a0003", 100, io.ErrUnexpectedEOF},
		{"zero count", "00", 100, ErrMalformed},
		{"bad count", "f7", 100, ErrMalformed},
		{"too large", "050a0003616263", 4, ErrFrameTooLarge},
		{"too large with long count", "fda00001", DefaultMaxFrameSize, ErrFrameTooLarge},
		{"huge count", "f8ffffffffffffffff", DefaultMaxFrameSize, ErrFrameTooLarge},
		{"negative limit", "050a0003616263", -1, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(mustHex(t, tt.hex)))
			_, err := readGobMessage(r, tt.limit, nil)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// shortReader returns at most one byte per Read, to exercise partial reads.
type shortReader struct{ r io.Reader }

// Read reads at most one byte.
func (s shortReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return s.r.Read(p)
}

func TestReadGobMessageLarge(t *testing.T) {
	payload := make([]byte, 3*gobReadChunk+17)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	stream := appendGobBytes(nil, payload)
	r := bufio.NewReader(bytes.NewReader(stream))
	body, err := readGobMessage(r, len(stream), make([]byte, 0, 10))
	require.NoError(t, err)
	p, err := parseGobBytesMessage(body)
	require.NoError(t, err)
	require.Equal(t, payload, p)

	// The same message cut short: the buffer never grows far beyond the
	// bytes that arrived.
	cut := stream[:gobReadChunk+100]
	r = bufio.NewReader(shortReader{bytes.NewReader(cut)})
	_, err = readGobMessage(r, DefaultMaxFrameSize, nil)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestReadGobMessageAllocationBounded(t *testing.T) {
	// A count claiming 10 MiB followed by nothing must not allocate 10 MiB.
	stream := gobint.AppendUint(nil, DefaultMaxFrameSize)
	allocs := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := bufio.NewReaderSize(bytes.NewReader(stream), 16)
			if _, err := readGobMessage(r, DefaultMaxFrameSize, nil); err == nil {
				b.Fatal("no error")
			}
		}
	})
	require.Less(t, allocs.AllocedBytesPerOp(), int64(2*gobReadChunk))
}

// TestV1Streams reads each whole v1 stream as a peer would: the features,
// then gob []byte messages holding frame bodies.
func TestV1Streams(t *testing.T) {
	vs := loadVectors(t)
	for _, name := range []string{"v1-plain", "v1-pw", "header-1-1"} {
		s := vs.scenario(t, name)
		for _, sender := range []string{"weave", "probe"} {
			t.Run(name+"/"+sender, func(t *testing.T) {
				stream := s.stream(t, sender, 0)
				require.Equal(t, "weave\x01", string(stream[:6]))
				r := bufio.NewReader(bytes.NewReader(stream[7:]))
				m, err := readFeaturesV1(r)
				require.NoError(t, err)
				_, err = parseFeatures(m)
				require.NoError(t, err)
				n := 0
				var buf []byte
				for {
					body, err := readGobMessage(r, DefaultMaxFrameSize+64, buf)
					if errors.Is(err, io.EOF) {
						break
					}
					require.NoError(t, err)
					buf = body
					_, err = parseGobBytesMessage(body)
					require.NoError(t, err)
					n++
				}
				count := 0
				for _, v := range s.Vectors {
					if v.Sender == sender && v.Decoded["message"] != nil {
						count++
					}
				}
				require.Equal(t, count, n)
			})
		}
	}
}

func TestVectorFramesPrefixesFail(t *testing.T) {
	// Every proper prefix of a v1 message fails to read.
	for _, f := range vectorFrames(t) {
		if !f.v1 {
			continue
		}
		msg := appendGobBytes(nil, f.body)
		for i := range len(msg) {
			r := bufio.NewReader(bytes.NewReader(msg[:i]))
			body, err := readGobMessage(r, len(msg), nil)
			if err == nil {
				_, err = parseGobBytesMessage(body)
			}
			require.Error(t, err, "%s: prefix %d", f.String(), i)
		}
	}
}

func FuzzReadGobMessage(f *testing.F) {
	vs := loadVectors(f)
	for _, name := range []string{"v1-plain", "v1-pw"} {
		s := vs.scenario(f, name)
		f.Add(s.stream(f, "weave", 0)[7:])
		f.Add(s.stream(f, "probe", 0)[7:])
	}
	f.Add(appendGobBytes(nil, []byte("hello")))
	f.Add([]byte{0xfe, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var buf []byte
		for {
			body, err := readGobMessage(r, 4096, buf)
			if err != nil {
				break
			}
			if len(body) == 0 || len(body) > 4096 {
				t.Fatalf("body of %d bytes", len(body))
			}
			// Re-framing the body and reading it again gives the same body.
			again := gobint.AppendUint(nil, uint64(len(body)))
			again = append(again, body...)
			back, err := readGobMessage(bufio.NewReader(bytes.NewReader(again)), 4096, nil)
			if err != nil || !bytes.Equal(back, body) {
				t.Fatalf("re-read %x: %x, %v", again, back, err)
			}
			if p, err := parseGobBytesMessage(body); err == nil {
				msg := appendGobBytes(nil, p)
				b2, err := newGobReaderBody(msg)
				if err != nil {
					t.Fatal(err)
				}
				p2, err := parseGobBytesMessage(b2)
				if err != nil || !bytes.Equal(p, p2) {
					t.Fatalf("[]byte round trip: %x -> %x, %v", p, p2, err)
				}
			}
			buf = body[:0]
		}
	})
}

func TestRandomFlipsGobReader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var base []byte
	base = appendGobString(base, "topology")
	base = appendGobUint(base, 2199023255553)
	base = appendGobBytes(base, []byte("some payload"))
	for range 5000 {
		b := bytes.Clone(base)
		for range 1 + rng.IntN(3) {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		r := newGobReader(b)
		_, _ = r.readString(maxChannelNameLen)
		_, _ = r.readUint()
		_, _ = r.readBytes(len(b))
	}
}
