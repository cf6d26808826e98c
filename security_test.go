package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"github.com/stretchr/testify/require"
)

// Tests that send oversized and abusive input to running routers over TCP
// and check that the connection is refused or closed for the right reason
// while the router stays healthy, and tests of what the crypto rejects.

// logRecorder is a Logger that keeps every line.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Printf(format string, args ...interface{}) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// matching returns the lines that contain every one of subs.
func (l *logRecorder) matching(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// checkGoroutines records how many goroutines run now and, at cleanup
// (after the cleanups registered later, such as stopping routers), waits
// until no more run.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(20 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("%d goroutines before, %d after stopping every router:\n%s", before, runtime.NumGoroutine(), buf[:n])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// secRouter is a router started for these tests, with a recording Gossiper
// on channel "vec" and its log.
type secRouter struct {
	*Router
	g   *recordingGossiper
	log *logRecorder
}

// startSecRouter starts router number i on 127.0.0.1 with cfg; it is
// stopped at cleanup. prepare, if any, runs before Start.
func startSecRouter(t *testing.T, cfg Config, i int, prepare ...func(*Router)) *secRouter {
	t.Helper()
	cfg.Host = "127.0.0.1"
	s := &secRouter{g: &recordingGossiper{}, log: &logRecorder{}}
	var err error
	s.Router, err = NewRouter(cfg, testPeerName(i), fmt.Sprintf("sec%d", i), nil, s.log)
	require.NoError(t, err)
	_, err = s.NewGossip("vec", s.g)
	require.NoError(t, err)
	for _, f := range prepare {
		f(s.Router)
	}
	require.NoError(t, s.Start())
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *secRouter) addr() string { return s.ListenAddr().String() }

// received counts the messages with the given text the Gossiper got.
func (s *secRouter) received(msg string) int {
	n := 0
	for _, c := range s.g.snapshot() {
		if c.msg == msg {
			n++
		}
	}
	return n
}

// requireHealthy checks that a new peer can still join r and send it a
// unicast.
func requireHealthy(t *testing.T, r *secRouter, cfg Config, i int) {
	t.Helper()
	cfg.Password = r.Password
	h := startSecRouter(t, cfg, i)
	h.ConnectionMaker.InitiateConnections([]string{r.addr()}, false)
	msg := fmt.Sprintf("healthy %d", i)
	waitFor(t, "a new peer to reach the router", func() bool {
		_, ok := h.Routes.UnicastAll(r.Ourself.Name)
		return ok
	})
	waitFor(t, "a unicast from the new peer", func() bool {
		if r.received(msg) > 0 {
			return true
		}
		_ = h.sendUnicast("vec", r.Ourself.Name, []byte(msg))
		return false
	})
}

// loopbackSeq numbers the source addresses of dialLoopback.
var loopbackSeq atomic.Uint32

// requireLoopbackRange skips the test unless connections can come from
// any address of 127.0.0.0/8, as on Linux.
func requireLoopbackRange(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 3, 0, 1)}}
	conn, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Skipf("connections from 127.3.0.1 are not possible here: %v", err)
	}
	conn.Close()
}

// dialLoopback connects to addr from a loopback address of its own
// (127.1.x.y), so that what the router logs once a minute per address is
// logged for each connection of a test. The connection is closed at
// cleanup. Tests that use it call requireLoopbackRange first.
func dialLoopback(t *testing.T, addr string) net.Conn {
	t.Helper()
	n := loopbackSeq.Add(1)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(n/250), byte(n%250+1))}}
	conn, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawPeer is a peer the test plays by hand over TCP.
type rawPeer struct {
	conn net.Conn
	br   *bufio.Reader
	res  *handshakeResult
	name PeerName
}

// dialRaw connects to addr as peer number i and runs the handshake, with
// cfg adjusted by mod.
func dialRaw(t *testing.T, addr string, i int, password []byte, mod func(*handshakeConfig)) (*rawPeer, error) {
	t.Helper()
	conn := dialLoopback(t, addr)
	p := &rawPeer{conn: conn, br: bufio.NewReader(conn), name: testPeerName(i)}
	f := peerFeatures{Name: p.name, NickName: fmt.Sprintf("raw%d", i), UID: PeerUID(1000 + i), ConnID: uint64(i)}
	cfg := &handshakeConfig{Outbound: true, Password: password, Features: f.featuresMap(nil), Timeout: 10 * time.Second}
	if mod != nil {
		mod(cfg)
	}
	var err error
	p.res, err = doHandshake(conn, p.br, cfg)
	return p, err
}

// send seals bodies and writes them; a write error is returned (the router
// may have closed the connection already).
func (p *rawPeer) send(t *testing.T, bodies ...[]byte) error {
	t.Helper()
	var out []byte
	for _, b := range bodies {
		var err error
		out, err = p.res.writer.appendFrame(out, b)
		require.NoError(t, err)
	}
	_, err := p.conn.Write(out)
	return err
}

// waitClosed reads (and discards) what the router sends until it closes
// the connection, and returns the read error. It fails the test if the
// connection is still open after 30 seconds.
func waitClosed(t *testing.T, conn net.Conn) error {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err := io.Copy(io.Discard, conn)
	if err == nil {
		return io.EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the router did not close the connection")
	}
	return err
}

// gossipBody returns the frame body of a gossip message.
func gossipBody(tag byte, channel string, src, dst PeerName, payload []byte) []byte {
	return appendGossipMessage(nil, &gossipMessage{Tag: tag, Channel: channel, Src: src, Dst: dst, Payload: payload})
}

// TestRouterClosesOnOversizedFrames sends frames over the size limit, in
// and after the handshake: the connection ends before the frame is read,
// the log says why, and the router goes on.
func TestRouterClosesOnOversizedFrames(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	for _, pw := range [][]byte{nil, []byte("a long enough password, really")} {
		for _, maxFrame := range []int{0, 4096} {
			t.Run(fmt.Sprintf("encrypted=%v/max=%d", pw != nil, maxFrame), func(t *testing.T) {
				cfg := Config{Password: pw, MaxFrameSize: maxFrame}
				r := startSecRouter(t, cfg, 1)
				limit := effectiveMaxFrame(maxFrame)

				// After the handshake: a length one over the limit, with
				// no body behind it.
				p, err := dialRaw(t, r.addr(), 2, pw, nil)
				require.NoError(t, err)
				over := []byte{byte((limit + 1) >> 24), byte((limit + 1) >> 16), byte((limit + 1) >> 8), byte(limit + 1)}
				_, err = p.conn.Write(over)
				require.NoError(t, err)
				waitClosed(t, p.conn)
				waitFor(t, "the log line", func() bool {
					return len(r.log.matching("exceeds maximum size", fmt.Sprintf("%d > %d", limit+1, limit))) == 1
				})

				// A message over the limit is refused by our own writer;
				// sealed by hand it is refused by the router.
				p, err = dialRaw(t, r.addr(), 3, pw, nil)
				require.NoError(t, err)
				_, err = p.conn.Write(append(over, make([]byte, limit+1)...))
				if err == nil {
					waitClosed(t, p.conn)
				}

				// In the handshake: a features frame over the limit.
				conn := dialLoopback(t, r.addr())
				flag := []byte{0}
				if pw != nil {
					flag = append([]byte{1}, make([]byte, 32)...)
				}
				_, err = conn.Write(append(append([]byte("weave\x02\x02"), flag...), over...))
				require.NoError(t, err)
				waitClosed(t, conn)
				waitFor(t, "the handshake log line", func() bool {
					return len(r.log.matching("during handshake", "exceeds maximum size")) >= 1
				})

				requireHealthy(t, r, Config{MaxFrameSize: maxFrame}, 10)
			})
		}
	}
}

// TestRouterClosesOnV1OversizedMessage sends a version 1 gob message whose
// count is over the limit.
func TestRouterClosesOnV1OversizedMessage(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	r := startSecRouter(t, Config{MaxFrameSize: 4096}, 1)
	p, err := dialRaw(t, r.addr(), 2, nil, func(c *handshakeConfig) { c.MaxVersion = 1 })
	require.NoError(t, err)
	_, err = p.conn.Write(gobint.AppendUint(nil, 4096+gobBytesOverhead+1))
	require.NoError(t, err)
	waitClosed(t, p.conn)
	waitFor(t, "the log line", func() bool { return len(r.log.matching("exceeds maximum size")) == 1 })
	requireHealthy(t, r, Config{}, 10)
}

// TestRouterClosesOnAbusiveMessages sends messages over the decoding
// limits after a good handshake: each ends the connection with an error
// naming the limit, nothing of it is merged, and the router goes on.
func TestRouterClosesOnAbusiveMessages(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	const maxPeers = 8
	r := startSecRouter(t, Config{MaxPeers: maxPeers}, 1)
	src := testPeerName(2)
	topo := func(peers []peerUpdate) []byte {
		return gossipBody(tagGossip, topologyChannel, src, 0, appendTopology(nil, peers))
	}
	peersOf := func(n, conns int) []peerUpdate {
		var out []peerUpdate
		for i := range n {
			p := peerUpdate{peerSummary: peerSummary{Name: testPeerName(100 + i), UID: 1, Version: 1}}
			for j := range conns {
				p.Connections = append(p.Connections, connectionSummary{Name: testPeerName(10000 + j)})
			}
			out = append(out, p)
		}
		return out
	}
	longNick := peersOf(1, 0)
	longNick[0].NickName = strings.Repeat("n", maxNickNameLen+1)
	longAddr := peersOf(1, 1)
	longAddr[0].Connections[0].RemoteTCPAddr = strings.Repeat("a", maxAddrLen+1)

	tests := []struct {
		name string
		body []byte
		log  string
	}{
		{"peers over MaxPeers", topo(peersOf(maxPeers+1, 0)), fmt.Sprintf("more than %d peers", maxPeers)},
		{"connections per peer", topo(peersOf(1, maxConnectionsPerPeer+1)), fmt.Sprintf("more than %d", maxConnectionsPerPeer)},
		{"nickname in topology", topo(longNick), "too long"},
		{"address in topology", topo(longAddr), "too long"},
		{"channel name", gossipBody(tagGossipBroadcast, strings.Repeat("c", maxChannelNameLen+1), src, 0, []byte("x")), "too long"},
		{"peer name", append(append([]byte{tagGossipBroadcast}, appendGobString(nil, "vec")...),
			append(appendGobUint(nil, 1<<48), appendGobBytes(nil, []byte("x"))...)...), "wider than 6 bytes"},
		{"trailing bytes", append(gossipBody(tagGossipBroadcast, "vec", src, 0, []byte("x")), 0), "after the gossip message"},
		{"digest", gossipBody(tagGossip, digestChannel, src, 0, make([]byte, digestRecordSize+1)), "topology digest of"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := dialRaw(t, r.addr(), 2, nil, func(c *handshakeConfig) {
				c.Features[featureTopologyDigest] = strconv.Itoa(ourDigestLevel)
				c.Features[featureConnID] = fmt.Sprint(100 + i)
			})
			require.NoError(t, err)
			require.NoError(t, p.send(t, tt.body))
			waitClosed(t, p.conn)
			waitFor(t, "the log line", func() bool {
				return len(r.log.matching("connection shutting down", "malformed", tt.log)) >= 1
			})
			require.LessOrEqual(t, r.Peers.Len(), 2, "nothing of a refused update is merged")
		})
	}
	require.Zero(t, len(r.g.snapshot()), "nothing reached the Gossiper")

	// Within the limits, a stream of updates fills the table up to
	// MaxPeers and no further, and the connection stays up.
	p, err := dialRaw(t, r.addr(), 2, nil, func(c *handshakeConfig) { c.Features[featureConnID] = "999" })
	require.NoError(t, err)
	go io.Copy(io.Discard, p.conn) //nolint:errcheck // drain
	for i := range 10 {
		var batch []peerUpdate
		for j := range maxPeers {
			batch = append(batch, peerUpdate{peerSummary: peerSummary{Name: testPeerName(1000 + i*maxPeers + j), UID: 1, Version: 1}})
		}
		require.NoError(t, p.send(t, topo(batch)))
	}
	require.NoError(t, p.send(t, gossipBody(tagGossipUnicast, "vec", src, r.Ourself.Name, []byte("still up"))))
	waitFor(t, "the unicast after the updates", func() bool { return r.received("still up") == 1 })
	require.LessOrEqual(t, r.Peers.Len(), maxPeers)
	requireHealthy(t, r, Config{}, 10)
}

// TestRouterRefusesLongNickName refuses a handshake whose features carry a
// nickname over the limit.
func TestRouterRefusesLongNickName(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	r := startSecRouter(t, Config{}, 1)
	p, err := dialRaw(t, r.addr(), 2, nil, func(c *handshakeConfig) {
		c.Features[featureNickName] = strings.Repeat("n", maxNickNameLen+1)
	})
	require.NoError(t, err, "our end completes; the router refuses")
	waitClosed(t, p.conn)
	waitFor(t, "the log line", func() bool {
		return len(r.log.matching("during handshake", fmt.Sprintf("NickName of %d bytes", maxNickNameLen+1))) == 1
	})
	require.Nil(t, r.Peers.Fetch(testPeerName(2)))
	requireHealthy(t, r, Config{}, 10)
}

// TestHandshakeDeadlineEndsSilentAndSlowPeers connects peers that say
// nothing or trickle bytes: the handshake deadline ends them, their places
// among the handshakes in progress are freed, and the router goes on.
func TestHandshakeDeadlineEndsSilentAndSlowPeers(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	r := startSecRouter(t, Config{HandshakeTimeout: 300 * time.Millisecond, Password: []byte("a long enough password, really")}, 1)
	silent := dialLoopback(t, r.addr())
	slow := dialLoopback(t, r.addr())
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		// A valid header, then the flag and key one byte at a time.
		hello := append([]byte("weave\x01\x02\x01"), make([]byte, 32)...)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, b := range hello {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	waitClosed(t, silent)
	waitClosed(t, slow)
	close(stopTrickle)
	<-trickled
	waitFor(t, "both handshakes to be over", func() bool { return r.acceptGuard.stats().Pending == 0 })
	waitFor(t, "the log lines", func() bool {
		return len(r.log.matching("during handshake", "timeout")) == 2
	})
	requireHealthy(t, r, Config{}, 10)
}

// TestRelayedMessagesDroppedWhenQueueFull relays unicasts towards a
// neighbour that does not read: its send queue stays within its bound,
// what does not fit is dropped, and the sender's connection is unaffected.
func TestRelayedMessagesDroppedWhenQueueFull(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	const queue = 64 << 10
	r := startSecRouter(t, Config{SendQueueBytes: queue}, 1)
	stuck, err := dialRaw(t, r.addr(), 2, nil, nil) // never reads
	require.NoError(t, err)
	var sc *LocalConnection
	waitFor(t, "the stuck peer's connection", func() bool {
		sc = r.connectionTo(stuck.name)
		return sc != nil
	})
	// Keep the kernel from absorbing much.
	if tc, ok := sc.conn.(*net.TCPConn); ok {
		require.NoError(t, tc.SetWriteBuffer(4096))
	}
	if tc, ok := stuck.conn.(*net.TCPConn); ok {
		require.NoError(t, tc.SetReadBuffer(4096))
	}
	sender, err := dialRaw(t, r.addr(), 3, nil, nil)
	require.NoError(t, err)
	go io.Copy(io.Discard, sender.conn) //nolint:errcheck // drain
	waitFor(t, "a route to the stuck peer", func() bool { return r.nextHop(stuck.name) != nil })

	payload := bytes.Repeat([]byte("r"), 8<<10)
	body := gossipBody(tagGossipUnicast, "vec", sender.name, stuck.name, payload)
	maxQueued := 0
	for i := 0; ; i++ {
		require.NoError(t, sender.send(t, body))
		sc.q.mu.Lock()
		queued, dropped := len(sc.q.buf), sc.q.dropped
		sc.q.mu.Unlock()
		maxQueued = max(maxQueued, queued)
		if dropped > 0 {
			break
		}
		require.Less(t, i, 100000, "nothing was ever dropped")
	}
	require.LessOrEqual(t, maxQueued, queue+4+len(body), "the queue stays within its bound")
	// The sender's connection still carries messages to the router.
	require.NoError(t, sender.send(t, gossipBody(tagGossipUnicast, "vec", sender.name, r.Ourself.Name, []byte("through"))))
	waitFor(t, "the sender's unicast", func() bool { return r.received("through") == 1 })
}

// TestSurrogateGossipBoundedPerConnection queues gossip of many made-up
// channels for one neighbour: what waits stays within maxSurrogatePending
// over all channels, the rest is dropped, and the bound frees up once the
// writer has taken what waits.
func TestSurrogateGossipBoundedPerConnection(t *testing.T) {
	q := newSendQueue(DefaultSendQueueBytes)
	msg := make([]byte, 1024)
	for i := range 10000 {
		key := gossipKey{tag: tagGossip, channel: fmt.Sprintf("made-up-%d", i), src: 1}
		q.pushGossip(key, newSurrogateData(bytes.Clone(msg)))
	}
	pending := 0
	for _, d := range q.gossip {
		for _, m := range d.Encode() {
			pending += len(m)
		}
	}
	require.LessOrEqual(t, pending, maxSurrogatePending)
	require.Greater(t, pending, maxSurrogatePending/2)
	require.NotZero(t, q.dropped)
	require.Less(t, len(q.gossip), 1024, "channels waiting are bounded too")

	// One channel alone, still bounded, older messages dropped first.
	var b sendBatch
	q.take(&b, true, true)
	key := gossipKey{tag: tagGossip, channel: "one", src: 1}
	for i := range 3000 {
		m := bytes.Clone(msg)
		m[0] = byte(i)
		q.pushGossip(key, newSurrogateData(m))
	}
	msgs := q.gossip[key].Encode()
	require.LessOrEqual(t, len(msgs)*len(msg), maxSurrogatePending)
	require.Equal(t, byte(2999%256), msgs[len(msgs)-1][0], "the newest is kept")

	// A single message larger than the bound still goes through an empty
	// queue.
	q.take(&b, true, true)
	q.pushGossip(key, newSurrogateData(make([]byte, 2*maxSurrogatePending)))
	require.Len(t, q.gossip, 1)
}

// TestSealedFramesReplayAndReorder checks at the frame level that a frame
// replayed, reordered, left out or changed does not open, and that the
// reader stays dead afterwards.
func TestSealedFramesReplayAndReorder(t *testing.T) {
	key := fuzzSessionKey
	for _, version := range []byte{1, 2} {
		w := newFrameWriter(version, key, true, 0)
		var frames [][]byte
		for i := range 4 {
			fr, err := w.appendFrame(nil, []byte{tagGossip, byte(i)})
			require.NoError(t, err)
			frames = append(frames, fr)
		}
		tests := []struct {
			name  string
			order []int
			ok    int // frames read before the failure
		}{
			{"in order", []int{0, 1, 2, 3}, 4},
			{"replayed", []int{0, 1, 1, 2}, 2},
			{"replayed from earlier", []int{0, 1, 2, 0}, 3},
			{"reordered", []int{0, 2, 1, 3}, 1},
			{"left out", []int{0, 2, 3}, 1},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("v%d/%s", version, tt.name), func(t *testing.T) {
				var stream []byte
				for _, i := range tt.order {
					stream = append(stream, frames[i]...)
				}
				r := newFrameReader(bufio.NewReader(bytes.NewReader(stream)), version, key, true, 0)
				for i := range tt.ok {
					b, err := r.readFrame()
					require.NoError(t, err)
					require.Equal(t, []byte{tagGossip, byte(i)}, b)
				}
				_, err := r.readFrame()
				if tt.ok == len(tt.order) {
					require.ErrorIs(t, err, io.EOF)
					return
				}
				require.ErrorIs(t, err, ErrDecrypt)
				_, err2 := r.readFrame()
				require.Equal(t, err, err2, "the reader stays dead")
			})
		}
		// The other direction's frames never open: the nonce differs.
		r := newFrameReader(bufio.NewReader(bytes.NewReader(frames[0])), version, key, false, 0)
		_, err := r.readFrame()
		require.ErrorIs(t, err, ErrDecrypt)
	}
}

// TestV1WrongPasswordLogged connects in protocol version 1, whose features
// travel in clear, with another password: the handshake reads the first
// sealed frame, which fails, and the router reports a likely password
// mismatch.
func TestV1WrongPasswordLogged(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	r := startSecRouter(t, Config{Password: []byte("the password of the mesh itself")}, 1)
	_, err := dialRaw(t, r.addr(), 2, []byte("another password, not the mesh's"), func(c *handshakeConfig) { c.MaxVersion = 1 })
	require.ErrorIs(t, err, ErrDecrypt)
	waitFor(t, "the log line", func() bool {
		return len(r.log.matching("frame 0", "failed authentication", "most likely have different passwords")) == 1
	})
	require.Empty(t, r.g.snapshot())
	require.Empty(t, r.Ourself.Connections(), "never registered")
}

// TestV1TakeoverWithoutPassword: in version 1 the features travel in
// clear, so whoever connects can claim a member's name and echo our
// connection ID, which would win the tie-break against the member's own
// connection. Without the password it never gets that far: the handshake
// needs a sealed frame that opens, and the member's connection stays.
func TestV1TakeoverWithoutPassword(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	pw := []byte("the password of the mesh itself")
	r := startSecRouter(t, Config{Password: pw, HandshakeTimeout: time.Second}, 1)
	member := startSecRouter(t, Config{Password: pw}, 2)
	member.ConnectionMaker.InitiateConnections([]string{r.addr()}, false)
	waitFor(t, "the member's connection", func() bool { return r.connectionTo(member.Ourself.Name) != nil })
	real := r.connectionTo(member.Ourself.Name)

	// The intruder speaks version 1 with the member's name, a made-up
	// public key, and echoes the connection ID it reads from our features,
	// then trickles bytes as a frame that never ends.
	conn, err := net.Dial("tcp", r.addr())
	require.NoError(t, err)
	defer conn.Close()
	br := bufio.NewReader(conn)
	_, err = conn.Write([]byte{'w', 'e', 'a', 'v', 'e', 1, 1})
	require.NoError(t, err)
	var hdr [headerLen]byte
	_, err = io.ReadFull(br, hdr[:])
	require.NoError(t, err)
	ours, err := readFeaturesV1(br)
	require.NoError(t, err)
	theirs := (&peerFeatures{Name: member.Ourself.Name, NickName: "intruder", UID: member.Ourself.UID}).featuresMap(nil)
	theirs = v1Only(theirs, false)
	theirs[featureConnID] = ours[featureConnID]
	theirs[featurePublicKey] = strings.Repeat("ab", 32)
	_, err = conn.Write(encodeFeatures(nil, theirs))
	require.NoError(t, err)
	// A gob message of 127 bytes, of which a few arrive.
	for _, b := range []byte{0x7f, 0, 0, 0} {
		_, err = conn.Write([]byte{b})
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond)
	}
	// The router gives up on the handshake and the member's connection
	// is the one registered throughout.
	waitClosed(t, conn)
	require.Same(t, real, r.connectionTo(member.Ourself.Name))
	require.Empty(t, r.g.snapshot())
}

// After the handshake too, a frame must arrive whole within the read
// timeout (twice the heartbeat interval): a peer that trickles a frame a
// byte at a time, each byte well within the timeout, is dropped.
func TestTrickledFrameDropped(t *testing.T) {
	requireLoopbackRange(t)
	checkGoroutines(t)
	r := startSecRouter(t, Config{HeartbeatInterval: 100 * time.Millisecond}, 1)
	p, err := dialRaw(t, r.addr(), 2, nil, nil)
	require.NoError(t, err)
	waitFor(t, "the connection", func() bool { return r.connectionTo(p.name) != nil })
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, p.conn)
	}()
	// A frame of 1000 bytes, of which a byte arrives every 50 ms.
	_, err = p.conn.Write([]byte{0, 0, 0x03, 0xe8})
	require.NoError(t, err)
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; ; sent++ {
		select {
		case <-closed:
			require.Less(t, sent, 1000, "the frame was never complete")
			waitFor(t, "the log line", func() bool {
				return len(r.log.matching("connection shutting down", "timeout")) >= 1
			})
			return
		case <-deadline:
			p.conn.Close()
			<-closed
			t.Fatal("a trickled frame kept the connection open")
		case <-tick.C:
			_, _ = p.conn.Write([]byte{0})
		}
	}
}
