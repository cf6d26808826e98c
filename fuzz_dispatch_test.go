package mesh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pipeListener is a net.Listener whose connections the test hands over:
// the server ends of net.Pipe pairs.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return fakeAddr("pipe") }

// dial returns the client end of a new connection to the listener.
func (l *pipeListener) dial() (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

// pipeTransport listens on one pipeListener and cannot dial.
type pipeTransport struct{ ln *pipeListener }

func (p *pipeTransport) Listen(string) (net.Listener, error) { return p.ln, nil }

func (p *pipeTransport) DialContext(context.Context, string) (net.Conn, error) {
	return nil, errors.New("pipe transport does not dial")
}

// Mode bits of FuzzDispatch, after the tampering kind (the low three bits,
// as in FuzzSealedFrames but without fuzzSealRaw).
const (
	fuzzDispatchV1      = 1 << 3 // protocol version 1
	fuzzDispatchDigests = 1 << 4 // the remote says it understands digests
)

// meshGoroutines returns the stacks of the goroutines, other than the
// caller, that run code of this package.
func meshGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i > 0 && strings.Contains(g, "gossip-mesh/mesh.") {
			out = append(out, g)
		}
	}
	return out
}

// dispatchTamperKind returns the tampering the low bits of mode ask for;
// the dispatch targets always seal what they send (no fuzzSealRaw).
func dispatchTamperKind(mode byte) int {
	if kind := int(mode&7) % fuzzSealKinds; kind != fuzzSealRaw {
		return kind
	}
	return fuzzSealNone
}

// splitBodies16 cuts data into frame bodies, each introduced by a
// two-byte big-endian length.
func splitBodies16(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
		out = append(out, data[2:2+n])
		data = data[2+n:]
	}
	return out
}

// joinBodies16 is the inverse of splitBodies16.
func joinBodies16(bodies ...[]byte) []byte {
	var out []byte
	for _, b := range bodies {
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// dispatchRouter is a running router reached through a pipeListener, with
// a recording Gossiper on channel "vec".
type dispatchRouter struct {
	r        *Router
	ln       *pipeListener
	g        *recordingGossiper
	password []byte
	peer     PeerName // the name the remote end uses
	conns    uint64
	marker   int
}

func newDispatchRouter(tb testing.TB) *dispatchRouter {
	v := loadVectors(tb)
	name, err := PeerNameFromString("02:00:00:00:00:01")
	if err != nil {
		tb.Fatal(err)
	}
	peer, err := PeerNameFromString(v.Probe.Name)
	if err != nil {
		tb.Fatal(err)
	}
	ln := newPipeListener()
	d := &dispatchRouter{ln: ln, g: &recordingGossiper{}, password: []byte(v.Probe.Password), peer: peer}
	d.r, err = NewRouter(Config{
		Password:  d.password,
		MaxPeers:  64,
		Transport: &pipeTransport{ln: ln},
		// Every input opens a connection, as fast as the fuzzer goes.
		Accept: AcceptLimits{Rate: 1e9, Burst: 1 << 30, MaxPending: 1 << 20, MaxPendingPerIP: 1 << 20},
	}, name, "weaveA", nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := d.r.NewGossip("vec", d.g); err != nil {
		tb.Fatal(err)
	}
	if err := d.r.Start(); err != nil {
		tb.Fatal(err)
	}
	return d
}

// idle reports whether the router has no connection left.
func (d *dispatchRouter) idle() bool {
	d.r.mu.RLock()
	defer d.r.mu.RUnlock()
	return len(d.r.pending) == 0 && len(d.r.conns) == 0
}

// settle waits until every message delivered so far has reached the
// Gossiper, by sending ourselves a marker through the same inbox, and
// returns what the Gossiper got before the marker, then forgets it.
func (d *dispatchRouter) settle(tb testing.TB) []recordedCall {
	d.marker++
	marker := fmt.Sprintf("\xffmarker %d", d.marker)
	if err := d.r.sendUnicast("vec", d.r.Ourself.Name, []byte(marker)); err != nil {
		tb.Fatalf("marker: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		calls := d.g.snapshot()
		if i := slices.IndexFunc(calls, func(c recordedCall) bool { return c.msg == marker }); i >= 0 {
			d.g.mu.Lock()
			d.g.calls = nil
			d.g.mu.Unlock()
			return calls[:i]
		}
		if time.Now().After(deadline) {
			tb.Fatal("the marker never reached the Gossiper")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// expectedCalls returns what router r hands to the Gossiper of "vec" for
// the first intact bodies of a connection: it stops at the first body that
// ends the connection (a gossip message that does not parse, a topology or
// digest that does not decode).
func expectedCalls(r *Router, bodies [][]byte, intact int, digests bool) []recordedCall {
	var out []recordedCall
	for _, b := range bodies[:intact] {
		if len(b) == 0 {
			continue
		}
		switch b[0] {
		case tagGossip, tagGossipUnicast, tagGossipBroadcast:
		default:
			continue
		}
		m, err := parseGossipMessage(b)
		if err != nil {
			return out
		}
		switch {
		case m.Tag == tagGossip && m.Channel == topologyChannel:
			if _, err := decodeTopology(m.Payload, r.limits); err != nil {
				return out
			}
		case m.Tag == tagGossip && m.Channel == digestChannel && digests:
			if _, err := parseDigest(m.Payload); err != nil {
				return out
			}
		case m.Channel != "vec":
		case m.Tag == tagGossipUnicast && m.Dst == r.Ourself.Name:
			out = append(out, recordedCall{"unicast", m.Src, string(m.Payload)})
		case m.Tag == tagGossipBroadcast:
			out = append(out, recordedCall{"broadcast", m.Src, string(m.Payload)})
		case m.Tag == tagGossip:
			out = append(out, recordedCall{"gossip", UnknownPeerName, string(m.Payload)})
		}
	}
	return out
}

// run connects as d.peer, completes the handshake, sends the bodies sealed
// and tampered with as mode says, closes, and returns the bodies and how
// many of them the router must have accepted.
func (d *dispatchRouter) run(tb testing.TB, mode byte, data []byte, pos uint16, xor byte) ([][]byte, int) {
	conn, err := d.ln.dial()
	if err != nil {
		tb.Fatal(err)
	}
	d.conns++
	features := (&peerFeatures{Name: d.peer, NickName: "probe", UID: 99, ConnID: d.conns}).featuresMap(nil)
	if mode&fuzzDispatchDigests != 0 {
		features[featureTopologyDigest] = strconv.Itoa(ourDigestLevel)
	}
	cfg := &handshakeConfig{Outbound: true, Password: d.password, Features: features, Timeout: 10 * time.Second}
	if mode&fuzzDispatchV1 != 0 {
		cfg.MaxVersion = 1
	}
	br := bufio.NewReader(conn)
	res, err := doHandshake(conn, br, cfg)
	if err != nil {
		tb.Fatalf("handshake with the router: %v", err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, br)
	}()

	bodies := splitBodies16(data)
	stream, _, intact := sealTampered(tb, res.writer, bodies, dispatchTamperKind(mode), pos, xor)
	// The router may end the connection before it has read everything.
	_, _ = conn.Write(stream)
	conn.Close()
	<-drained
	deadline := time.Now().Add(30 * time.Second)
	for !d.idle() {
		if time.Now().After(deadline) {
			tb.Fatal("the router did not end the connection")
		}
		time.Sleep(50 * time.Microsecond)
	}
	return bodies, intact
}

// FuzzDispatchLive feeds sealed frames with arbitrary bodies, tampered
// with or not, into a running router over a real handshake. Whatever the
// bodies, the router must not panic, must end the connection at the first
// frame that fails authentication (a flipped bit, a replayed, reordered or
// missing frame), and its Gossiper must get exactly the messages of the
// frames before that, up to the first malformed one. FuzzDispatch checks
// the same without goroutines or timing, which suits fuzzing better; this
// one runs the same corpus through everything a connection goes through.
func FuzzDispatchLive(f *testing.F) {
	addDispatchSeeds(f)
	// The fuzzing engine starts goroutines of its own: count only those
	// running this package's code.
	before := len(meshGoroutines())
	d := newDispatchRouter(f)
	f.Cleanup(func() {
		d.r.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			left := meshGoroutines()
			if len(left) <= before {
				return
			}
			if time.Now().After(deadline) {
				f.Errorf("%d goroutines running this package before the router started, %d after Stop:\n%s",
					before, len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	f.Fuzz(func(t *testing.T, mode byte, data []byte, pos uint16, xor byte) {
		bodies, intact := d.run(t, mode, data, pos, xor)
		want := expectedCalls(d.r, bodies, intact, mode&fuzzDispatchDigests != 0)
		got := d.settle(t)
		if !slices.Equal(got, want) {
			t.Fatalf("the Gossiper got %d messages, want %d (frames intact: %d of %d):\ngot  %v\nwant %v",
				len(got), len(want), intact, len(bodies), got, want)
		}
	})
}

// addDispatchSeeds adds the seeds of FuzzDispatch and FuzzDispatchLive:
// what the probe sent weave in the captures, tampered with in every way,
// and a few hand-made sequences.
func addDispatchSeeds(f *testing.F) {
	v := loadVectors(f)
	var bodies [][]byte
	for _, fr := range vectorFrames(f) {
		if fr.sender == "probe" && fr.scenario == "v2-plain-probe-dials" {
			bodies = append(bodies, fr.body)
		}
	}
	if len(bodies) == 0 {
		f.Fatal("no probe frames in the vectors")
	}
	all := joinBodies16(bodies...)
	for kind := range byte(fuzzSealKinds) {
		for _, extra := range []byte{0, fuzzDispatchV1, fuzzDispatchDigests} {
			f.Add(kind|extra, all, uint16(3), byte(0x10))
		}
	}
	probe, _ := PeerNameFromString(v.Probe.Name)
	us, _ := PeerNameFromString("02:00:00:00:00:01")
	unicast := appendGossipMessage(nil, &gossipMessage{Tag: tagGossipUnicast, Channel: "vec", Src: probe, Dst: us, Payload: []byte("one")})
	bcast := appendGossipMessage(nil, &gossipMessage{Tag: tagGossipBroadcast, Channel: "vec", Src: probe, Payload: []byte("two")})
	digest := appendGossipMessage(nil, &gossipMessage{Tag: tagGossip, Channel: digestChannel, Src: probe,
		Payload: appendDigest(nil, []digestEntry{{Name: probe, UID: 99, Version: 3}})})
	f.Add(byte(fuzzSealDup|fuzzDispatchDigests), joinBodies16(unicast, digest, bcast, unicast), uint16(0), byte(0))
	f.Add(byte(fuzzSealSwap), joinBodies16(unicast, bcast, unicast), uint16(1), byte(0))
}

// FuzzDispatch runs a connection's read loop on a router that was never
// started, over sealed frames with arbitrary bodies, tampered with or not:
// nothing runs in the background and nothing depends on timing, so every
// input behaves the same each time. Whatever the bodies, the read loop
// must not panic, must stop at the first frame that fails authentication
// (a flipped bit, a replayed, reordered or missing frame), must hand the
// Gossiper exactly the messages of the frames before it up to the first
// malformed one, and must keep within the limits of the peer table and
// the send queue.
func FuzzDispatch(f *testing.F) {
	addDispatchSeeds(f)
	f.Fuzz(func(t *testing.T, mode byte, data []byte, pos uint16, xor byte) {
		got, want, bodies, intact := syncDispatch(t, mode, data, pos, xor)
		if !slices.Equal(got, want) {
			t.Fatalf("the Gossiper would get %d messages, want %d (frames intact: %d of %d):\ngot  %v\nwant %v",
				len(got), len(want), intact, len(bodies), got, want)
		}
	})
}

// syncDispatch is one input of FuzzDispatch. It checks the limits itself
// and returns what the Gossiper of "vec" would get and what it must get.
func syncDispatch(t testing.TB, mode byte, data []byte, pos uint16, xor byte) (got, want []recordedCall, bodies [][]byte, intact int) {
	us, _ := PeerNameFromString("02:00:00:00:00:01")
	peer, _ := PeerNameFromString(loadVectors(t).Probe.Name)
	const maxPeers, queueBytes = 64, 64 << 10
	r, err := NewRouter(Config{MaxPeers: maxPeers, SendQueueBytes: queueBytes}, us, "weaveA", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewGossip("vec", &recordingGossiper{}); err != nil {
		t.Fatal(err)
	}
	version := byte(2)
	if mode&fuzzDispatchV1 != 0 {
		version = 1
	}
	digests := mode&fuzzDispatchDigests != 0
	bodies = splitBodies16(data)
	// The remote dialled: its frames carry the outbound bit.
	kind := dispatchTamperKind(mode)
	var stream []byte
	var frames int
	stream, frames, intact = sealTampered(t, newFrameWriter(version, fuzzSessionKey, true, 0), bodies, kind, pos, xor)

	c := r.newConnection(newFakeConn(nil), false, "", nil)
	c.remoteName, c.remoteUID, c.remoteNick = peer, 99, "probe"
	c.remoteSumm = peerSummary{Name: peer, NickName: "probe", UID: 99}
	c.ourConnID, c.remoteConnID = 1, 2
	c.version, c.encrypted, c.digests = version, true, digests
	c.reader = newFrameReader(bufio.NewReader(bytes.NewReader(stream)), version, fuzzSessionKey, true, 0)
	c.writer = newFrameWriter(version, fuzzSessionKey, false, 0)
	if err := r.addConnection(c); err != nil {
		t.Fatal(err)
	}
	err = c.readLoop()
	tampered := kind == fuzzSealFlip || kind == fuzzSealDup || kind == fuzzSealSwap
	if tampered && intact < frames && errors.Is(err, io.EOF) {
		t.Fatalf("the read loop reached a clean end past tampered frame %d", intact)
	}

	ch := r.channel("vec")
	ch.mu.Lock()
	for _, it := range ch.items {
		switch it.kind {
		case inboxUnicast:
			got = append(got, recordedCall{"unicast", it.src, string(it.msg)})
		case inboxBroadcast:
			got = append(got, recordedCall{"broadcast", it.src, string(it.msg)})
		case inboxGossip:
			got = append(got, recordedCall{"gossip", UnknownPeerName, string(it.msg)})
		}
	}
	ch.mu.Unlock()
	want = expectedCalls(r, bodies, intact, digests)
	if n := r.Peers.Len(); n > maxPeers {
		t.Fatalf("%d peers with a limit of %d", n, maxPeers)
	}
	c.q.mu.Lock()
	queued, surrogate := len(c.q.buf), c.q.surrogateBytes
	c.q.mu.Unlock()
	if queued > queueBytes+4+len(data) || surrogate > maxSurrogatePending+len(data)+maxChannelNameLen+surrogateKeyOverhead {
		t.Fatalf("send queue holds %d bytes and %d of relayed gossip", queued, surrogate)
	}
	r.removeConnection(c)
	c.shutdown(err)
	return got, want, bodies, intact
}

// TestDispatchVectorMessages checks FuzzDispatch's harness on what the
// probe sent weave: three messages for "vec", unless tampered with.
func TestDispatchVectorMessages(t *testing.T) {
	var bodies [][]byte
	for _, fr := range vectorFrames(t) {
		if fr.sender == "probe" && fr.scenario == "v2-plain-probe-dials" {
			bodies = append(bodies, fr.body)
		}
	}
	data := joinBodies16(bodies...)
	for _, mode := range []byte{fuzzSealNone, fuzzDispatchV1, fuzzDispatchDigests} {
		got, want, _, _ := syncDispatch(t, mode, data, 0, 0)
		require.Len(t, want, 3)
		require.Equal(t, want, got)
	}
	// Replaying the first frame stops everything after it.
	got, want, _, intact := syncDispatch(t, fuzzSealDup, data, 0, 0)
	require.Equal(t, 1, intact)
	require.Equal(t, want, got)
	require.Len(t, got, 0, "the first frame is not a message for vec")
}

// TestSplitBodies16 checks the helpers of FuzzDispatch.
func TestSplitBodies16(t *testing.T) {
	bodies := [][]byte{{}, []byte("ab"), bytes.Repeat([]byte{7}, 300)}
	got := splitBodies16(joinBodies16(bodies...))
	if len(got) != 3 || !bytes.Equal(got[1], bodies[1]) || !bytes.Equal(got[2], bodies[2]) {
		t.Fatalf("split %v", got)
	}
	if got := splitBodies16([]byte("\xff\xffabc")); len(got) != 1 || string(got[0]) != "abc" {
		t.Fatalf("a length past the end: %q", got)
	}
}
