package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/nacl/secretbox"
)

// fakeConn is a net.Conn whose remote side is a recorded byte stream. Reads
// return the recording and then io.EOF; writes never block and are kept.
type fakeConn struct {
	r *bytes.Reader

	mu        sync.Mutex
	written   []byte
	writes    int
	deadlines []time.Time
	closed    bool
}

var _ net.Conn = (*fakeConn)(nil)

// newFakeConn returns a fakeConn whose remote sends remote and then closes.
func newFakeConn(remote []byte) *fakeConn {
	return &fakeConn{r: bytes.NewReader(remote)}
}

// Read returns the recorded remote bytes.
func (c *fakeConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write records p.
func (c *fakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.written = append(c.written, p...)
	c.writes++
	return len(p), nil
}

// Close makes later writes fail.
func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// SetDeadline records t.
func (c *fakeConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines = append(c.deadlines, t)
	return nil
}

// SetReadDeadline does nothing.
func (c *fakeConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline does nothing.
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// LocalAddr returns a placeholder address.
func (c *fakeConn) LocalAddr() net.Addr { return fakeAddr("local") }

// RemoteAddr returns a placeholder address.
func (c *fakeConn) RemoteAddr() net.Addr { return fakeAddr("remote") }

// output returns what has been written and in how many Write calls.
func (c *fakeConn) output() ([]byte, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.written), c.writes
}

// fakeAddr is the net.Addr of a fakeConn.
type fakeAddr string

// Network returns "fake".
func (a fakeAddr) Network() string { return "fake" }

// String returns the address text.
func (a fakeAddr) String() string { return string(a) }

// fixedKeyPair returns a keyPair function that yields the given pair.
func fixedKeyPair(pub, priv *[32]byte) func() (*[32]byte, *[32]byte, error) {
	return func() (*[32]byte, *[32]byte, error) {
		p, k := *pub, *priv
		return &p, &k, nil
	}
}

// runFakeHandshake runs doHandshake against a recorded remote stream and
// fails the test if it takes longer than a few seconds.
func runFakeHandshake(t testing.TB, remote []byte, cfg *handshakeConfig) (*fakeConn, *handshakeResult, error) {
	t.Helper()
	conn := newFakeConn(remote)
	type result struct {
		res *handshakeResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := doHandshake(conn, bufio.NewReader(conn), cfg)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return conn, r.res, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("handshake against %d recorded bytes did not return", len(remote))
		return nil, nil, nil
	}
}

// anyMap converts a decoded JSON object to a features map.
func anyMap(t testing.TB, v any) map[string]string {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "not a JSON object: %v", v)
	out := make(map[string]string, len(m))
	for k, x := range m {
		s, ok := x.(string)
		require.True(t, ok, "feature %q is not a string", k)
		out[k] = s
	}
	return out
}

// sentFeatures returns the features map a sender's features vector holds
// (version 2 frame or version 1 stream).
func (s *weaveScenario) sentFeatures(t testing.TB, sender string) map[string]string {
	t.Helper()
	for i := range s.Vectors {
		v := &s.Vectors[i]
		if v.Sender != sender || !strings.Contains(v.Name, "features") {
			continue
		}
		d := v.Decoded
		for _, k := range []string{"map_in_wire_order", "map_sorted", "map"} {
			if m, ok := d[k].(map[string]any); ok {
				return anyMap(t, m)
			}
		}
		if msgs, ok := d["gob_messages"].([]any); ok && len(msgs) > 0 {
			last, _ := msgs[len(msgs)-1].(map[string]any)
			return anyMap(t, last["value"])
		}
		if sender == "probe" {
			return loadVectors(t).Probe.FeaturesSent
		}
		t.Fatalf("%s: no features map in %s", s.Name, v.Name)
	}
	t.Fatalf("%s: no features vector from %s", s.Name, sender)
	return nil
}

// v1Only keeps the features a version 1 handshake carries.
func v1Only(m map[string]string, withKey bool) map[string]string {
	out := map[string]string{}
	for _, k := range v1FeatureKeys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	if withKey {
		if v, ok := m[featurePublicKey]; ok {
			out[featurePublicKey] = v
		}
	}
	return out
}

// vectorCase runs our handshake as one side of a captured scenario, fed the
// other side's recorded bytes.
type vectorCase struct {
	scenario   string
	us         string // "probe" or "weave": the side whose bytes we must produce
	outbound   bool
	min, max   byte
	password   bool
	version    byte
	writes     int  // Write calls we make
	headerDiff bool // our header cannot equal the recorded one
}

// them returns the side whose recorded bytes we receive.
func (vc vectorCase) them() string {
	if vc.us == "probe" {
		return "weave"
	}
	return "probe"
}

var vectorCases = []vectorCase{
	{scenario: "v2-plain-probe-dials", us: "probe", outbound: true, version: 2, writes: 2},
	{scenario: "v2-plain-weave-dials", us: "probe", outbound: false, version: 2, writes: 2},
	{scenario: "v2-pw-probe-dials", us: "probe", outbound: true, password: true, version: 2, writes: 3},
	{scenario: "v2-pw-weave-dials", us: "probe", outbound: false, password: true, version: 2, writes: 3},
	{scenario: "v1-plain", us: "probe", outbound: true, min: 1, max: 1, version: 1, writes: 1},
	{scenario: "v1-pw", us: "probe", outbound: true, min: 1, max: 1, password: true, version: 1, writes: 2},
	{scenario: "header-2-2", us: "probe", outbound: true, min: 2, max: 2, version: 2, writes: 1},
	{scenario: "header-1-1", us: "probe", outbound: true, min: 1, max: 1, version: 1, writes: 1},
	{scenario: "header-2-9", us: "probe", outbound: true, min: 2, max: 2, version: 2, writes: 1, headerDiff: true},
	{scenario: "v2-plain-probe-dials", us: "weave", outbound: false, version: 2, writes: 2},
	{scenario: "v2-plain-weave-dials", us: "weave", outbound: true, version: 2, writes: 2},
	{scenario: "v1-plain", us: "weave", outbound: false, version: 1, writes: 2},
	{scenario: "header-2-2", us: "weave", outbound: false, version: 2, writes: 2},
	{scenario: "header-1-1", us: "weave", outbound: false, version: 1, writes: 2},
	{scenario: "header-2-9", us: "weave", outbound: false, version: 2, writes: 2},
	{scenario: "topology-3-peers", us: "weave", outbound: false, version: 2, writes: 2},
}

// config returns the handshake configuration of the side we play.
func (vc vectorCase) config(t testing.TB, s *weaveScenario) *handshakeConfig {
	cfg := &handshakeConfig{
		Outbound:   vc.outbound,
		MinVersion: vc.min,
		MaxVersion: vc.max,
		Features:   loadVectors(t).Probe.FeaturesSent,
		Timeout:    5 * time.Second,
	}
	if vc.us == "weave" {
		cfg.Features = s.sentFeatures(t, "weave")
	}
	if vc.password {
		cfg.Password = []byte(s.Keys["password"])
		cfg.keyPair = fixedKeyPair(probeKeyPair(t))
	}
	return cfg
}

// handshakeLen returns how many bytes of a sender's stream belong to the
// handshake: everything up to the end of its features.
func (s *weaveScenario) handshakeLen(sender string) int {
	n := 0
	for _, v := range s.Vectors {
		if v.Sender != sender {
			continue
		}
		if strings.Contains(v.Name, "features") {
			return v.StreamOffset + len(v.Hex)/2
		}
	}
	return n
}

// TestHandshakeVectors plays one side of captured handshakes against the other side's recorded bytes.
func TestHandshakeVectors(t *testing.T) {
	v := loadVectors(t)
	for _, vc := range vectorCases {
		t.Run(vc.scenario+"/as-"+vc.us, func(t *testing.T) {
			s := v.scenario(t, vc.scenario)
			cfg := vc.config(t, s)
			start := time.Now()
			conn, res, err := runFakeHandshake(t, s.stream(t, vc.them(), 0), cfg)
			require.NoError(t, err)
			require.Equal(t, vc.version, res.Version)
			require.Equal(t, vc.password, res.Encrypted)

			// The deadline is set for the whole handshake, then cleared.
			require.Len(t, conn.deadlines, 2)
			require.WithinDuration(t, start.Add(cfg.Timeout), conn.deadlines[0], time.Second)
			require.True(t, conn.deadlines[1].IsZero(), "deadline must be cleared")

			out, writes := conn.output()
			require.Equal(t, vc.writes, writes, "Write calls")
			recorded := s.stream(t, vc.us, 0)

			// Header.
			if vc.headerDiff {
				require.Equal(t, []byte{'w', 'e', 'a', 'v', 'e', vc.min, vc.max}, out[:headerLen])
			} else {
				require.Equal(t, recorded[:headerLen], out[:headerLen], "header")
			}
			rest := out[headerLen:]

			var key *[32]byte
			if vc.password {
				key = s.sessionKey(t)
				require.Equal(t, *key, *res.writer.key, "session key (writer)")
				require.Equal(t, *key, *res.reader.key, "session key (reader)")
			} else {
				require.Nil(t, res.writer.key)
				require.Nil(t, res.reader.key)
			}

			if vc.version == 2 {
				// Flag, and our public key when encrypted: byte for byte.
				flagLen := 1
				if vc.password {
					flagLen += 32
				}
				require.Equal(t, recorded[headerLen:headerLen+flagLen], rest[:flagLen], "flag and public key")
				rest = rest[flagLen:]

				// Our features frame, opened as the remote would.
				require.GreaterOrEqual(t, len(rest), frameLenSize)
				n := int(rest[0])<<24 | int(rest[1])<<16 | int(rest[2])<<8 | int(rest[3])
				require.Len(t, rest, frameLenSize+n, "exactly one features frame")
				body := rest[frameLenSize:]
				if vc.password {
					var nonce [24]byte
					makeNonce(&nonce, vc.outbound, 0)
					require.Equal(t, s.Keys[vc.us+"_first_nonce_hex"], fmt.Sprintf("%x", nonce))
					var ok bool
					body, ok = secretbox.Open(nil, body, &nonce, key)
					require.True(t, ok, "our features frame must open with the session key")
				}
				got, err := decodeFeatures(body)
				require.NoError(t, err)
				require.Equal(t, cfg.Features, got)
				require.Equal(t, s.sentFeatures(t, vc.them()), res.Features, "remote features")
			} else {
				got, err := readFeaturesV1(bufio.NewReader(bytes.NewReader(rest)))
				require.NoError(t, err)
				require.Equal(t, s.sentFeatures(t, vc.us), got, "our v1 features")
				if vc.password {
					require.Equal(t, v.Probe.PublicKey, got[featurePublicKey])
				}
				rest = rest[len(encodeFeatures(nil, got)):]
				if vc.password {
					// Encrypted version 1 proves the password before
					// the handshake ends: a sealed heartbeat, the first
					// frame of our direction.
					r := newFrameReader(bufio.NewReader(bytes.NewReader(rest)), 1, key, vc.outbound, 0)
					body, err := r.readFrame()
					require.NoError(t, err, "our first frame opens with the session key")
					require.Equal(t, []byte{tagHeartbeat}, body)
					_, err = r.readFrame()
					require.ErrorIs(t, err, io.EOF, "nothing after it")
				} else {
					require.Empty(t, rest, "nothing after our v1 features")
				}
				require.Equal(t, v1Only(s.sentFeatures(t, vc.them()), false), res.Features, "remote features")
			}

			// Every later frame of the remote reads as its plaintext; on
			// encrypted version 1 the handshake read the first one.
			frames := s.frameVectors(vc.them())
			switch {
			case vc.version == 2:
				frames = frames[1:] // the features frame
			case vc.password:
				require.NotEmpty(t, frames)
				require.Equal(t, framePlaintext(t, frames[0], 1), res.first, frames[0].Name)
				frames = frames[1:]
			default:
				require.Nil(t, res.first)
			}
			for _, fv := range frames {
				body, err := res.reader.readFrame()
				require.NoError(t, err, fv.Name)
				require.Equal(t, framePlaintext(t, fv, vc.version), body, fv.Name)
			}
			_, err = res.reader.readFrame()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

// refusalCase feeds one side's recorded bytes to a handshake that must
// fail.
type refusalCase struct {
	name     string
	scenario string
	them     string // whose recorded bytes we receive
	truncate int    // keep only this many bytes when non-zero
	outbound bool
	password string // "" = none
	min, max byte
	want     error
	wantText string
}

var refusalCases = []refusalCase{
	{name: "version mismatch [3,3]", scenario: "header-3-3", them: "probe",
		want: ErrVersionMismatch, wantText: "remote version range [3,3] is incompatible with ours [1,2]"},
	{name: "version mismatch [1,1] vs [2,2]", scenario: "header-1-1", them: "probe", min: 2, max: 2,
		want: ErrVersionMismatch, wantText: "remote version range [1,1] is incompatible with ours [2,2]"},
	{name: "version mismatch [1,2] vs [2,2] v1 only", scenario: "header-2-2", them: "probe", min: 1, max: 1,
		want: ErrVersionMismatch, wantText: "remote version range [2,2] is incompatible with ours [1,1]"},
	{name: "bad magic", scenario: "header-bad-magic", them: "probe",
		want: ErrBadHeader, wantText: "remote protocol header not recognised: [87 69 65 86 69]"},
	{name: "bad flag", scenario: "v2-bad-flag", them: "probe",
		want: ErrBadEncryptionFlag, wantText: "Bad encryption flag 2"},
	{name: "plain probe vs weave with password", scenario: "v2-probe-plain-weave-password", them: "weave", outbound: true,
		want: ErrEncryptionMismatch, wantText: "no password specified, but peer requested an encrypted connection"},
	{name: "weave with password vs plain probe", scenario: "v2-probe-plain-weave-password", them: "probe", password: "s3cret",
		want: ErrEncryptionMismatch, wantText: "password specified, but peer requested an unencrypted connection"},
	{name: "encrypted probe vs plain weave", scenario: "v2-probe-encrypted-weave-plain", them: "weave", outbound: true, password: "s3cret",
		want: ErrEncryptionMismatch, wantText: "password specified, but peer requested an unencrypted connection"},
	{name: "plain weave vs encrypted probe", scenario: "v2-probe-encrypted-weave-plain", them: "probe",
		want: ErrEncryptionMismatch, wantText: "no password specified, but peer requested an encrypted connection"},
	{name: "plain vs flag 1 without its key", scenario: "v2-probe-encrypted-weave-plain", them: "probe", truncate: headerLen + 1,
		want: ErrEncryptionMismatch, wantText: "no password specified, but peer requested an encrypted connection"},
	{name: "wrong password, probe dials", scenario: "v2-pw-wrong-password-probe-dials", them: "weave", outbound: true, password: "wrong",
		want: ErrDecrypt, wantText: "password"},
	{name: "wrong password, weave dials", scenario: "v2-pw-wrong-password-weave-dials", them: "weave", outbound: false, password: "wrong",
		want: ErrDecrypt, wantText: "password"},
	{name: "v1 plain vs weave v1 with password", scenario: "v1-pw", them: "weave", outbound: true, min: 1, max: 1,
		want: ErrEncryptionMismatch, wantText: "no password specified, but peer requested an encrypted connection"},
	{name: "v1 password vs plain weave v1", scenario: "v1-plain", them: "weave", outbound: true, min: 1, max: 1, password: "s3cret",
		want: ErrEncryptionMismatch, wantText: "password specified, but peer requested an unencrypted connection"},
	{name: "v1 weave vs plain probe with password", scenario: "v1-plain", them: "probe", password: "s3cret",
		want: ErrEncryptionMismatch, wantText: "password specified, but peer requested an unencrypted connection"},
	{name: "silent after the header", scenario: "header-silent", them: "weave", want: io.ErrUnexpectedEOF},
}

// TestHandshakeRefusals replays captured failing handshakes and expects weave's reasons.
func TestHandshakeRefusals(t *testing.T) {
	v := loadVectors(t)
	for _, rc := range refusalCases {
		t.Run(rc.name, func(t *testing.T) {
			s := v.scenario(t, rc.scenario)
			remote := s.stream(t, rc.them, 0)
			if rc.truncate > 0 {
				remote = remote[:rc.truncate]
			}
			cfg := &handshakeConfig{
				Outbound:   rc.outbound,
				MinVersion: rc.min,
				MaxVersion: rc.max,
				Features:   v.Probe.FeaturesSent,
				Timeout:    5 * time.Second,
				keyPair:    fixedKeyPair(probeKeyPair(t)),
			}
			if rc.password != "" {
				cfg.Password = []byte(rc.password)
			}
			_, res, err := runFakeHandshake(t, remote, cfg)
			require.Error(t, err)
			require.Nil(t, res)
			require.ErrorIs(t, err, rc.want)
			require.Contains(t, err.Error(), rc.wantText)
		})
	}
}

// TestHandshakeOversizeFrames checks the frame limit during and right after the handshake.
func TestHandshakeOversizeFrames(t *testing.T) {
	v := loadVectors(t)
	s := v.scenario(t, "v2-oversize-frame")
	cfg := &handshakeConfig{Features: s.sentFeatures(t, "weave"), Timeout: 5 * time.Second}

	// weave's own reaction, reproduced: the handshake succeeds, the frame
	// after it announces 10 MiB + 1.
	_, res, err := runFakeHandshake(t, s.stream(t, "probe", 0), cfg)
	require.NoError(t, err)
	_, err = res.reader.readFrame()
	require.ErrorIs(t, err, ErrFrameTooLarge)
	require.Contains(t, err.Error(), "incoming message exceeds maximum size: 10485761 > 10485760")

	// A features frame over a (small) configured limit fails the handshake.
	small := *cfg
	small.MaxFrameSize = 100
	small.Features = map[string]string{"Name": "x"}
	_, _, err = runFakeHandshake(t, s.stream(t, "probe", 0), &small)
	require.ErrorIs(t, err, ErrFrameTooLarge)

	// Our own features over the limit are refused before being sent.
	tiny := small
	tiny.MaxFrameSize = 10
	tiny.Features = v.Probe.FeaturesSent
	_, _, err = runFakeHandshake(t, s.stream(t, "probe", 0), &tiny)
	require.ErrorIs(t, err, ErrFrameTooLarge)

	// Before the remote has shown it has the password, its features frame
	// may be no larger than the largest features map, whatever the frame
	// limit: one byte more is refused before it is read.
	for _, pw := range [][]byte{nil, []byte("pw")} {
		remote := []byte("weave\x02\x02\x00")
		if pw != nil {
			remote = append([]byte("weave\x02\x02\x01"), make([]byte, 32)...)
		}
		remote = binary.BigEndian.AppendUint32(remote, maxFeaturesFrame+1)
		_, _, err = runFakeHandshake(t, remote, &handshakeConfig{Password: pw, Features: map[string]string{"Name": "x"}, Timeout: 5 * time.Second})
		require.ErrorIs(t, err, ErrFrameTooLarge, "password %q", pw)
		require.Contains(t, err.Error(), fmt.Sprintf("%d > %d", maxFeaturesFrame+1, maxFeaturesFrame))
	}
}

// TestHandshakeBadV1PublicKey refuses version 1 public keys that are not 64 hex digits.
func TestHandshakeBadV1PublicKey(t *testing.T) {
	for _, key := range []string{"zz", strings.Repeat("zz", 32), strings.Repeat("ab", 31), strings.Repeat("ab", 33)} {
		t.Run(key, func(t *testing.T) {
			remote := append([]byte("weave\x01\x01"), encodeFeatures(nil, map[string]string{
				"Name": "02:00:00:00:00:01", featurePublicKey: key,
			})...)
			_, _, err := runFakeHandshake(t, remote, &handshakeConfig{Password: []byte("pw"), Timeout: 5 * time.Second})
			require.ErrorIs(t, err, ErrBadFeatures)
			require.Contains(t, err.Error(), "PublicKey")
		})
	}
}

// TestHandshakeMalformedFeatures refuses features that are not a gob map.
func TestHandshakeMalformedFeatures(t *testing.T) {
	tests := []struct {
		name   string
		remote []byte
		max    byte
	}{
		{"v2 frame that is not a gob map", []byte("weave\x01\x02\x00\x00\x00\x00\x03abc"), 0},
		{"v2 empty features frame", []byte("weave\x01\x02\x00\x00\x00\x00\x00"), 0},
		{"v1 gob string instead of a map", []byte("weave\x01\x01\x06\x0c\x00\x03vec\x06\x0c\x00\x03vec"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, res, err := runFakeHandshake(t, tt.remote, &handshakeConfig{MaxVersion: tt.max, Timeout: 5 * time.Second})
			require.Nil(t, res)
			require.ErrorIs(t, err, ErrBadFeatures)
		})
	}
}

// TestHandshakeConfigErrors refuses version ranges we cannot speak before sending anything.
func TestHandshakeConfigErrors(t *testing.T) {
	for _, r := range [][2]byte{{2, 1}, {0, 3}, {3, 0}, {1, 9}} {
		t.Run(fmt.Sprint(r), func(t *testing.T) {
			conn, res, err := runFakeHandshake(t, []byte("weave\x01\x02\x00"), &handshakeConfig{MinVersion: r[0], MaxVersion: r[1]})
			require.Error(t, err)
			require.Nil(t, res)
			out, _ := conn.output()
			require.Empty(t, out, "nothing may be sent with a bad configuration")
		})
	}
}

// TestHandshakeTruncated cuts each recorded handshake at every offset and expects an end-of-stream error.
func TestHandshakeTruncated(t *testing.T) {
	v := loadVectors(t)
	for _, vc := range vectorCases {
		t.Run(vc.scenario+"/as-"+vc.us, func(t *testing.T) {
			s := v.scenario(t, vc.scenario)
			remote := s.stream(t, vc.them(), 0)
			n := s.handshakeLen(vc.them())
			if vc.version == 1 && vc.password {
				// The handshake reads the remote's first sealed frame.
				first := s.frameVectors(vc.them())[0]
				n = first.StreamOffset + len(first.Hex)/2
			}
			require.Positive(t, n)
			for off := 0; off < n; off++ {
				_, res, err := runFakeHandshake(t, remote[:off], vc.config(t, s))
				require.Error(t, err, "stream cut at %d of %d", off, n)
				require.Nil(t, res)
				require.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF),
					"cut at %d: %v", off, err)
			}
			_, _, err := runFakeHandshake(t, remote[:n], vc.config(t, s))
			require.NoError(t, err, "the complete handshake")
		})
	}
}

// tcpPair returns the two ends of a loopback TCP connection: the dialled
// end first, the accepted end second.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	dialled, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { dialled.Close() })
	c, ok := <-accepted
	require.True(t, ok, "accept failed")
	t.Cleanup(func() { c.Close() })
	return dialled, c
}

// TestHandshakeTimeout checks that a remote going silent at any step hits the handshake deadline.
func TestHandshakeTimeout(t *testing.T) {
	v := loadVectors(t)
	tests := []struct {
		name string
		send []byte // what the remote sends before going silent
	}{
		{"silent", nil},
		{"silent after the header", []byte("weave\x01\x02")},
		{"silent after the flag", []byte("weave\x01\x02\x00")},
		{"silent inside the features", v.scenario(t, "v2-plain-probe-dials").stream(t, "weave", 0)[:20]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ours, theirs := tcpPair(t)
			if tt.send != nil {
				_, err := theirs.Write(tt.send)
				require.NoError(t, err)
			}
			start := time.Now()
			_, err := doHandshake(ours, bufio.NewReader(ours), &handshakeConfig{
				Outbound: true,
				Features: v.Probe.FeaturesSent,
				Timeout:  200 * time.Millisecond,
			})
			require.Error(t, err)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout())
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// testPeerFeatures returns a plausible features map for a test peer.
func testPeerFeatures(n int) map[string]string {
	return map[string]string{
		"PeerNameFlavour": PeerNameFlavour,
		"Name":            fmt.Sprintf("02:00:00:00:00:%02x", n),
		"NickName":        fmt.Sprintf("peer%d", n),
		"ShortID":         fmt.Sprint(n),
		"UID":             fmt.Sprint(1000 + n),
		"ConnID":          fmt.Sprint(2000 + n),
		"Trusted":         "false",
	}
}

// endResult is what one end of a loopback handshake got.
type endResult struct {
	res *handshakeResult
	err error
}

// handshakePair runs both ends of a handshake concurrently over conns a
// (dialled) and b (accepted).
func handshakePair(a, b net.Conn, ca, cb *handshakeConfig) (ra, rb endResult) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ra.res, ra.err = doHandshake(a, bufio.NewReader(a), ca)
	}()
	go func() {
		defer wg.Done()
		rb.res, rb.err = doHandshake(b, bufio.NewReader(b), cb)
	}()
	wg.Wait()
	return ra, rb
}

// exchange sends bodies from one end to the other and checks they arrive.
func exchange(t *testing.T, from *handshakeResult, fromConn net.Conn, to *handshakeResult, bodies ...[]byte) {
	t.Helper()
	var wire []byte
	for _, b := range bodies {
		var err error
		wire, err = from.writer.appendFrame(wire, b)
		require.NoError(t, err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := fromConn.Write(wire)
		werr <- err
	}()
	for i, b := range bodies {
		got, err := to.reader.readFrame()
		require.NoError(t, err, "frame %d", i)
		require.True(t, bytes.Equal(b, got), "frame %d: %d bytes, got %d", i, len(b), len(got))
	}
	require.NoError(t, <-werr)
}

var bigBody = sync.OnceValue(func() []byte {
	b := make([]byte, DefaultMaxFrameSize+1)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
})

// TestHandshakeLoopback runs both ends over loopback TCP in many configurations, then exchanges frames.
func TestHandshakeLoopback(t *testing.T) {
	pw := []byte("s3cret")
	tests := []struct {
		name         string
		a, b         handshakeConfig // a dials b
		version      byte
		encrypted    bool
		wantA, wantB error // expected failures (sentinels)
		textA, textB string
	}{
		{name: "plain", version: 2},
		{name: "password", a: handshakeConfig{Password: pw}, b: handshakeConfig{Password: pw}, version: 2, encrypted: true},
		{name: "empty passwords", a: handshakeConfig{Password: []byte{}}, b: handshakeConfig{Password: []byte{}}, version: 2, encrypted: true},
		{name: "v2 only", a: handshakeConfig{MinVersion: 2}, b: handshakeConfig{MinVersion: 2, Password: nil}, version: 2},
		{name: "v2 only with password", a: handshakeConfig{MinVersion: 2, Password: pw}, b: handshakeConfig{MinVersion: 2, Password: pw}, version: 2, encrypted: true},
		{name: "dialler v1 only", a: handshakeConfig{MaxVersion: 1}, version: 1},
		{name: "acceptor v1 only", b: handshakeConfig{MaxVersion: 1}, version: 1},
		{name: "v1 only with password", a: handshakeConfig{MaxVersion: 1, Password: pw}, b: handshakeConfig{Password: pw}, version: 1, encrypted: true},
		{name: "acceptor v1 only with password", a: handshakeConfig{Password: pw}, b: handshakeConfig{MaxVersion: 1, Password: pw}, version: 1, encrypted: true},
		{name: "incompatible versions", a: handshakeConfig{MinVersion: 2}, b: handshakeConfig{MaxVersion: 1},
			wantA: ErrVersionMismatch, wantB: ErrVersionMismatch,
			textA: "remote version range [1,1] is incompatible with ours [2,2]", textB: "remote version range [2,2] is incompatible with ours [1,1]"},
		{name: "different passwords", a: handshakeConfig{Password: pw}, b: handshakeConfig{Password: []byte("other")},
			wantA: ErrDecrypt, wantB: ErrDecrypt, textA: "password", textB: "password"},
		{name: "password vs none", a: handshakeConfig{Password: pw},
			wantA: ErrEncryptionMismatch, wantB: ErrEncryptionMismatch,
			textA: "password specified, but peer requested an unencrypted connection", textB: "no password specified, but peer requested an encrypted connection"},
		{name: "empty password vs none", b: handshakeConfig{Password: []byte{}},
			wantA: ErrEncryptionMismatch, wantB: ErrEncryptionMismatch,
			textA: "no password specified, but peer requested an encrypted connection", textB: "password specified, but peer requested an unencrypted connection"},
		{name: "v1 password vs none", a: handshakeConfig{MaxVersion: 1, Password: pw},
			wantA: ErrEncryptionMismatch, wantB: ErrEncryptionMismatch},
		{name: "v1 different passwords", a: handshakeConfig{MaxVersion: 1, Password: pw}, b: handshakeConfig{Password: []byte("other")},
			wantA: ErrDecrypt, wantB: ErrDecrypt, textA: "most likely have different passwords", textB: "most likely have different passwords"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, cb := tt.a, tt.b
			ca.Outbound, cb.Outbound = true, false
			ca.Features, cb.Features = testPeerFeatures(1), testPeerFeatures(2)
			ca.Timeout, cb.Timeout = 5*time.Second, 5*time.Second
			a, b := tcpPair(t)
			ra, rb := handshakePair(a, b, &ca, &cb)
			if tt.wantA != nil || tt.wantB != nil {
				require.ErrorIs(t, ra.err, tt.wantA)
				require.ErrorIs(t, rb.err, tt.wantB)
				require.Contains(t, ra.err.Error(), tt.textA)
				require.Contains(t, rb.err.Error(), tt.textB)
				return
			}
			require.NoError(t, ra.err)
			require.NoError(t, rb.err)
			for _, r := range []*handshakeResult{ra.res, rb.res} {
				require.Equal(t, tt.version, r.Version)
				require.Equal(t, tt.encrypted, r.Encrypted)
			}
			wantA, wantB := cb.Features, ca.Features
			if tt.version == 1 {
				wantA, wantB = v1Only(wantA, false), v1Only(wantB, false)
			}
			require.Equal(t, wantA, ra.res.Features)
			require.Equal(t, wantB, rb.res.Features)

			small := [][]byte{{tagHeartbeat}, []byte("\x04hello"), {}, bytes.Repeat([]byte{0x05}, 5000)}
			exchange(t, ra.res, a, rb.res, small...)
			exchange(t, rb.res, b, ra.res, small...)

			// The 10 MiB limit on send: the largest body that fits goes
			// through, one byte more is refused and uses no nonce.
			overhead := 0
			if tt.encrypted {
				overhead = secretbox.Overhead
			}
			big := bigBody()
			largest := big[:DefaultMaxFrameSize-overhead]
			for _, w := range []*frameWriter{ra.res.writer, rb.res.writer} {
				_, err := w.appendFrame(nil, big[:len(largest)+1])
				require.ErrorIs(t, err, ErrFrameTooLarge)
			}
			exchange(t, ra.res, a, rb.res, largest, []byte{tagHeartbeat})
			exchange(t, rb.res, b, ra.res, []byte("\x04after"))
		})
	}
}

// TestHandshakeNetPipe runs both ends over an unbuffered net.Pipe.
func TestHandshakeNetPipe(t *testing.T) {
	// net.Pipe has no buffering: a handshake that wrote and read in one
	// goroutine would deadlock on it.
	for _, pw := range [][]byte{nil, []byte("pw")} {
		for _, maxA := range []byte{1, 2} {
			t.Run(fmt.Sprintf("password=%v/v%d", pw != nil, maxA), func(t *testing.T) {
				a, b := net.Pipe()
				t.Cleanup(func() { a.Close(); b.Close() })
				ca := handshakeConfig{Outbound: true, Password: pw, MaxVersion: maxA, Features: testPeerFeatures(1), Timeout: 5 * time.Second}
				cb := handshakeConfig{Password: pw, Features: testPeerFeatures(2), Timeout: 5 * time.Second}
				ra, rb := handshakePair(a, b, &ca, &cb)
				require.NoError(t, ra.err)
				require.NoError(t, rb.err)
				exchange(t, ra.res, a, rb.res, []byte("\x04ping"))
				exchange(t, rb.res, b, ra.res, []byte("\x04pong"))
			})
		}
	}
}

// TestAbortConn checks that an aborted TCP connection reaches the remote as a reset.
func TestAbortConn(t *testing.T) {
	t.Run("tcp reset", func(t *testing.T) {
		a, b := tcpPair(t)
		abortConn(a)
		require.NoError(t, b.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := b.Read(make([]byte, 1))
		require.ErrorIs(t, err, syscall.ECONNRESET, "the remote must see a reset, not an orderly close")
	})
	t.Run("other conn closed", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		abortConn(a)
		_, err := a.Write([]byte{1})
		require.ErrorIs(t, err, io.ErrClosedPipe)
	})
}

// Fuzz mode bits for FuzzHandshake.
const (
	fuzzHSOutbound = 1 << 0
	fuzzHSPassword = 1 << 1
	fuzzHSV1Only   = 1 << 2
	fuzzHSV2Only   = 1 << 3
)

// FuzzHandshake runs our handshake against arbitrary remote bytes; it must end without panicking or hanging.
func FuzzHandshake(f *testing.F) {
	v := loadVectors(f)
	pub, priv := probeKeyPair(f)
	for _, s := range v.Scenarios {
		for _, them := range []string{"weave", "probe"} {
			remote := s.stream(f, them, 0)
			if len(remote) == 0 {
				continue
			}
			var mode byte
			if (them == "weave") != strings.Contains(s.Name, "weave-dials") {
				mode |= fuzzHSOutbound
			}
			if s.Keys != nil {
				mode |= fuzzHSPassword
			}
			if strings.HasPrefix(s.Name, "v1-") {
				mode |= fuzzHSV1Only
			}
			f.Add(mode, remote)
		}
	}

	f.Fuzz(func(t *testing.T, mode byte, remote []byte) {
		cfg := &handshakeConfig{
			Outbound: mode&fuzzHSOutbound != 0,
			Features: v.Probe.FeaturesSent,
			Timeout:  2 * time.Second,
			keyPair:  fixedKeyPair(pub, priv),
		}
		if mode&fuzzHSPassword != 0 {
			cfg.Password = []byte(v.Probe.Password)
		}
		if mode&fuzzHSV1Only != 0 {
			cfg.MaxVersion = 1
		} else if mode&fuzzHSV2Only != 0 {
			cfg.MinVersion = 2
		}
		conn := newFakeConn(remote)
		res, err := doHandshake(conn, bufio.NewReader(conn), cfg)
		if err != nil {
			if res != nil {
				t.Fatal("a result with an error")
			}
			return
		}
		if res.Version != 1 && res.Version != 2 {
			t.Fatalf("version %d", res.Version)
		}
		if res.Encrypted != (cfg.Password != nil) {
			t.Fatalf("encrypted = %v with password %q", res.Encrypted, cfg.Password)
		}
		for i := 0; i < 1000; i++ {
			if _, err := res.reader.readFrame(); err != nil {
				break
			}
		}
	})
}
