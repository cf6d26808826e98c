package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Metrics is a snapshot of a router's counters, as Router.Metrics returns
// it. Counters only grow from the router's creation; gauges (Peers,
// ReachablePeers, Connections.Current) tell the state at the time of the
// snapshot. docs/API.md says what increments each counter.
type Metrics struct {
	// Peers is the number of peers in the topology, this router included.
	Peers int
	// ReachablePeers is the number of peers a chain of reported
	// connections leads to, this router included.
	ReachablePeers int

	// Sent and Received count the frames written to and read from
	// connections, by kind.
	Sent, Received Traffic
	// Channels counts, for each gossip channel registered on this router,
	// its unicast, broadcast and gossip frames.
	Channels map[string]ChannelMetrics

	Connections ConnectionMetrics

	// RouteRecomputations counts the passes that recomputed routes (each
	// burst of topology changes leads to one).
	RouteRecomputations uint64
	// RouteChanges counts the recomputations that changed unicast routes.
	RouteChanges uint64
	// TopologyUpdates counts the peer entries, received from neighbours,
	// that were newer than ours and were applied.
	TopologyUpdates uint64
	// PeersRemoved counts the peers removed because nothing reached them.
	PeersRemoved uint64
	// GossipMerges counts the GossipData merged into data already waiting
	// in a send queue for the same neighbour, channel and originator.
	GossipMerges uint64

	Drops DropMetrics
}

// Count is a number of frames and the bytes of their bodies (before
// encryption and framing).
type Count struct {
	Messages uint64
	Bytes    uint64
}

func (c *Count) add(o Count) {
	c.Messages += o.Messages
	c.Bytes += o.Bytes
}

// Traffic counts frames by kind.
type Traffic struct {
	// Unicast counts GossipUnicast messages, relayed ones included.
	Unicast Count
	// Broadcast counts GossipBroadcast messages, relayed ones included.
	Broadcast Count
	// Gossip counts gossip (GossipNeighbourSubset, periodic and relayed
	// gossip) of every channel but the topology.
	Gossip Count
	// Topology counts topology updates: whole entries, and between mesh
	// peers deltas of entries.
	Topology Count
	// Digest counts what mesh peers exchange to find the entries they
	// lack: digests, sync requests, announcements and pulls.
	Digest Count
	// Heartbeat counts heartbeats.
	Heartbeat Count
	// Overlay counts overlay control messages.
	Overlay Count
	// Other counts frames with a tag this router does not know.
	Other Count
}

// Each calls f for every kind of frame, with the kind's name in lower case
// ("unicast", "broadcast", "gossip", "topology", "digest", "heartbeat",
// "overlay", "other").
func (t Traffic) Each(f func(kind string, c Count)) {
	f("unicast", t.Unicast)
	f("broadcast", t.Broadcast)
	f("gossip", t.Gossip)
	f("topology", t.Topology)
	f("digest", t.Digest)
	f("heartbeat", t.Heartbeat)
	f("overlay", t.Overlay)
	f("other", t.Other)
}

func (t *Traffic) addChannel(c ChannelTraffic) {
	t.Unicast.add(c.Unicast)
	t.Broadcast.add(c.Broadcast)
	t.Gossip.add(c.Gossip)
}

// ChannelMetrics counts the frames of one gossip channel.
type ChannelMetrics struct {
	// Sent and Received count the channel's frames written to and read
	// from connections, relayed ones included.
	Sent, Received ChannelTraffic
	// InboxDropped counts the messages dropped because the channel's inbox
	// was full (its Gossiper was too slow).
	InboxDropped uint64
	// GossipNew counts the gossip messages for which OnGossip returned new
	// data.
	GossipNew uint64
}

// ChannelTraffic counts the frames of one channel by kind.
type ChannelTraffic struct {
	Unicast   Count
	Broadcast Count
	Gossip    Count
}

// Each calls f for "unicast", "broadcast" and "gossip".
func (t ChannelTraffic) Each(f func(kind string, c Count)) {
	f("unicast", t.Unicast)
	f("broadcast", t.Broadcast)
	f("gossip", t.Gossip)
}

// ConnectionMetrics counts connections.
type ConnectionMetrics struct {
	// Current is the number of connections registered now (handshake
	// done, not yet ended).
	Current int
	// Dials counts the outbound connection attempts.
	Dials uint64
	// Accepted counts the inbound connections accepted.
	Accepted uint64
	// Established counts the connections, both ways, that completed the
	// handshake and were registered.
	Established uint64
	// Dropped counts the established connections that ended, for
	// whatever reason (the router stopping included).
	Dropped uint64
	// Failures counts, by reason, the dials and connections that failed
	// before they were established.
	Failures ConnectionFailures
}

// ConnectionFailures counts failed connection attempts by reason.
type ConnectionFailures struct {
	// Password: the handshake failed to decrypt (ErrDecrypt), which almost
	// always means the two peers have different passwords.
	Password uint64
	// Version: no protocol version in common (ErrVersionMismatch).
	Version uint64
	// Encryption: one peer has a password and the other none
	// (ErrEncryptionMismatch, ErrBadEncryptionFlag).
	Encryption uint64
	// NameCollision: the remote has our name (ErrNameCollision).
	NameCollision uint64
	// Self: the connection reached this very router (ErrConnectToSelf).
	Self uint64
	// Duplicate: another connection to the same peer won
	// (ErrDuplicateConnection).
	Duplicate uint64
	// Limit: the connection limit was reached (ErrConnLimit).
	Limit uint64
	// Protocol: the remote broke the protocol (ErrBadHeader,
	// ErrBadFeatures, ErrMalformed, ErrFrameTooLarge).
	Protocol uint64
	// Timeout: a dial or handshake timed out.
	Timeout uint64
	// Refused: the remote refused the connection.
	Refused uint64
	// Other: anything else (the remote closing the connection, say).
	Other uint64
}

// Each calls f for every reason, with its name in lower case ("password",
// "version", "encryption", "name_collision", "self", "duplicate", "limit",
// "protocol", "timeout", "refused", "other").
func (f ConnectionFailures) Each(fn func(reason string, n uint64)) {
	for r := failureReason(0); r < numFailureReasons; r++ {
		fn(failureReasonNames[r], *f.field(r))
	}
}

func (f *ConnectionFailures) field(r failureReason) *uint64 {
	switch r {
	case reasonPassword:
		return &f.Password
	case reasonVersion:
		return &f.Version
	case reasonEncryption:
		return &f.Encryption
	case reasonNameCollision:
		return &f.NameCollision
	case reasonSelf:
		return &f.Self
	case reasonDuplicate:
		return &f.Duplicate
	case reasonLimit:
		return &f.Limit
	case reasonProtocol:
		return &f.Protocol
	case reasonTimeout:
		return &f.Timeout
	case reasonRefused:
		return &f.Refused
	}
	return &f.Other
}

// DropMetrics counts messages dropped on the way.
type DropMetrics struct {
	// SendQueueFull counts the messages (relayed unicasts, broadcasts,
	// relayed frames) dropped because the send queue of the next hop was
	// full, and the gossip of channels not registered here dropped because
	// its share of a send queue was full.
	SendQueueFull uint64
	// InboxFull counts the received messages dropped because their
	// channel's inbox was full.
	InboxFull uint64
	// BroadcastSkipped counts the broadcasts not passed on to a neighbour
	// whose send queue was full (also counted in SendQueueFull).
	BroadcastSkipped uint64
	// Events counts the membership events lost because a subscriber fell
	// behind (see Router.Subscribe).
	Events uint64
}

// Metrics returns a snapshot of the router's counters. It is cheap enough
// to call on every scrape of a monitoring system.
func (router *Router) Metrics() Metrics {
	m := &router.metrics
	out := Metrics{
		Peers:               router.Peers.count(),
		ReachablePeers:      router.Routes.reachableCount(),
		RouteRecomputations: m.routeRecomputations.Load(),
		RouteChanges:        m.routeChanges.Load(),
		TopologyUpdates:     m.topologyUpdates.Load(),
		PeersRemoved:        m.peersRemoved.Load(),
		GossipMerges:        m.gossipMerges.Load(),
		Drops: DropMetrics{
			SendQueueFull:    m.sendQueueFull.Load(),
			InboxFull:        m.inboxFull.Load(),
			BroadcastSkipped: m.broadcastSkipped.Load(),
			Events:           m.eventsDropped.Load(),
		},
		Connections: ConnectionMetrics{
			Dials:       m.dials.Load(),
			Accepted:    m.accepted.Load(),
			Established: m.established.Load(),
			Dropped:     m.dropped.Load(),
		},
	}
	for r := failureReason(0); r < numFailureReasons; r++ {
		*out.Connections.Failures.field(r) = m.failures[r].Load()
	}
	router.mu.RLock()
	out.Connections.Current = len(router.conns)
	router.mu.RUnlock()
	out.Sent, out.Received, out.Channels = m.traffic()
	return out
}

// traffic returns the frames sent and received, in total and per channel.
func (m *routerMetrics) traffic() (sent, received Traffic, channels map[string]ChannelMetrics) {
	sent, received = m.sent.snapshot(), m.received.snapshot()
	if chans := m.channels.Load(); chans != nil {
		channels = make(map[string]ChannelMetrics, len(chans.all))
		for _, e := range chans.all {
			c := e.counters.snapshot()
			channels[e.name] = c
			sent.addChannel(c.Sent)
			received.addChannel(c.Received)
		}
	}
	return sent, received, channels
}

// frameKind classifies frames for the counters.
type frameKind uint8

const (
	kindUnicast frameKind = iota
	kindBroadcast
	kindGossip
	kindTopology
	kindDigest
	kindHeartbeat
	kindOverlay
	kindOther
	numFrameKinds
)

// counts is a pair of counters for one kind of frame.
type counts struct {
	messages, bytes atomic.Uint64
}

func (c *counts) add(n int) {
	c.messages.Add(1)
	c.bytes.Add(uint64(n))
}

func (c *counts) load() Count {
	return Count{Messages: c.messages.Load(), Bytes: c.bytes.Load()}
}

type trafficCounters [numFrameKinds]counts

func (t *trafficCounters) snapshot() Traffic {
	return Traffic{
		Unicast:   t[kindUnicast].load(),
		Broadcast: t[kindBroadcast].load(),
		Gossip:    t[kindGossip].load(),
		Topology:  t[kindTopology].load(),
		Digest:    t[kindDigest].load(),
		Heartbeat: t[kindHeartbeat].load(),
		Overlay:   t[kindOverlay].load(),
		Other:     t[kindOther].load(),
	}
}

// channelMetrics holds the counters of one registered channel. Only the
// unicast, broadcast and gossip kinds are used.
type channelMetrics struct {
	sent, received [kindGossip + 1]counts
	inboxDropped   atomic.Uint64
	gossipNew      atomic.Uint64
}

func (c *channelMetrics) snapshot() ChannelMetrics {
	traffic := func(t *[kindGossip + 1]counts) ChannelTraffic {
		return ChannelTraffic{Unicast: t[kindUnicast].load(), Broadcast: t[kindBroadcast].load(), Gossip: t[kindGossip].load()}
	}
	return ChannelMetrics{
		Sent:         traffic(&c.sent),
		Received:     traffic(&c.received),
		InboxDropped: c.inboxDropped.Load(),
		GossipNew:    c.gossipNew.Load(),
	}
}

// routerMetrics holds a router's counters: atomic integers, so counting
// takes no lock and allocates nothing. Its zero value is ready to use.
//
// A frame of a registered channel is counted only in the channel's
// counters, which halves the atomic additions on the busiest path: the
// totals of unicast, broadcast and gossip frames are the sums of sent or
// received and of every channel's counters.
type routerMetrics struct {
	sent trafficCounters
	// received is apart from sent: readers and writers are different
	// goroutines, often on different cores.
	_        [64]byte
	received trafficCounters
	_        [64]byte

	// channels finds the counters of every registered channel. A table is
	// never modified: registering a channel stores a new one, so that
	// counting a frame needs no lock.
	channels  atomic.Pointer[channelTable]
	channelMu sync.Mutex // serialises registrations

	dials, accepted, established, dropped atomic.Uint64
	failures                              [numFailureReasons]atomic.Uint64

	routeRecomputations, routeChanges atomic.Uint64
	topologyUpdates, peersRemoved     atomic.Uint64
	gossipMerges                      atomic.Uint64

	sendQueueFull, inboxFull, broadcastSkipped, eventsDropped atomic.Uint64
}

// channelTable maps channel names to their counters. The first
// maxChannelScan channels are found by comparing a key made of the name's
// length and first bytes, held in the table itself, so that finding a
// channel usually reads one cache line; more are found in a map.
type channelTable struct {
	n     int
	scan  [maxChannelScan]channelEntry
	index map[string]*channelMetrics // the channels after the first maxChannelScan
	all   []channelEntry             // every channel, in order of registration
}

type channelEntry struct {
	key      uint64
	name     string
	counters *channelMetrics
}

// maxChannelScan is how many channels are looked up by comparing keys one
// by one, which is faster than hashing.
const maxChannelScan = 8

// channelKey packs the length of name and its first seven bytes, which
// identify names of up to seven bytes completely.
func channelKey(name []byte) uint64 {
	var k uint64
	if len(name) >= 8 {
		k = binary.LittleEndian.Uint64(name) & (1<<56 - 1)
	} else {
		for i, c := range name {
			k |= uint64(c) << (8 * i)
		}
	}
	return k | uint64(len(name)&0xff)<<56
}

func (t *channelTable) lookup(name []byte) *channelMetrics {
	k := channelKey(name)
	for i := 0; i < t.n; i++ {
		if e := &t.scan[i]; e.key == k && (len(name) <= 7 || e.name == string(name)) {
			return e.counters
		}
	}
	if t.index != nil {
		return t.index[string(name)] // does not allocate
	}
	return nil
}

// addChannel registers the counters of a new channel and returns them.
func (m *routerMetrics) addChannel(name string) *channelMetrics {
	m.channelMu.Lock()
	defer m.channelMu.Unlock()
	old := m.channels.Load()
	if old == nil {
		old = &channelTable{}
	}
	if c := old.lookup([]byte(name)); c != nil {
		return c
	}
	c := &channelMetrics{}
	e := channelEntry{key: channelKey([]byte(name)), name: name, counters: c}
	next := &channelTable{n: old.n, scan: old.scan, all: append(old.all[:len(old.all):len(old.all)], e)}
	if next.n < maxChannelScan {
		next.scan[next.n] = e
		next.n++
	} else {
		next.index = make(map[string]*channelMetrics, len(next.all))
		for _, e := range next.all[maxChannelScan:] {
			next.index[e.name] = e.counters
		}
	}
	m.channels.Store(next)
	return c
}

// frameSent counts a frame body handed to a connection's writer; err is
// what appending it to the output gave (nothing is counted on error).
func (m *routerMetrics) frameSent(body []byte, err error) {
	if err != nil || len(body) == 0 {
		return
	}
	kind, channel := classifyFrame(body)
	if c := m.channel(kind, channel); c != nil {
		c.sent[kind].add(len(body))
	} else {
		m.sent[kind].add(len(body))
	}
}

// frameReceived counts a frame body read from a connection.
func (m *routerMetrics) frameReceived(body []byte) {
	if len(body) == 0 {
		return
	}
	kind, channel := classifyFrame(body)
	if c := m.channel(kind, channel); c != nil {
		c.received[kind].add(len(body))
	} else {
		m.received[kind].add(len(body))
	}
}

// channel returns the counters of a registered channel for frames of the
// kinds counted per channel; nil otherwise.
func (m *routerMetrics) channel(kind frameKind, name []byte) *channelMetrics {
	if kind > kindGossip || name == nil {
		return nil
	}
	chans := m.channels.Load()
	if chans == nil {
		return nil
	}
	return chans.lookup(name)
}

// gossipMerged counts a merge in a send queue; m may be nil (queues made
// without a router, in tests).
func (m *routerMetrics) gossipMerged() {
	if m != nil {
		m.gossipMerges.Add(1)
	}
}

// surrogateDropped counts gossip of a channel not registered here dropped
// because its share of a send queue was full; m may be nil.
func (m *routerMetrics) surrogateDropped() {
	if m != nil {
		m.sendQueueFull.Add(1)
	}
}

// classifyFrame returns the kind of a frame body and, for gossip messages,
// the channel name (aliasing body; nil when it cannot be read). It never
// fails: a malformed frame is counted by its tag.
func classifyFrame(body []byte) (frameKind, []byte) {
	switch body[0] {
	case tagHeartbeat:
		return kindHeartbeat, nil
	case tagGossipUnicast:
		return kindUnicast, frameChannel(body)
	case tagGossipBroadcast:
		return kindBroadcast, frameChannel(body)
	case tagGossip:
		channel := frameChannel(body)
		switch string(channel) {
		case topologyChannel, deltaChannel:
			return kindTopology, nil
		case digestChannel, syncChannel, announceChannel, pullChannel:
			return kindDigest, nil
		}
		return kindGossip, channel
	case 1, 2, 3, tagOverlayControl:
		return kindOverlay, nil
	}
	return kindOther, nil
}

// frameChannel reads the channel name that follows the tag of a gossip
// frame body: one gob message holding a string.
func frameChannel(body []byte) []byte {
	// The usual case, names shorter than 123 bytes: the message length,
	// the string type, delta 0 and the name's length each take one byte.
	if len(body) >= 5 && body[1] < 0x80 && body[2] == gobTypeString<<1 && body[3] == 0 && body[4] < 0x80 && int(body[1]) == 3+int(body[4]) {
		if end := 5 + int(body[4]); end <= len(body) {
			return body[5:end:end]
		}
		return nil
	}
	d := rawDecoder{b: body, off: 1}
	if _, err := d.uint(); err != nil { // the message's length
		return nil
	}
	if t, err := d.uint(); err != nil || t != gobTypeString<<1 {
		return nil
	}
	if delta, err := d.uint(); err != nil || delta != 0 {
		return nil
	}
	name, err := d.bytes(maxChannelNameLen)
	if err != nil {
		return nil
	}
	return name
}

// failureReason is why a connection attempt failed.
type failureReason uint8

const (
	reasonPassword failureReason = iota
	reasonVersion
	reasonEncryption
	reasonNameCollision
	reasonSelf
	reasonDuplicate
	reasonLimit
	reasonProtocol
	reasonTimeout
	reasonRefused
	reasonOther
	numFailureReasons
)

var failureReasonNames = [numFailureReasons]string{
	"password", "version", "encryption", "name_collision", "self",
	"duplicate", "limit", "protocol", "timeout", "refused", "other",
}

// failureReasonOf maps an error to the reason it is counted under.
func failureReasonOf(err error) failureReason {
	switch {
	case errors.Is(err, ErrDecrypt):
		return reasonPassword
	case errors.Is(err, ErrVersionMismatch):
		return reasonVersion
	case errors.Is(err, ErrEncryptionMismatch), errors.Is(err, ErrBadEncryptionFlag):
		return reasonEncryption
	case errors.Is(err, ErrNameCollision):
		return reasonNameCollision
	case errors.Is(err, ErrConnectToSelf):
		return reasonSelf
	case errors.Is(err, ErrDuplicateConnection):
		return reasonDuplicate
	case errors.Is(err, ErrConnLimit):
		return reasonLimit
	case errors.Is(err, ErrBadHeader), errors.Is(err, ErrBadFeatures), errors.Is(err, ErrMalformed), errors.Is(err, ErrFrameTooLarge):
		return reasonProtocol
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return reasonRefused
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reasonTimeout
	}
	return reasonOther
}

// stopping reports whether the router is stopping, when failures are
// expected and not counted.
func (router *Router) stopping() bool {
	select {
	case <-router.stop:
		return true
	default:
		return false
	}
}

// countFailure counts a failed connection attempt, unless the router is
// stopping.
func (router *Router) countFailure(err error) {
	if err == nil || errors.Is(err, ErrStopped) || errors.Is(err, context.Canceled) || router.stopping() {
		return
	}
	router.metrics.failures[failureReasonOf(err)].Add(1)
}

// countDial counts a dial and, when it failed, the failure.
func (router *Router) countDial(err error) {
	router.metrics.dials.Add(1)
	router.countFailure(err)
}

// countRegistration counts a connection that completed its handshake and
// was registered (err nil) or refused.
func (router *Router) countRegistration(err error) {
	if err == nil {
		router.metrics.established.Add(1)
		return
	}
	router.countFailure(err)
}

// instrumentConnection counts a new connection if inbound, and lets its
// send queue count merges.
func (router *Router) instrumentConnection(c *LocalConnection) {
	c.q.metrics = &router.metrics
	if !c.outbound {
		router.metrics.accepted.Add(1)
	}
}

// countInboxDrop counts a message dropped because a channel's inbox was
// full.
func (router *Router) countInboxDrop(c *channelMetrics) {
	router.metrics.inboxFull.Add(1)
	if c != nil {
		c.inboxDropped.Add(1)
	}
}

// topologyPassDone is called by the topology loop after each pass: it
// counts it and publishes the membership and route events it led to.
func (router *Router) topologyPassDone(routesChanged bool, removed []*Peer) {
	m := &router.metrics
	m.routeRecomputations.Add(1)
	if routesChanged {
		m.routeChanges.Add(1)
	}
	m.peersRemoved.Add(uint64(len(removed)))
	router.events.publish(router, routesChanged)
}
