package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// obsDeadline is how long the observability tests wait for a mesh to
// settle: generous, as the machines running the tests are shared.
const obsDeadline = 60 * time.Second

// obsEventually polls cond until it holds or obsDeadline passes.
func obsEventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < obsDeadline {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %v: %s", what, obsDeadline, last)
}

// obsCheckGoroutines records the goroutines running now and, at cleanup
// (after the cleanups registered later, which stop the routers), waits
// until no more are running.
func obsCheckGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		start := time.Now()
		for runtime.NumGoroutine() > before {
			if time.Since(start) > 10*time.Second {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("%d goroutines before, %d after stopping every router:\n%s", before, runtime.NumGoroutine(), buf[:n])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// obsGossiper records the unicasts and broadcasts it receives; a broadcast
// or gossip it has not seen is new, and returned as such.
type obsGossiper struct {
	mu       sync.Mutex
	unicasts []string
	seen     map[string]bool
}

func newObsGossiper() *obsGossiper { return &obsGossiper{seen: make(map[string]bool)} }

func (g *obsGossiper) OnGossipUnicast(_ PeerName, msg []byte) error {
	g.mu.Lock()
	g.unicasts = append(g.unicasts, string(msg))
	g.mu.Unlock()
	return nil
}

func (g *obsGossiper) merge(msg []byte) GossipData {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[string(msg)] {
		return nil
	}
	g.seen[string(msg)] = true
	return obsData{string(msg)}
}

func (g *obsGossiper) OnGossipBroadcast(_ PeerName, msg []byte) (GossipData, error) {
	return g.merge(msg), nil
}

func (g *obsGossiper) Gossip() GossipData { return nil }

func (g *obsGossiper) OnGossip(msg []byte) (GossipData, error) { return g.merge(msg), nil }

func (g *obsGossiper) got(msg string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[msg] || slices.Contains(g.unicasts, msg)
}

// obsData is a set of strings.
type obsData []string

func (d obsData) Encode() [][]byte {
	out := make([][]byte, len(d))
	for i, s := range d {
		out[i] = []byte(s)
	}
	return out
}

func (d obsData) Merge(other GossipData) GossipData { return append(d, other.(obsData)...) }

type obsNode struct {
	router   *Router
	gossip   Gossip
	gossiper *obsGossiper
}

// startObsNode starts a router named testPeerName(i) on a free loopback
// port, with a channel "test"; it is stopped at cleanup.
func startObsNode(t *testing.T, i int, config Config) *obsNode {
	t.Helper()
	config.Host = "127.0.0.1"
	r, err := NewRouter(config, testPeerName(i), fmt.Sprint("peer", i), nil, nil)
	require.NoError(t, err)
	g := newObsGossiper()
	send, err := r.NewGossip("test", g)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	return &obsNode{router: r, gossip: send, gossiper: g}
}

func (n *obsNode) dial(t *testing.T, other *obsNode) {
	t.Helper()
	require.Empty(t, n.router.ConnectionMaker.InitiateConnections([]string{other.router.ListenAddr().String()}, false))
}

func routeTo(from, to *obsNode) func() (bool, string) {
	return func() (bool, string) {
		_, ok := from.router.Routes.Unicast(to.router.Ourself.Name)
		return ok, fmt.Sprintf("%s has no route to %s", from.router.Ourself.Name, to.router.Ourself.Name)
	}
}

// TestMetricsCountMessages drives a line of three routers, a-b-c, and
// checks the counters of a unicast relayed by b and of a broadcast.
func TestMetricsCountMessages(t *testing.T) {
	obsCheckGoroutines(t)
	a, b, c := startObsNode(t, 1, Config{}), startObsNode(t, 2, Config{}), startObsNode(t, 3, Config{})
	a.dial(t, b)
	c.dial(t, b)
	obsEventually(t, "a route from a to c", routeTo(a, c))
	obsEventually(t, "a route from c to a", routeTo(c, a))

	for _, n := range []*obsNode{a, b, c} {
		m := n.router.Metrics()
		require.Equal(t, 3, m.Peers)
		require.Equal(t, 3, m.ReachablePeers)
		require.Positive(t, m.RouteRecomputations)
		require.Positive(t, m.RouteChanges)
		require.Positive(t, m.Received.Topology.Messages+m.Received.Digest.Messages)
		require.Contains(t, m.Channels, "test")
	}
	// Without peer discovery, a dials b and c dials b: one connection
	// each, registered at both ends.
	for _, x := range []struct {
		n                           *obsNode
		current, established, dials int
		accepted                    int
	}{{a, 1, 1, 1, 0}, {b, 2, 2, 0, 2}, {c, 1, 1, 1, 0}} {
		m := x.n.router.Metrics().Connections
		require.Equal(t, x.current, m.Current)
		require.EqualValues(t, x.established, m.Established)
		require.EqualValues(t, x.dials, m.Dials)
		require.EqualValues(t, x.accepted, m.Accepted)
		require.Zero(t, m.Dropped)
		require.Equal(t, ConnectionFailures{}, m.Failures)
	}

	before := map[*obsNode]Metrics{a: a.router.Metrics(), b: b.router.Metrics(), c: c.router.Metrics()}
	const size = 1000
	payload := strings.Repeat("u", size)
	require.NoError(t, a.gossip.GossipUnicast(c.router.Ourself.Name, []byte(payload)))
	obsEventually(t, "the unicast at c", func() (bool, string) { return c.gossiper.got(payload), "not yet" })
	// Each frame is counted before it is written and before it is
	// delivered, so the counts are final once c has the message.
	delta := func(n *obsNode, f func(Metrics) Count) Count {
		now, was := f(n.router.Metrics()), f(before[n])
		return Count{Messages: now.Messages - was.Messages, Bytes: now.Bytes - was.Bytes}
	}
	sentUnicast := func(m Metrics) Count { return m.Channels["test"].Sent.Unicast }
	recvUnicast := func(m Metrics) Count { return m.Channels["test"].Received.Unicast }
	for _, x := range []struct {
		n          *obsNode
		sent, recv uint64
	}{{a, 1, 0}, {b, 1, 1}, {c, 0, 1}} {
		s, r := delta(x.n, sentUnicast), delta(x.n, recvUnicast)
		require.Equal(t, x.sent, s.Messages, "unicasts sent by %s", x.n.router.Ourself.Name)
		require.Equal(t, x.recv, r.Messages, "unicasts received by %s", x.n.router.Ourself.Name)
		if x.sent > 0 {
			require.GreaterOrEqual(t, s.Bytes, uint64(size))
		}
		if x.recv > 0 {
			require.GreaterOrEqual(t, r.Bytes, uint64(size))
		}
		// The totals count the same frames: no other unicast was sent.
		require.Equal(t, s, delta(x.n, func(m Metrics) Count { return m.Sent.Unicast }))
		require.Equal(t, r, delta(x.n, func(m Metrics) Count { return m.Received.Unicast }))
	}

	// A broadcast from a reaches b, which passes it on to c.
	a.gossip.GossipBroadcast(obsData{"b1"})
	obsEventually(t, "the broadcast at c", func() (bool, string) { return c.gossiper.got("b1"), "not yet" })
	sentBroadcast := func(m Metrics) Count { return m.Channels["test"].Sent.Broadcast }
	recvBroadcast := func(m Metrics) Count { return m.Channels["test"].Received.Broadcast }
	for _, x := range []struct {
		n          *obsNode
		sent, recv uint64
	}{{a, 1, 0}, {b, 1, 1}, {c, 0, 1}} {
		require.Equal(t, x.sent, delta(x.n, sentBroadcast).Messages, "broadcasts sent by %s", x.n.router.Ourself.Name)
		require.Equal(t, x.recv, delta(x.n, recvBroadcast).Messages, "broadcasts received by %s", x.n.router.Ourself.Name)
	}

	// Gossip from a goes to b, which finds it new and gossips it on to c.
	a.gossip.GossipNeighbourSubset(obsData{"g1"})
	obsEventually(t, "the gossip at c", func() (bool, string) { return c.gossiper.got("g1"), "not yet" })
	obsEventually(t, "the gossip counted", func() (bool, string) {
		am, bm, cm := a.router.Metrics(), b.router.Metrics(), c.router.Metrics()
		ok := am.Channels["test"].Sent.Gossip.Messages >= 1 &&
			bm.Channels["test"].Received.Gossip.Messages >= 1 && bm.Channels["test"].GossipNew >= 1 &&
			cm.Channels["test"].Received.Gossip.Messages >= 1 && cm.Channels["test"].GossipNew >= 1
		return ok, fmt.Sprintf("a %+v, b %+v, c %+v", am.Channels["test"], bm.Channels["test"], cm.Channels["test"])
	})

	// The snapshot encodes as JSON.
	out, err := json.Marshal(b.router.Metrics())
	require.NoError(t, err)
	var back Metrics
	require.NoError(t, json.Unmarshal(out, &back))
	require.Contains(t, back.Channels, "test")

	// c stops: b sees the connection dropped, and a and b remove c.
	require.NoError(t, c.router.Stop())
	obsEventually(t, "c removed", func() (bool, string) {
		am, bm := a.router.Metrics(), b.router.Metrics()
		ok := bm.Connections.Dropped == 1 && bm.Connections.Current == 1 && am.PeersRemoved == 1 && bm.PeersRemoved == 1 && am.Peers == 2
		return ok, fmt.Sprintf("a %+v, b %+v", am, bm)
	})
	cm := c.router.Metrics().Connections
	require.Equal(t, 0, cm.Current)
	require.EqualValues(t, 1, cm.Dropped, "stopping ends c's connection")
}

// TestMetricsConnectionFailures checks the reasons failed connections are
// counted under.
func TestMetricsConnectionFailures(t *testing.T) {
	obsCheckGoroutines(t)
	t.Run("password", func(t *testing.T) {
		a := startObsNode(t, 1, Config{Password: []byte("one")})
		b := startObsNode(t, 2, Config{Password: []byte("two")})
		a.dial(t, b)
		obsEventually(t, "password failures at both ends", func() (bool, string) {
			am, bm := a.router.Metrics().Connections, b.router.Metrics().Connections
			return am.Failures.Password > 0 && bm.Failures.Password > 0, fmt.Sprintf("a %+v, b %+v", am, bm)
		})
		require.Zero(t, a.router.Metrics().Connections.Established)
		require.Positive(t, b.router.Metrics().Connections.Accepted)
	})
	t.Run("encryption", func(t *testing.T) {
		a := startObsNode(t, 1, Config{Password: []byte("one")})
		b := startObsNode(t, 2, Config{})
		a.dial(t, b)
		obsEventually(t, "encryption failures at both ends", func() (bool, string) {
			am, bm := a.router.Metrics().Connections, b.router.Metrics().Connections
			return am.Failures.Encryption > 0 && bm.Failures.Encryption > 0, fmt.Sprintf("a %+v, b %+v", am, bm)
		})
	})
	t.Run("self", func(t *testing.T) {
		a := startObsNode(t, 1, Config{})
		a.dial(t, a)
		obsEventually(t, "self failures", func() (bool, string) {
			m := a.router.Metrics().Connections
			return m.Failures.Self >= 2, fmt.Sprintf("%+v", m) // both ends are a
		})
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		a := startObsNode(t, 1, Config{})
		require.Empty(t, a.router.ConnectionMaker.InitiateConnections([]string{addr}, false))
		obsEventually(t, "a refused dial", func() (bool, string) {
			m := a.router.Metrics().Connections
			return m.Dials >= 1 && m.Failures.Refused >= 1, fmt.Sprintf("%+v", m)
		})
	})
}

func TestFailureReasonOf(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("handshake: %w: bad key", ErrDecrypt), "password"},
		{fmt.Errorf("%w: 1..1 vs 2..2", ErrVersionMismatch), "version"},
		{ErrEncryptionMismatch, "encryption"},
		{ErrBadEncryptionFlag, "encryption"},
		{fmt.Errorf("%w: x", ErrNameCollision), "name_collision"},
		{ErrConnectToSelf, "self"},
		{fmt.Errorf("%w a to b", ErrDuplicateConnection), "duplicate"},
		{fmt.Errorf("%w (limit 4)", ErrConnLimit), "limit"},
		{ErrBadHeader, "protocol"},
		{ErrBadFeatures, "protocol"},
		{ErrMalformed, "protocol"},
		{ErrFrameTooLarge, "protocol"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "timeout"},
		{context.DeadlineExceeded, "timeout"},
		{&net.DNSError{Err: "slow", IsTimeout: true}, "timeout"},
		{refused, "refused"},
		{errors.New("EOF"), "other"},
	} {
		require.Equal(t, c.want, failureReasonNames[failureReasonOf(c.err)], "%v", c.err)
	}
	// Each reason has its own field.
	var f ConnectionFailures
	for r := failureReason(0); r < numFailureReasons; r++ {
		*f.field(r) = uint64(r) + 1
	}
	seen := make(map[string]uint64)
	f.Each(func(reason string, n uint64) { seen[reason] = n })
	require.Len(t, seen, int(numFailureReasons))
	for r := failureReason(0); r < numFailureReasons; r++ {
		require.Equal(t, uint64(r)+1, seen[failureReasonNames[r]])
	}
}

func TestClassifyFrame(t *testing.T) {
	msg := func(tag byte, channel string) []byte {
		return appendGossipMessage(nil, &gossipMessage{Tag: tag, Channel: channel, Src: 1, Dst: 2, Payload: []byte("payload")})
	}
	long := strings.Repeat("c", 200) // a length of more than one byte
	for _, c := range []struct {
		name    string
		body    []byte
		kind    frameKind
		channel string
	}{
		{"heartbeat", []byte{tagHeartbeat}, kindHeartbeat, ""},
		{"unicast", msg(tagGossipUnicast, "chan"), kindUnicast, "chan"},
		{"broadcast", msg(tagGossipBroadcast, long), kindBroadcast, long},
		{"gossip", msg(tagGossip, "chan"), kindGossip, "chan"},
		{"topology", msg(tagGossip, topologyChannel), kindTopology, ""},
		{"digest", msg(tagGossip, digestChannel), kindDigest, ""},
		{"sync", msg(tagGossip, syncChannel), kindDigest, ""},
		{"announce", msg(tagGossip, announceChannel), kindDigest, ""},
		{"pull", msg(tagGossip, pullChannel), kindDigest, ""},
		{"delta", msg(tagGossip, deltaChannel), kindTopology, ""},
		{"overlay", []byte{tagOverlayControl, 1, 2}, kindOverlay, ""},
		{"weave overlay", []byte{1}, kindOverlay, ""},
		{"unknown", []byte{99, 1}, kindOther, ""},
		{"truncated", msg(tagGossip, "chan")[:4], kindGossip, ""},
		{"tag only", []byte{tagGossipUnicast}, kindUnicast, ""},
		{"not a string", []byte{tagGossip, 3, gobTypeUint << 1, 0, 7}, kindGossip, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind, channel := classifyFrame(c.body)
			require.Equal(t, c.kind, kind)
			require.Equal(t, c.channel, string(channel))
		})
	}
}

// TestMetricsPerChannel counts frames directly: per kind, per registered
// channel, and nothing per channel for channels not registered.
func TestMetricsPerChannel(t *testing.T) {
	var m routerMetrics
	msg := func(tag byte, channel string, n int) []byte {
		return appendGossipMessage(nil, &gossipMessage{Tag: tag, Channel: channel, Src: 1, Dst: 2, Payload: make([]byte, n)})
	}
	m.frameSent(msg(tagGossipUnicast, "a", 10), nil) // before "a" is registered
	ca := m.addChannel("a")
	require.Same(t, ca, m.addChannel("a"), "registering again keeps the counters")
	m.addChannel("b")
	u := msg(tagGossipUnicast, "a", 100)
	m.frameSent(u, nil)
	m.frameSent(u, errors.New("write failed")) // not counted
	m.frameReceived(msg(tagGossip, "a", 5))
	m.frameReceived(msg(tagGossipBroadcast, "other", 5))
	m.frameSent(msg(tagGossip, topologyChannel, 50), nil)
	m.frameSent([]byte{tagHeartbeat}, nil)

	s, r, chans := m.traffic()
	require.Equal(t, Count{2, uint64(len(u) + len(msg(tagGossipUnicast, "a", 10)))}, s.Unicast, "totals include channels")
	require.Equal(t, uint64(1), s.Topology.Messages)
	require.Equal(t, Count{1, 1}, s.Heartbeat)
	require.Equal(t, uint64(1), r.Gossip.Messages)
	require.Equal(t, uint64(1), r.Broadcast.Messages)
	require.Len(t, chans, 2)

	a := chans["a"]
	require.Equal(t, a, ca.snapshot())
	require.Equal(t, Count{1, uint64(len(u))}, a.Sent.Unicast)
	require.Equal(t, uint64(1), a.Received.Gossip.Messages)
	require.Zero(t, a.Received.Broadcast.Messages)
	require.Equal(t, ChannelMetrics{}, m.channels.Load().lookup([]byte("b")).snapshot())
	require.Nil(t, m.channels.Load().lookup([]byte("c")))

	// Names alike in their first bytes, or in all but their length, are
	// told apart; past the first few channels, a map finds them.
	names := []string{"channel-one", "channel-two", "channel", "channe", "channel-one-more"}
	for i := range 2 * maxChannelScan {
		names = append(names, fmt.Sprint("many-channels-", i))
	}
	counters := make(map[*channelMetrics]string)
	for _, n := range names {
		counters[m.addChannel(n)] = n
	}
	require.Len(t, counters, len(names), "one set of counters per name")
	require.NotNil(t, m.channels.Load().index)
	for c, n := range counters {
		require.Same(t, c, m.channels.Load().lookup([]byte(n)), n)
	}
	require.Nil(t, m.channels.Load().lookup([]byte("channel-")))
	require.Nil(t, m.channels.Load().lookup([]byte("many-channels-99")))
	require.Same(t, ca, m.channels.Load().lookup([]byte("a")))
	m.frameSent(u, nil)
	require.Equal(t, Count{2, 2 * uint64(len(u))}, ca.snapshot().Sent.Unicast)
	s, _, _ = m.traffic()
	require.Equal(t, uint64(3), s.Unicast.Messages)
	require.Len(t, m.channels.Load().all, 2+len(names))

	kinds := 0
	s.Each(func(string, Count) { kinds++ })
	require.Equal(t, int(numFrameKinds), kinds)
}

// TestMetricsInboxDrops fills a channel's inbox with unicasts to ourselves
// (the router is not started, so nothing takes them).
func TestMetricsInboxDrops(t *testing.T) {
	r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(1), "a", nil, nil)
	require.NoError(t, err)
	defer r.Stop()
	g, err := r.NewGossip("full", newObsGossiper())
	require.NoError(t, err)
	failed := 0
	for i := 0; i < inboxLimit+5; i++ {
		if g.GossipUnicast(r.Ourself.Name, []byte("x")) != nil {
			failed++
		}
	}
	require.Equal(t, 5, failed)
	m := r.Metrics()
	require.EqualValues(t, 5, m.Drops.InboxFull)
	require.EqualValues(t, 5, m.Channels["full"].InboxDropped)
}

func TestMetricsQueueMerges(t *testing.T) {
	var m routerMetrics
	q := newSendQueue(1 << 10)
	q.metrics = &m
	k := gossipKey{tag: tagGossip, channel: "c", src: 1}
	q.pushGossip(k, obsData{"1"})
	q.pushGossip(k, obsData{"2"})
	q.pushGossip(gossipKey{tag: tagGossip, channel: "d", src: 1}, obsData{"3"})
	q.pushGossip(k, obsData{"4"})
	require.EqualValues(t, 2, m.gossipMerges.Load())

	// Gossip relayed for channels not registered here is merged too, and
	// dropped beyond its share of the queue.
	s1 := gossipKey{tag: tagGossip, channel: "unknown1", src: 1}
	s2 := gossipKey{tag: tagGossip, channel: "unknown2", src: 1}
	q.pushGossip(s1, newSurrogateData(make([]byte, maxSurrogatePending)))
	q.pushGossip(s2, newSurrogateData([]byte("x")))
	require.EqualValues(t, 1, m.sendQueueFull.Load())
	q.pushGossip(s1, newSurrogateData([]byte("y")))
	require.EqualValues(t, 3, m.gossipMerges.Load())

	// Queues made without a router count nothing and do not fail.
	q = newSendQueue(1 << 10)
	q.pushGossip(k, obsData{"1"})
	q.pushGossip(k, obsData{"2"})
	q.pushGossip(s1, newSurrogateData(make([]byte, maxSurrogatePending)))
	q.pushGossip(s2, newSurrogateData([]byte("x")))
}

// BenchmarkCounters measures what counting a frame costs: classifying it
// and adding to the counters of its kind and channel.
func BenchmarkCounters(b *testing.B) {
	var m routerMetrics
	m.addChannel("test")
	m.addChannel("other")
	unicast := appendGossipMessage(nil, &gossipMessage{Tag: tagGossipUnicast, Channel: "test", Src: 1, Dst: 2, Payload: make([]byte, 100)})
	gossip := appendGossipMessage(nil, &gossipMessage{Tag: tagGossip, Channel: "test", Src: 1, Payload: make([]byte, 100)})
	topology := appendGossipMessage(nil, &gossipMessage{Tag: tagGossip, Channel: topologyChannel, Src: 1, Payload: make([]byte, 100)})
	for _, c := range []struct {
		name string
		body []byte
	}{{"unicast", unicast}, {"gossip", gossip}, {"topology", topology}, {"heartbeat", []byte{tagHeartbeat}}} {
		b.Run("sent/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.frameSent(c.body, nil)
			}
		})
	}
	b.Run("received/unicast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.frameReceived(unicast)
		}
	})
	// Every goroutine counting at once, as the writers of many
	// connections do: the counters are shared.
	b.Run("sent/unicast/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.frameSent(unicast, nil)
			}
		})
	})
}
