package mesh

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/nacl/secretbox"
)

// frameScenario describes a captured scenario whose post-handshake bytes
// are frames of one protocol version.
type frameScenario struct {
	name         string
	version      byte
	probeDialled bool
}

var frameScenarios = []frameScenario{
	{"v2-plain-probe-dials", 2, true},
	{"v2-plain-weave-dials", 2, false},
	{"v2-pw-probe-dials", 2, true},
	{"v2-pw-weave-dials", 2, false},
	{"v1-plain", 1, true},
	{"v1-pw", 1, true},
}

// sessionKey returns the scenario's session key, or nil when it is not
// encrypted.
func (s *weaveScenario) sessionKey(t testing.TB) *[32]byte {
	t.Helper()
	if s.Keys == nil {
		return nil
	}
	return key32(t, s.Keys["session_key_hex"])
}

// frameVectors returns the vectors one sender wrote after the handshake
// preamble, in order: for version 2 the features frame and every later
// frame; for version 1 every message after the features map.
func (s *weaveScenario) frameVectors(sender string) []*weaveVector {
	var out []*weaveVector
	for i := range s.Vectors {
		v := &s.Vectors[i]
		if v.Sender != sender || strings.HasSuffix(v.Name, "-header") ||
			strings.Contains(v.Name, "-flag") || strings.Contains(v.Name, "v1-features") {
			continue
		}
		out = append(out, v)
	}
	return out
}

// testGobUint decodes a gob unsigned integer at the start of b and returns
// it with its encoded length. It is written independently of the package's
// codec so that the tests check one against the other.
func testGobUint(t testing.TB, b []byte) (uint64, int) {
	t.Helper()
	require.NotEmpty(t, b)
	if b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	n := int(-int8(b[0]))
	require.LessOrEqual(t, n, 8)
	require.GreaterOrEqual(t, len(b), 1+n)
	var x uint64
	for _, c := range b[1 : 1+n] {
		x = x<<8 | uint64(c)
	}
	return x, 1 + n
}

// unwrapGobBytes returns the bytes inside one complete gob message holding
// a []byte value.
func unwrapGobBytes(t testing.TB, msg []byte) []byte {
	t.Helper()
	count, n := testGobUint(t, msg)
	body := msg[n:]
	require.Equal(t, int(count), len(body), "gob message count")
	require.Equal(t, []byte{0x0a, 0x00}, body[:2], "[]byte type id and field delta")
	l, n := testGobUint(t, body[2:])
	p := body[2+n:]
	require.Equal(t, int(l), len(p), "[]byte length")
	return p
}

// framePlaintext returns the message body a frame vector carries.
func framePlaintext(t testing.TB, v *weaveVector, version byte) []byte {
	t.Helper()
	if v.PlaintextHex != "" {
		return mustHex(t, v.PlaintextHex)
	}
	b := v.bytes(t)
	if version == 2 {
		return b[frameLenSize:]
	}
	return unwrapGobBytes(t, b)
}

// TestFrameWriterVectors seals (or frames) the captured plaintexts of both senders and expects the exact captured bytes.
func TestFrameWriterVectors(t *testing.T) {
	v := loadVectors(t)
	for _, fs := range frameScenarios {
		s := v.scenario(t, fs.name)
		for _, sender := range []string{"weave", "probe"} {
			t.Run(fs.name+"/"+sender, func(t *testing.T) {
				outbound := fs.probeDialled == (sender == "probe")
				w := newFrameWriter(fs.version, s.sessionKey(t), outbound, 0)
				vecs := s.frameVectors(sender)
				require.NotEmpty(t, vecs)
				prefix := []byte("prefix")
				for _, vec := range vecs {
					dst := append(make([]byte, 0, 64), prefix...)
					got, err := w.appendFrame(dst, framePlaintext(t, vec, fs.version))
					require.NoError(t, err, vec.Name)
					require.Equal(t, prefix, got[:len(prefix)], "appendFrame must keep dst")
					require.Equal(t, vec.Hex, fmt.Sprintf("%x", got[len(prefix):]), vec.Name)
				}
			})
		}
	}
}

// TestFrameWriterHeartbeatVector reproduces the heartbeat vectors of the cheat sheet.
func TestFrameWriterHeartbeatVector(t *testing.T) {
	// From the cheat sheet: weave's encrypted heartbeat in
	// v2-pw-probe-dials, sealed by the accepting side with counter 6.
	s := loadVectors(t).scenario(t, "v2-pw-probe-dials")
	w := newFrameWriter(2, s.sessionKey(t), false, 0)
	w.counter = 6
	got, err := w.appendFrame(nil, []byte{tagHeartbeat})
	require.NoError(t, err)
	require.Equal(t, "0000001104fe9c17fcc37773904cc31c7873a6d2e4", fmt.Sprintf("%x", got))
	require.Equal(t, "400000000000000000000000000000000000000000000006", fmt.Sprintf("%x", w.nonce))

	plain := newFrameWriter(2, nil, false, 0)
	got, err = plain.appendFrame(nil, []byte{tagHeartbeat})
	require.NoError(t, err)
	require.Equal(t, "0000000100", fmt.Sprintf("%x", got))
}

// TestFrameReaderVectors reads every captured frame stream back to its plaintexts, through large and tiny read buffers.
func TestFrameReaderVectors(t *testing.T) {
	v := loadVectors(t)
	for _, fs := range frameScenarios {
		s := v.scenario(t, fs.name)
		for _, sender := range []string{"weave", "probe"} {
			for _, size := range []int{16, 4096} {
				t.Run(fmt.Sprintf("%s/%s/bufio%d", fs.name, sender, size), func(t *testing.T) {
					senderOut := fs.probeDialled == (sender == "probe")
					var stream []byte
					vecs := s.frameVectors(sender)
					for _, vec := range vecs {
						stream = append(stream, vec.bytes(t)...)
					}
					br := bufio.NewReaderSize(bytes.NewReader(stream), size)
					r := newFrameReader(br, fs.version, s.sessionKey(t), senderOut, 0)
					for _, vec := range vecs {
						got, err := r.readFrame()
						require.NoError(t, err, vec.Name)
						require.Equal(t, framePlaintext(t, vec, fs.version), got, vec.Name)
						require.Equal(t, len(got), cap(got), "the returned slice must not expose spare capacity")
					}
					_, err := r.readFrame()
					require.ErrorIs(t, err, io.EOF)
					_, err = r.readFrame()
					require.ErrorIs(t, err, io.EOF, "errors are sticky")
				})
			}
		}
	}
}

// TestAppendGobBytesHeader checks the split gob []byte header against the codec's complete message.
func TestAppendGobBytesHeader(t *testing.T) {
	for _, n := range []int{0, 1, 16, 0x7f, 0x80, 0xff, 0x100, 0xfff0, 0xffff, 0x10000, 1 << 20, DefaultMaxFrameSize} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := bytes.Repeat([]byte{0x5a}, n)
			got := append(appendGobBytesHeader([]byte("x"), n), p...)
			want := appendGobBytes([]byte("x"), p)
			require.True(t, bytes.Equal(want, got), "header for %d bytes", n)
			require.Equal(t, p, unwrapGobBytes(t, got[1:]))
		})
	}
}

// sealedFrames returns the wire form of bodies as one writer produces them.
func sealedFrames(t testing.TB, w *frameWriter, bodies ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, b := range bodies {
		var err error
		out, err = w.appendFrame(out, b)
		require.NoError(t, err)
	}
	return out
}

// TestFrameReaderErrors feeds broken, oversized and forged frames and expects sticky errors wrapping the right sentinels.
func TestFrameReaderErrors(t *testing.T) {
	key := &[32]byte{1, 2, 3}
	otherKey := &[32]byte{3, 2, 1}
	frame0 := sealedFrames(t, newFrameWriter(2, key, true, 0), []byte("hello"))
	tampered := bytes.Clone(frame0)
	tampered[len(tampered)-1] ^= 1
	tests := []struct {
		name     string
		version  byte
		key      *[32]byte
		max      int
		input    []byte
		good     int // frames that read fine before the error
		want     error
		wantText string
	}{
		{name: "v2 clean end", version: 2, input: nil, want: io.EOF},
		{name: "v2 truncated length", version: 2, input: []byte{0, 0, 1}, want: io.ErrUnexpectedEOF},
		{name: "v2 truncated body", version: 2, input: []byte{0, 0, 0, 5, 1, 2}, want: io.ErrUnexpectedEOF},
		{name: "v2 truncated large body", version: 2, input: append([]byte{0, 0x10, 0, 0}, make([]byte, 5000)...), want: io.ErrUnexpectedEOF},
		{name: "v2 weave's oversize length", version: 2, input: []byte{0x00, 0xa0, 0x00, 0x01}, want: ErrFrameTooLarge,
			wantText: "incoming message exceeds maximum size: 10485761 > 10485760"},
		{name: "v2 oversize encrypted", version: 2, key: key, input: []byte{0x00, 0xa0, 0x00, 0x01}, want: ErrFrameTooLarge},
		{name: "v2 oversize custom limit", version: 2, max: 100, input: append([]byte{0, 0, 0, 101}, make([]byte, 101)...),
			want: ErrFrameTooLarge, wantText: "incoming message exceeds maximum size: 101 > 100"},
		{name: "v2 max uint32 length", version: 2, input: []byte{0xff, 0xff, 0xff, 0xff}, want: ErrFrameTooLarge},
		{name: "v2 after good frames", version: 2, input: []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, good: 2, want: ErrFrameTooLarge},
		{name: "v2 tampered", version: 2, key: key, input: tampered, want: ErrDecrypt},
		{name: "v2 wrong key", version: 2, key: otherKey, input: frame0, want: ErrDecrypt},
		{name: "v2 shorter than a tag", version: 2, key: key, input: []byte{0, 0, 0, 3, 1, 2, 3}, want: ErrDecrypt},
		{name: "v2 empty sealed", version: 2, key: key, input: []byte{0, 0, 0, 0}, want: ErrDecrypt},
		{name: "v2 replayed", version: 2, key: key, input: append(bytes.Clone(frame0), frame0...), good: 1, want: ErrDecrypt},
		{name: "v1 clean end", version: 1, input: nil, want: io.EOF},
		{name: "v1 oversize", version: 1, max: 100, input: appendGobBytes(nil, make([]byte, 101)), want: ErrFrameTooLarge},
		{name: "v1 oversize encrypted", version: 1, key: key, max: 100, input: appendGobBytes(nil, make([]byte, 101)), want: ErrFrameTooLarge},
		{name: "v1 tampered", version: 1, key: key, input: appendGobBytes(nil, tampered[4:]), want: ErrDecrypt},
		{name: "v1 truncated", version: 1, input: appendGobBytes(nil, []byte("hello"))[:4]},
		{name: "v1 string instead of bytes", version: 1, input: []byte{0x06, 0x0c, 0x00, 0x03, 'v', 'e', 'c'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The sealed test frames come from a dialling writer.
			r := newFrameReader(bufio.NewReader(bytes.NewReader(tt.input)), tt.version, tt.key, true, tt.max)
			for i := 0; i < tt.good; i++ {
				_, err := r.readFrame()
				require.NoError(t, err)
			}
			b, err := r.readFrame()
			require.Error(t, err)
			require.Nil(t, b)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
			}
			if tt.wantText != "" {
				require.Contains(t, err.Error(), tt.wantText)
			}
			_, again := r.readFrame()
			require.Equal(t, err, again, "a dead reader keeps returning its error")
		})
	}
}

// TestFrameReaderDirection checks that a frame sealed by one side does not open as the other side's.
func TestFrameReaderDirection(t *testing.T) {
	// A frame sealed by the dialler does not open as one from the acceptor:
	// this is what stops frames being reflected back to their sender.
	key := &[32]byte{7}
	frame := sealedFrames(t, newFrameWriter(2, key, true, 0), []byte("x"))
	r := newFrameReader(bufio.NewReader(bytes.NewReader(frame)), 2, key, false, 0)
	_, err := r.readFrame()
	require.ErrorIs(t, err, ErrDecrypt)
}

// TestFrameReaderNoEarlyAllocation checks that an announced frame length is not allocated before its bytes arrive.
func TestFrameReaderNoEarlyAllocation(t *testing.T) {
	// A peer announces the largest frame allowed and sends little: the
	// reader must not allocate the announced size up front.
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprint("encrypted=", enc), func(t *testing.T) {
			var key *[32]byte
			if enc {
				key = &[32]byte{9}
			}
			input := append([]byte{0x00, 0xa0, 0x00, 0x00}, make([]byte, 1000)...)
			r := newFrameReader(bufio.NewReader(bytes.NewReader(input)), 2, key, true, 0)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := r.readFrame()
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "allocated for a frame that never came")
		})
	}
}

// TestFrameWriterLimit checks the send-side limit at its edge for every version and mode.
func TestFrameWriterLimit(t *testing.T) {
	const max = 100
	key := &[32]byte{4}
	for _, version := range []byte{1, 2} {
		for _, enc := range []bool{false, true} {
			t.Run(fmt.Sprintf("v%d/encrypted=%v", version, enc), func(t *testing.T) {
				var k *[32]byte
				overhead := 0
				if enc {
					k, overhead = key, secretbox.Overhead
				}
				w := newFrameWriter(version, k, true, max)
				dst := []byte("keep")
				got, err := w.appendFrame(dst, make([]byte, max-overhead+1))
				require.ErrorIs(t, err, ErrFrameTooLarge)
				require.Contains(t, err.Error(), fmt.Sprintf("outgoing message exceeds maximum size: %d > %d", max+1, max))
				require.Equal(t, dst, got, "dst must come back unchanged")
				require.Zero(t, w.counter, "a refused frame must not use a nonce")

				full := bytes.Repeat([]byte{1}, max-overhead)
				got, err = w.appendFrame(got, full)
				require.NoError(t, err)
				r := newFrameReader(bufio.NewReader(bytes.NewReader(got[len(dst):])), version, k, true, max)
				body, err := r.readFrame()
				require.NoError(t, err)
				require.Equal(t, full, body)
			})
		}
	}
}

// TestFrameWriterDefaultLimit checks the 10 MiB send limit, which applies to the sealed size.
func TestFrameWriterDefaultLimit(t *testing.T) {
	body := make([]byte, DefaultMaxFrameSize+1)
	for _, enc := range []bool{false, true} {
		var key *[32]byte
		overhead := 0
		if enc {
			key, overhead = &[32]byte{5}, secretbox.Overhead
		}
		w := newFrameWriter(2, key, false, 0)
		_, err := w.appendFrame(nil, body[:DefaultMaxFrameSize-overhead+1])
		require.ErrorIs(t, err, ErrFrameTooLarge)
		out, err := w.appendFrame(nil, body[:DefaultMaxFrameSize-overhead])
		require.NoError(t, err)
		require.Len(t, out, frameLenSize+DefaultMaxFrameSize)
	}
}

// frameFeeder is an io.Reader serving bytes set between reads, so that one
// frame at a time can be pushed through a bufio.Reader without allocating.
type frameFeeder struct{ b []byte }

// Read hands out the bytes last set, then io.EOF.
func (f *frameFeeder) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// roundTrip is a writer and a reader connected through a frameFeeder.
type roundTrip struct {
	w    *frameWriter
	r    *frameReader
	feed frameFeeder
	wire []byte
}

// newRoundTrip returns a round trip for the given version, encrypted when key is not nil.
func newRoundTrip(version byte, key *[32]byte) *roundTrip {
	rt := &roundTrip{wire: make([]byte, 0, 128<<10)}
	rt.w = newFrameWriter(version, key, true, 0)
	rt.r = newFrameReader(bufio.NewReader(&rt.feed), version, key, true, 0)
	return rt
}

// do writes body as one frame and reads it back.
func (rt *roundTrip) do(body []byte) ([]byte, error) {
	var err error
	rt.wire, err = rt.w.appendFrame(rt.wire[:0], body)
	if err != nil {
		return nil, err
	}
	rt.feed.b = rt.wire
	return rt.r.readFrame()
}

var roundTripSizes = []int{100, 1 << 10, 64 << 10}

// TestFrameRoundTripAllocs checks that writing and reading frames allocates nothing once the buffers have grown.
func TestFrameRoundTripAllocs(t *testing.T) {
	for _, version := range []byte{2, 1} {
		for _, enc := range []bool{false, true} {
			for _, size := range roundTripSizes {
				t.Run(fmt.Sprintf("v%d/encrypted=%v/%d", version, enc, size), func(t *testing.T) {
					var key *[32]byte
					if enc {
						key = &[32]byte{6}
					}
					rt := newRoundTrip(version, key)
					body := bytes.Repeat([]byte{0x42}, size)
					got, err := rt.do(body) // warm up the buffers
					require.NoError(t, err)
					require.Equal(t, body, got)
					allocs := testing.AllocsPerRun(50, func() {
						if _, err := rt.do(body); err != nil {
							t.Fatal(err)
						}
					})
					require.Zero(t, allocs, "allocations per frame in steady state")
				})
			}
		}
	}
}

// BenchmarkFrameRoundTrip measures appendFrame followed by readFrame for several sizes, in clear and sealed.
func BenchmarkFrameRoundTrip(b *testing.B) {
	for _, version := range []byte{2, 1} {
		for _, enc := range []bool{false, true} {
			for _, size := range roundTripSizes {
				mode := "plain"
				var key *[32]byte
				if enc {
					mode, key = "encrypted", &[32]byte{6}
				}
				b.Run(fmt.Sprintf("v%d/%s/%dB", version, mode, size), func(b *testing.B) {
					rt := newRoundTrip(version, key)
					body := bytes.Repeat([]byte{0x42}, size)
					if _, err := rt.do(body); err != nil { // size the buffers
						b.Fatal(err)
					}
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						if _, err := rt.do(body); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// Fuzz mode bits for FuzzFrameReader. The top three bits pick the session
// key among fuzzFrameKeyScenarios.
const (
	fuzzFrameV1        = 1 << 0 // version 1 framing
	fuzzFrameEncrypted = 1 << 1 // sealed with a captured session key
	fuzzFrameSmallMax  = 1 << 2 // a 64-byte frame limit
	fuzzFrameSmallBuf  = 1 << 3 // a 16-byte bufio.Reader
	fuzzFrameSenderOut = 1 << 4 // the sender dialled
	fuzzFrameKeyShift  = 5
)

// fuzzFrameKeyScenarios are the scenarios whose session keys the frame
// fuzzer uses.
var fuzzFrameKeyScenarios = []string{"v2-pw-probe-dials", "v2-pw-weave-dials", "v1-pw"}

// FuzzFrameReader reads arbitrary bytes as frames; whatever is accepted must write back to the same bytes.
func FuzzFrameReader(f *testing.F) {
	v := loadVectors(f)
	var keys []*[32]byte
	for _, name := range fuzzFrameKeyScenarios {
		keys = append(keys, v.scenario(f, name).sessionKey(f))
	}
	for _, fs := range frameScenarios {
		s := v.scenario(f, fs.name)
		for _, sender := range []string{"weave", "probe"} {
			var mode byte
			if fs.version == 1 {
				mode |= fuzzFrameV1
			}
			if s.Keys != nil {
				mode |= fuzzFrameEncrypted
				mode |= byte(slices.Index(fuzzFrameKeyScenarios, fs.name)) << fuzzFrameKeyShift
			}
			if fs.probeDialled == (sender == "probe") {
				mode |= fuzzFrameSenderOut
			}
			var stream []byte
			for _, vec := range s.frameVectors(sender) {
				stream = append(stream, vec.bytes(f)...)
			}
			f.Add(mode, stream)
			f.Add(mode|fuzzFrameSmallBuf, stream)
			f.Add(mode|fuzzFrameSmallMax, stream)
		}
	}
	f.Add(byte(0), []byte{0x00, 0xa0, 0x00, 0x01})

	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		version := byte(2)
		if mode&fuzzFrameV1 != 0 {
			version = 1
		}
		var key *[32]byte
		if mode&fuzzFrameEncrypted != 0 {
			key = keys[int(mode>>fuzzFrameKeyShift)%len(keys)]
		}
		max := 0
		if mode&fuzzFrameSmallMax != 0 {
			max = 64
		}
		size := 4096
		if mode&fuzzFrameSmallBuf != 0 {
			size = 16
		}
		senderOut := mode&fuzzFrameSenderOut != 0
		r := newFrameReader(bufio.NewReaderSize(bytes.NewReader(data), size), version, key, senderOut, max)
		w := newFrameWriter(version, key, senderOut, max)
		var again []byte
		for {
			body, err := r.readFrame()
			if err != nil {
				_, err2 := r.readFrame()
				if err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				break
			}
			if max > 0 && len(body) > max {
				t.Fatalf("frame of %d bytes passed a %d-byte limit", len(body), max)
			}
			// Writing back what was read must give the bytes read: frames
			// have a single encoding in version 2 (version 1 gob integers
			// may be written in longer forms than ours).
			again, err = w.appendFrame(again, body)
			if err != nil {
				t.Fatalf("writing back a frame that was read: %v", err)
			}
			if version == 2 && !bytes.HasPrefix(data, again) {
				t.Fatalf("frames written back differ from the input")
			}
		}
	})
}
