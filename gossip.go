package mesh

import (
	"fmt"
	"hash/maphash"
	"sync"
)

// Gossip is what a registered channel gives its owner to send messages.
type Gossip interface {
	// GossipUnicast sends msg to the peer dst, over several hops if
	// needed. It returns an error when dst cannot be reached. It may block
	// while the connection to the next hop has a full send queue.
	GossipUnicast(dst PeerName, msg []byte) error
	// GossipBroadcast sends update to every reachable peer, once each,
	// along a spanning tree rooted at this peer. It never blocks: a
	// neighbour whose send queue is full misses it (periodic gossip
	// repairs that).
	GossipBroadcast(update GossipData)
	// GossipNeighbourSubset sends update to a random subset of our
	// neighbours, which pass on whatever is new to them.
	GossipNeighbourSubset(update GossipData)
}

// Gossiper is implemented by the owner of a gossip channel to receive what
// other peers send on it.
//
// The router calls the methods of one Gossiper from a single goroutine, in
// the order the messages arrived, so they need no locking among
// themselves; but the Gossiper's own API is usually called from other
// goroutines too, so its state must be safe for concurrent use. A slow
// method delays only its own channel: other channels and the topology keep
// going. Messages that arrive while the channel's queue is full are dropped
// (and counted), so methods should return promptly.
type Gossiper interface {
	// OnGossipUnicast receives a message sent to this peer by src.
	OnGossipUnicast(src PeerName, msg []byte) error
	// OnGossipBroadcast receives a broadcast originated by src. It returns
	// what to pass on to the rest of the broadcast tree: usually the part
	// of update that was new here; nil passes nothing on.
	OnGossipBroadcast(src PeerName, update []byte) (received GossipData, err error)
	// Gossip returns the complete state, sent every gossip interval to a
	// random subset of neighbours. nil sends nothing.
	Gossip() (complete GossipData)
	// OnGossip merges gossip received from a neighbour and returns what was
	// new here (nil if nothing), which is then gossiped on.
	OnGossip(msg []byte) (delta GossipData, err error)
}

// GossipData is a piece of state that can be sent and merged.
type GossipData interface {
	// Encode returns the state as one or more messages; each travels in a
	// frame of its own and is passed separately to the receiving Gossiper.
	Encode() [][]byte
	// Merge folds other into this data and returns the result. The router
	// merges gossip waiting to be sent to the same neighbour, so an update
	// passed to GossipNeighbourSubset, or returned by OnGossip, may later
	// be merged into: Merge may modify and return its receiver, but must
	// not modify other. Broadcasts are encoded when sent and never merged.
	Merge(other GossipData) GossipData
}

// topologyChannel is the name of the built-in channel carrying topology.
const topologyChannel = "topology"

// Bounds of the messages waiting for one channel's Gossiper: a count, and
// the bytes of their payloads.
const (
	inboxLimit      = 16384
	inboxBytesLimit = 16 << 20
)

type inboxKind uint8

const (
	inboxUnicast inboxKind = iota
	inboxBroadcast
	inboxGossip
	inboxPeriodic
	inboxNewNeighbour // src is a neighbour that just connected
)

type inboxItem struct {
	kind inboxKind
	src  PeerName
	msg  []byte
}

// gossipChannel is a registered channel: it hands received messages to its
// Gossiper on a goroutine of its own, so a slow Gossiper stalls only
// itself.
type gossipChannel struct {
	name     string
	router   *Router
	gossiper Gossiper

	mu      sync.Mutex
	items   []inboxItem
	spare   []inboxItem
	bytes   int
	wake    chan struct{}
	dropped uint64
	metrics *channelMetrics
}

func newGossipChannel(name string, r *Router, g Gossiper) *gossipChannel {
	return &gossipChannel{name: name, router: r, gossiper: g, wake: make(chan struct{}, 1)}
}

// deliver queues a message for the Gossiper; it never blocks. It reports
// false when the queue was full and the message was dropped.
func (c *gossipChannel) deliver(kind inboxKind, src PeerName, msg []byte) bool {
	c.mu.Lock()
	if len(c.items) >= inboxLimit || (c.bytes+len(msg) > inboxBytesLimit && len(c.items) > 0) {
		c.dropped++
		c.router.countInboxDrop(c.metrics)
		c.mu.Unlock()
		return false
	}
	c.items = append(c.items, inboxItem{kind: kind, src: src, msg: msg})
	c.bytes += len(msg)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// run calls the Gossiper for each queued message until stop is closed.
func (c *gossipChannel) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch := c.items
		c.items = c.spare[:0]
		c.bytes = 0
		c.mu.Unlock()
		for i := range batch {
			select {
			case <-stop:
				return
			default:
			}
			c.handle(&batch[i])
			batch[i] = inboxItem{}
		}
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
	}
}

// handle passes a message to the Gossiper. Errors it returns are logged at
// most once a minute per channel, source peer and kind of message, so that
// a peer sending what the Gossiper rejects cannot fill the log.
func (c *gossipChannel) handle(it *inboxItem) {
	r := c.router
	switch it.kind {
	case inboxUnicast:
		if err := c.gossiper.OnGossipUnicast(it.src, it.msg); err != nil {
			r.logLimited(logKey{kind: "gossip unicast error", channel: c.name, peer: it.src},
				fmt.Sprintf("[gossip %s]: unicast from %s: %v", c.name, it.src, err), err)
		}
	case inboxBroadcast:
		data, err := c.gossiper.OnGossipBroadcast(it.src, it.msg)
		if err != nil {
			r.logLimited(logKey{kind: "gossip broadcast error", channel: c.name, peer: it.src},
				fmt.Sprintf("[gossip %s]: broadcast from %s: %v", c.name, it.src, err), err)
			return
		}
		if data != nil {
			r.relayBroadcast(c.name, it.src, data)
		}
	case inboxGossip:
		data, err := c.gossiper.OnGossip(it.msg)
		if err != nil {
			r.logLimited(logKey{kind: "gossip error", channel: c.name, peer: it.src},
				fmt.Sprintf("[gossip %s]: gossip from %s: %v", c.name, it.src, err), err)
			return
		}
		if data != nil {
			c.metrics.gossipNew.Add(1)
			r.sendNeighbourSubset(c.name, data, it.src)
		}
	case inboxPeriodic:
		if data := c.gossiper.Gossip(); data != nil {
			r.sendNeighbourSubset(c.name, data, UnknownPeerName)
		}
	case inboxNewNeighbour:
		// A new neighbour gets our complete state at once, so a peer that
		// joins late need not wait for the next periodic gossip.
		if conn := r.connectionTo(it.src); conn != nil {
			if data := c.gossiper.Gossip(); data != nil {
				conn.q.pushGossip(gossipKey{tag: tagGossip, channel: c.name, src: r.Ourself.Name}, data)
			}
		}
	}
}

// channelSender implements Gossip for a registered channel.
type channelSender struct {
	router  *Router
	channel string
}

var _ Gossip = (*channelSender)(nil)

func (s *channelSender) GossipUnicast(dst PeerName, msg []byte) error {
	return s.router.sendUnicast(s.channel, dst, msg)
}

func (s *channelSender) GossipBroadcast(update GossipData) {
	s.router.relayBroadcast(s.channel, s.router.Ourself.Name, update)
}

func (s *channelSender) GossipNeighbourSubset(update GossipData) {
	s.router.sendNeighbourSubset(s.channel, update, UnknownPeerName)
}

// surrogateData carries messages of a channel this router has not
// registered, so that they can be passed on unchanged.
type surrogateData struct {
	msgs [][]byte
	size int
}

// maxSurrogatePending bounds the bytes of surrogate messages waiting for
// one neighbour: within one channel older messages are dropped first, and
// once the bound is reached over all channels new ones are dropped.
const maxSurrogatePending = 1 << 20

// surrogateKeyOverhead is what one more channel waiting in a send queue
// counts for, besides its name and messages.
const surrogateKeyOverhead = 64

// pushSurrogate queues gossip relayed for a channel not registered here;
// the caller holds q.mu. Each channel waits under a key of its own, and
// any peer can make up channel names, so the bound maxSurrogatePending
// holds for all such channels of the queue together: the channel's own
// older messages make room first, and a message that still does not fit is
// dropped (its owners' periodic gossip repairs that). Only a queue holding
// nothing else takes a message larger than the bound. It reports whether s
// was queued.
func (q *sendQueue) pushSurrogate(key gossipKey, s *surrogateData) bool {
	if q.gossip == nil {
		q.gossip = make(map[gossipKey]GossipData)
	}
	cost := func(d *surrogateData) int { return d.size + len(key.channel) + surrogateKeyOverhead }
	switch pending := q.gossip[key].(type) {
	case nil:
		if q.surrogateBytes > 0 && q.surrogateBytes+cost(s) > maxSurrogatePending {
			q.dropped++
			q.metrics.surrogateDropped()
			return false
		}
		q.gossip[key] = s
		q.order = append(q.order, key)
		q.surrogateBytes += cost(s)
	case *surrogateData:
		merged := pending.Merge(s).(*surrogateData)
		q.metrics.gossipMerged()
		others := q.surrogateBytes - cost(pending)
		for len(merged.msgs) > 1 && others+cost(merged) > maxSurrogatePending {
			merged.size -= len(merged.msgs[0])
			merged.msgs = merged.msgs[1:]
		}
		if others > 0 && others+cost(merged) > maxSurrogatePending {
			q.dropped++
			q.metrics.surrogateDropped()
			return false
		}
		q.gossip[key] = merged
		q.surrogateBytes = others + cost(merged)
	default:
		// The channel has been registered since: its data absorbs it.
		q.gossip[key] = pending.Merge(s)
	}
	return true
}

func newSurrogateData(msg []byte) *surrogateData {
	return &surrogateData{msgs: [][]byte{msg}, size: len(msg)}
}

func (d *surrogateData) Encode() [][]byte { return d.msgs }

func (d *surrogateData) Merge(other GossipData) GossipData {
	o, ok := other.(*surrogateData)
	if !ok {
		return d
	}
	msgs := make([][]byte, 0, len(d.msgs)+len(o.msgs))
	msgs = append(append(msgs, d.msgs...), o.msgs...)
	size := d.size + o.size
	for size > maxSurrogatePending && len(msgs) > 1 {
		size -= len(msgs[0])
		msgs = msgs[1:]
	}
	return &surrogateData{msgs: msgs, size: size}
}

// recentSet remembers hashes of recently relayed surrogate gossip, so that
// gossip of a channel nobody here understands is passed on once and does
// not circle for ever. It holds a bounded number of entries.
type recentSet struct {
	mu   sync.Mutex
	seed maphash.Seed
	set  map[uint64]struct{}
	ring []uint64
	next int
}

const recentSetSize = 4096

func newRecentSet() *recentSet {
	// The set and ring grow as surrogate gossip arrives: most routers never
	// relay any.
	return &recentSet{seed: maphash.MakeSeed(), set: make(map[uint64]struct{})}
}

// firstTime records the message and reports whether it was not seen recently.
func (s *recentSet) firstTime(channel string, msg []byte) bool {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(channel)
	h.WriteByte(0)
	h.Write(msg)
	sum := h.Sum64()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[sum]; ok {
		return false
	}
	if len(s.ring) < recentSetSize {
		s.ring = append(s.ring, sum)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = sum
		s.next = (s.next + 1) % recentSetSize
	}
	s.set[sum] = struct{}{}
	return true
}

// topologyGossipData is the topology as GossipData: a set of peer names
// whose current entries are encoded when it is sent.
type topologyGossipData struct {
	peers *Peers
	names map[PeerName]struct{}
}

var _ GossipData = (*topologyGossipData)(nil)

func newTopologyGossipData(peers *Peers, names []PeerName) *topologyGossipData {
	d := &topologyGossipData{peers: peers, names: make(map[PeerName]struct{}, len(names))}
	for _, n := range names {
		d.names[n] = struct{}{}
	}
	return d
}

// Encode encodes the current entries of the peers in the set.
func (d *topologyGossipData) Encode() [][]byte {
	names := make([]PeerName, 0, len(d.names))
	for n := range d.names {
		names = append(names, n)
	}
	return d.peers.encodeTopology(names)
}

// Merge adds the peers of other to the set.
func (d *topologyGossipData) Merge(other GossipData) GossipData {
	o, ok := other.(*topologyGossipData)
	if !ok {
		return d
	}
	for n := range o.names {
		d.names[n] = struct{}{}
	}
	return d
}

func (d *topologyGossipData) String() string { return fmt.Sprintf("topology(%d peers)", len(d.names)) }
