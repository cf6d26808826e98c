package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ipAddr returns a distinct IPv4 address for each i, port p.
func ipAddr(i, p int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: p}
}

// The limiter logs a key once a minute; keys differ by every field.
func TestLogLimiterRepeats(t *testing.T) {
	l := newLogLimiter()
	t0 := time.Unix(1000, 0)
	key := logKey{kind: "k", addr: "10.0.0.1"}
	ok, _ := l.allow(key, t0)
	require.True(t, ok)
	ok, _ = l.allow(key, t0.Add(repeatInterval-time.Nanosecond))
	require.False(t, ok, "within the minute")
	ok, _ = l.allow(key, t0.Add(repeatInterval))
	require.True(t, ok, "a minute later")
	ok, _ = l.allow(key, t0.Add(repeatInterval+time.Second))
	require.False(t, ok, "the minute starts again from the line logged")

	for _, other := range []logKey{
		{kind: "other", addr: "10.0.0.1"},
		{kind: "k", addr: "10.0.0.2"},
		{kind: "k", addr: "10.0.0.1", peer: 7},
		{kind: "k", addr: "10.0.0.1", channel: "c"},
	} {
		ok, _ := l.allow(other, t0.Add(repeatInterval+time.Second))
		require.True(t, ok, "%+v", other)
	}

	// A key forgotten is logged at once.
	l.forget(key)
	ok, _ = l.allow(key, t0.Add(repeatInterval+2*time.Second))
	require.True(t, ok)
	l.forget(logKey{kind: "never logged"})
}

// A kind has room for maxLinesPerKind keys a minute: a remote that makes
// up keys (addresses, peer names) gets that many lines and a notice, and
// the keys of other kinds stay remembered.
func TestLogLimiterKindQuota(t *testing.T) {
	l := newLogLimiter()
	t0 := time.Unix(1000, 0)
	conn := logKey{kind: "connection decrypt", addr: "192.0.2.1"}
	ok, _ := l.allow(conn, t0)
	require.True(t, ok)

	logged, notices := 0, 0
	for i := range 100 * maxRateLimitedLines {
		ok, notice := l.allow(logKey{kind: "gossip unicast error", channel: "c", peer: PeerName(i + 1)}, t0.Add(time.Duration(i)*time.Microsecond))
		if ok {
			logged++
		}
		if notice != "" {
			notices++
			require.Contains(t, notice, `"gossip unicast error"`)
		}
	}
	require.Equal(t, maxLinesPerKind, logged)
	require.Equal(t, 1, notices)
	require.LessOrEqual(t, l.len(), maxRateLimitedLines)
	ok, _ = l.allow(conn, t0.Add(time.Second))
	require.False(t, ok, "the flood of another kind did not make the connection's line new")

	// A minute after the first of them, keys of the kind are logged again,
	// and the notice can come again.
	later := t0.Add(repeatInterval + time.Second)
	ok, _ = l.allow(logKey{kind: "gossip unicast error", channel: "c", peer: 1 << 40}, later)
	require.True(t, ok)
	logged, notices = 1, 0
	for i := range 2 * maxLinesPerKind {
		ok, notice := l.allow(logKey{kind: "gossip unicast error", channel: "c", peer: PeerName(1<<41 + i)}, later)
		if ok {
			logged++
		}
		if notice != "" {
			notices++
		}
	}
	require.Equal(t, maxLinesPerKind, logged)
	require.Equal(t, 1, notices)
	_, notice := l.allow(logKey{kind: "gossip unicast error", peer: 1 << 42}, later.Add(repeatInterval/2))
	require.Empty(t, notice, "one notice a minute")
}

// When the table is full, the key logged longest ago is forgotten, and
// only it.
func TestLogLimiterEvictsOldest(t *testing.T) {
	l := newLogLimiter()
	t0 := time.Unix(1000, 0)
	// Half a kind's lines a minute each: no kind reaches its limit.
	kinds := 2 * maxRateLimitedLines / maxLinesPerKind
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	key := func(i int) logKey {
		return logKey{kind: fmt.Sprint("kind", i%kinds), addr: fmt.Sprint("10.0.0.", i)}
	}
	for i := range maxRateLimitedLines {
		ok, _ := l.allow(key(i), at(i))
		require.True(t, ok)
	}
	require.Equal(t, maxRateLimitedLines, l.len())

	ok, _ := l.allow(logKey{kind: "new"}, at(maxRateLimitedLines))
	require.True(t, ok)
	require.Equal(t, maxRateLimitedLines, l.len(), "bounded")
	now := at(maxRateLimitedLines + 1)
	ok, _ = l.allow(key(1), now)
	require.False(t, ok, "the second oldest is still remembered")
	ok, _ = l.allow(key(maxRateLimitedLines-1), now)
	require.False(t, ok, "the newest is still remembered")
	ok, _ = l.allow(key(0), now)
	require.True(t, ok, "the oldest was forgotten")
	require.Equal(t, maxRateLimitedLines, l.len(), "making room for it forgot key 1")

	// A key logged again moves to the end: the next eviction spares it.
	later := at(2).Add(repeatInterval)
	ok, _ = l.allow(key(2), later)
	require.True(t, ok)
	ok, _ = l.allow(logKey{kind: "newer"}, later)
	require.True(t, ok)
	ok, _ = l.allow(key(2), later)
	require.False(t, ok, "spared")
	ok, _ = l.allow(key(3), later)
	require.True(t, ok, "forgotten in its stead, though logged less than a minute ago")
	require.Equal(t, maxRateLimitedLines, l.len())
}

// logOnce keys lines on their kind and remote, never on their text: a
// remote cannot make its lines new by sending new names.
func TestLogOnceIgnoresText(t *testing.T) {
	lines := &linesLogger{}
	r, err := NewRouter(Config{}, testPeerName(1), "us", nil, lines)
	require.NoError(t, err)
	for i := range 1000 {
		r.logOnce("nochan", fmt.Sprintf("[gossip chan%d]: unicast from %v for a channel not registered here: dropped", i, PeerName(i)))
	}
	require.Len(t, lines.matching("not registered here"), 1)

	// Inbound connections are told apart by IP address, not port.
	for port := range 10 {
		r.logOnce("tag", fmt.Sprintf("ignoring unknown protocol tag %d", port), ipAddr(1, 40000+port))
	}
	r.logOnce("tag", "ignoring unknown protocol tag", ipAddr(2, 40000))
	r.logOnce("tag", "ignoring unknown protocol tag", logAddr("example.org:6783"))
	r.logOnce("tag", "ignoring unknown protocol tag", PeerName(99))
	require.Len(t, lines.matching("ignoring unknown protocol tag"), 4)

	// Addresses beyond the kind's room are not logged; a notice says so.
	for i := range 3 * maxLinesPerKind {
		r.logOnce("flood", "flooded", ipAddr(100+i, 1))
	}
	require.Len(t, lines.matching("flooded"), maxLinesPerKind)
	require.Len(t, lines.matching(`"flood" lines within a minute`), 1)
	r.logger.mu.Lock()
	defer r.logger.mu.Unlock()
	require.LessOrEqual(t, r.logger.limiter.len(), maxRateLimitedLines)
}

// addrConn is a net.Conn that only tells its remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// Refusals after the handshake, of a duplicate connection or over the
// connection limit, are logged once a minute per remote address, like
// other peer failures; other ends of established connections always.
func TestRefusalsAfterHandshakeRateLimited(t *testing.T) {
	lines := &linesLogger{}
	r, err := NewRouter(Config{}, testPeerName(1), "us", nil, lines)
	require.NoError(t, err)
	conn := func(ip, port int) *LocalConnection {
		return &LocalConnection{router: r, conn: addrConn{remote: ipAddr(ip, port)}, remoteName: testPeerName(2), remoteNick: "two"}
	}
	require.Equal(t, "limit", peerErrorClass(fmt.Errorf("%w (limit 3)", ErrConnLimit)))
	require.Equal(t, "duplicate", peerErrorClass(fmt.Errorf("%w two added to one", ErrDuplicateConnection)))
	for port := range 5 {
		r.logConnectionEnd(conn(1, 40000+port), fmt.Errorf("%w (limit 3)", ErrConnLimit))
		r.logConnectionEnd(conn(1, 41000+port), fmt.Errorf("%w two added to one", ErrDuplicateConnection))
		r.logConnectionEnd(conn(1, 42000+port), errors.New("connection reset by peer"))
	}
	require.Len(t, lines.matching("too many connections"), 1, "%q", lines.lines)
	require.Len(t, lines.matching("multiple connections"), 1, "%q", lines.lines)
	require.Len(t, lines.matching("connection reset"), 5, "other errors are always logged")
	r.logConnectionEnd(conn(2, 40000), fmt.Errorf("%w (limit 3)", ErrConnLimit))
	require.Len(t, lines.matching("too many connections"), 2, "another address")
}

// scriptedTransport fails or succeeds dials in the order of its script
// (true: succeed), then fails; a dial that succeeds gets a connection
// whose other end is closed, so its handshake fails.
type scriptedTransport struct {
	TCPTransport
	mu     sync.Mutex
	script []bool
	dials  int
}

func (s *scriptedTransport) DialContext(ctx context.Context, address string) (net.Conn, error) {
	s.mu.Lock()
	ok := s.dials < len(s.script) && s.script[s.dials]
	s.dials++
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial tcp %s: connect: connection refused", address)
	}
	ours, theirs := net.Pipe()
	theirs.Close()
	return ours, nil
}

func (s *scriptedTransport) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

// Failed dials are logged: the first at once, then one a minute per
// address; a dial that succeeds makes the next failure be logged at once.
func TestDialFailuresLogged(t *testing.T) {
	obsCheckGoroutines(t)
	lines := &linesLogger{}
	tr := &scriptedTransport{script: []bool{false, true, false, false}}
	r, err := NewRouter(Config{Host: "127.0.0.1", Transport: tr}, testPeerName(1), "us", nil, lines)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	const addr = "192.0.2.7:6783"
	r.ConnectionMaker.InitiateConnections([]string{addr}, false)
	obsEventually(t, "four dials", func() (bool, string) {
		s, _ := targetStatus(r, addr)
		return tr.count() >= 4 && s.State == TargetWaiting, fmt.Sprintf("%d dials, %+v", tr.count(), s)
	})
	failed := lines.matching("dial failed")
	require.Len(t, failed, 2, "%q", lines.lines)
	for _, l := range failed {
		require.Equal(t, "->["+addr+"] dial failed: dial tcp "+addr+": connect: connection refused", l)
	}
	require.Len(t, lines.matching("during handshake"), 1, "the dial that succeeded")
}

// A dial cut short by the router stopping is not logged.
func TestDialAbortedByStopNotLogged(t *testing.T) {
	obsCheckGoroutines(t)
	lines := &linesLogger{}
	const hanging = "192.0.2.8:6783"
	var dialling atomic.Bool
	tr := &hookTransport{dial: func(ctx context.Context, _ string) (net.Conn, error) {
		dialling.Store(true)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	r, err := NewRouter(Config{Host: "127.0.0.1", Transport: tr}, testPeerName(1), "us", nil, lines)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	r.ConnectionMaker.InitiateConnections([]string{hanging}, false)
	obsEventually(t, "the dial", func() (bool, string) { return dialling.Load(), "" })
	require.NoError(t, r.Stop())
	require.Empty(t, lines.matching("dial failed"), "%q", lines.lines)
}

// hookTransport is TCP with dials done by a function.
type hookTransport struct {
	TCPTransport
	dial func(ctx context.Context, address string) (net.Conn, error)
}

func (h *hookTransport) DialContext(ctx context.Context, address string) (net.Conn, error) {
	return h.dial(ctx, address)
}

// failingGossiper rejects everything, and counts what it was given.
type failingGossiper struct {
	unicasts, broadcasts, gossips atomic.Int32
}

var errRejected = errors.New("rejected")

func (g *failingGossiper) OnGossipUnicast(PeerName, []byte) error {
	g.unicasts.Add(1)
	return errRejected
}

func (g *failingGossiper) OnGossipBroadcast(PeerName, []byte) (GossipData, error) {
	g.broadcasts.Add(1)
	return nil, errRejected
}

func (g *failingGossiper) Gossip() GossipData { return nil }

func (g *failingGossiper) OnGossip([]byte) (GossipData, error) {
	g.gossips.Add(1)
	return nil, errRejected
}

// startLoggedRouter starts a router on 127.0.0.1 that logs to lines.
func startLoggedRouter(t *testing.T, i int, lines Logger) *Router {
	t.Helper()
	r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(i), fmt.Sprint("peer", i), nil, lines)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	return r
}

// Errors of a Gossiper are logged once a minute per channel, source peer
// and kind of message, not once per message.
func TestGossiperErrorsRateLimited(t *testing.T) {
	obsCheckGoroutines(t)
	lines := &linesLogger{}
	receiver := startLoggedRouter(t, 1, lines)
	sender := startLoggedRouter(t, 2, nil)
	g := &failingGossiper{}
	_, err := receiver.NewGossip("test", g)
	require.NoError(t, err)
	_, err = receiver.NewGossip("other", &failingGossiper{})
	require.NoError(t, err)
	send, err := sender.NewGossip("test", newObsGossiper())
	require.NoError(t, err)
	sendOther, err := sender.NewGossip("other", newObsGossiper())
	require.NoError(t, err)
	sender.ConnectionMaker.InitiateConnections([]string{receiver.ListenAddr().String()}, false)
	obsEventually(t, "a route to the receiver", func() (bool, string) {
		_, ok := sender.Routes.Unicast(receiver.Ourself.Name)
		return ok, ""
	})

	const n = 5
	for i := range n {
		require.NoError(t, send.GossipUnicast(receiver.Ourself.Name, []byte(fmt.Sprint("u", i))))
		send.GossipBroadcast(obsData{fmt.Sprint("b", i)})
	}
	obsEventually(t, "every message handled", func() (bool, string) {
		return g.unicasts.Load() == n && g.broadcasts.Load() == n, fmt.Sprint(g.unicasts.Load(), " unicasts, ", g.broadcasts.Load(), " broadcasts")
	})
	for i := range n {
		send.GossipNeighbourSubset(obsData{fmt.Sprint("g", i)})
		obsEventually(t, "the gossip handled", func() (bool, string) { return g.gossips.Load() == int32(i+1), "" })
	}
	require.NoError(t, sendOther.GossipUnicast(receiver.Ourself.Name, []byte("x")))
	obsEventually(t, "the other channel's line", func() (bool, string) {
		return len(lines.matching("[gossip other]: unicast from")) == 1, ""
	})

	from := sender.Ourself.Name.String()
	require.Equal(t, []string{"[gossip test]: unicast from " + from + ": rejected"}, lines.matching("[gossip test]: unicast"))
	require.Equal(t, []string{"[gossip test]: broadcast from " + from + ": rejected"}, lines.matching("[gossip test]: broadcast"))
	require.Equal(t, []string{"[gossip test]: gossip from " + from + ": rejected"}, lines.matching("[gossip test]: gossip"))
}

// Unicasts for channels not registered here, each with a new name, are
// logged once: the name a peer sends does not make a new line.
func TestUnregisteredChannelsLoggedOnce(t *testing.T) {
	obsCheckGoroutines(t)
	lines := &linesLogger{}
	receiver := startLoggedRouter(t, 1, lines)
	sender := startLoggedRouter(t, 2, nil)
	g := &failingGossiper{}
	_, err := receiver.NewGossip("known", g)
	require.NoError(t, err)
	sender.ConnectionMaker.InitiateConnections([]string{receiver.ListenAddr().String()}, false)
	obsEventually(t, "a route to the receiver", func() (bool, string) {
		_, ok := sender.Routes.Unicast(receiver.Ourself.Name)
		return ok, ""
	})
	for i := range 20 {
		send, err := sender.NewGossip(fmt.Sprint("made-up-", i), newObsGossiper())
		require.NoError(t, err)
		require.NoError(t, send.GossipUnicast(receiver.Ourself.Name, []byte("x")))
	}
	// Frames of one connection are dispatched in order: once the last
	// one, for a channel registered here, has arrived, all have.
	known, err := sender.NewGossip("known", newObsGossiper())
	require.NoError(t, err)
	require.NoError(t, known.GossipUnicast(receiver.Ourself.Name, []byte("last")))
	obsEventually(t, "the last unicast", func() (bool, string) { return g.unicasts.Load() == 1, "" })
	got := lines.matching("not registered here")
	require.Len(t, got, 1, "%q", got)
	require.True(t, strings.HasPrefix(got[0], "[gossip made-up-0]: "), got[0])
}

// Rate-limited lines are Warn records whose source is the code that
// logged them, with the attributes of what they are about; so is the
// notice that a kind has logged all it may.
func TestLogLimitedRecords(t *testing.T) {
	h := &slogCapture{}
	r, err := NewRouter(Config{}, testPeerName(1), "us", nil, NewSlogLogger(slog.New(h)))
	require.NoError(t, err)
	for i := range maxLinesPerKind + 1 {
		r.logLimited(logKey{kind: "dial", addr: fmt.Sprint("192.0.2.1:", i)}, fmt.Sprintf("->[192.0.2.1:%d] dial failed: %v", i, errRejected), logAddr(fmt.Sprint("192.0.2.1:", i)), errRejected)
	}
	recs := h.matching("dial failed")
	require.Len(t, recs, maxLinesPerKind)
	require.Equal(t, slog.LevelWarn, recs[0].Level)
	require.Equal(t, "obs_log_test.go", slogSource(recs[0]))
	require.Equal(t, map[string]string{
		"peer": testPeerName(1).String(), "nickname": "us", "remote_addr": "192.0.2.1:0", "err": "rejected",
	}, slogAttrs(recs[0]))
	notices := h.matching(`"dial" lines within a minute`)
	require.Len(t, notices, 1)
	require.Equal(t, slog.LevelWarn, notices[0].Level)
	require.Equal(t, "obs_log_test.go", slogSource(notices[0]))
}
