package mesh

import (
	"encoding/binary"
	"errors"
	"slices"
	"sync"
)

// errQueueFull is returned when a message is dropped because the send
// queue of the next hop is full.
var errQueueFull = errors.New("mesh: send queue full")

// errConnClosed is returned for messages queued on a connection that has
// shut down.
var errConnClosed = errors.New("mesh: connection closed")

// gossipKey identifies data waiting to be sent that can be merged: the
// same kind of message, on the same channel, from the same originator.
type gossipKey struct {
	tag     byte
	channel string
	src     PeerName
}

// sendQueue holds what one connection has to send.
//
// Messages with a fixed body (unicasts, relayed frames) are appended to buf,
// each as a 4-byte length and the body, up to limit bytes. GossipData waiting
// for the same key is merged, so a slow neighbour gets the union of the
// updates rather than a backlog of them. Topology is kept as the set of
// peers whose entries are to be sent, encoded only when the writer is ready.
//
// Any goroutine may push; only the connection's writer takes.
type sendQueue struct {
	mu       sync.Mutex
	buf      []byte
	count    int
	limit    int
	topoFull bool
	topo     nameSet
	// announce holds the peers whose entries are to be announced (see
	// topology_pull.go), pull the records of entries to ask for.
	announce nameSet
	// announceLater holds the peers whose newer versions of entries the
	// remote most likely has are to be announced: sent at most once per
	// the router's announce delay (see Router.announceDelay), so that a
	// peer changing faster than that is announced once per delay.
	announceLater nameSet
	// relay holds the peers new to us whose entries are to be sent whole
	// to a mesh peer, but for those it is known to have (see
	// Router.mergeUpdates).
	relay nameSet
	pull  []digestEntry
	// answers holds the records of pulls to answer: what the remote has
	// of each entry it asked for.
	answers []digestEntry
	// syncAnswer holds the digest records that answer a sync request:
	// those of our entries the remote lacks or has older (see
	// Router.handleSync).
	syncAnswer []digestEntry
	// ownChanged asks for our own entry after a change of it (see
	// pushOwnChange); our name in topo asks for it whole.
	ownChanged bool
	// digest asks for our digest to be sent, sync for it to be sent as a
	// sync request (see digest.go).
	digest bool
	sync   bool
	gossip map[gossipKey]GossipData
	order  []gossipKey
	closed bool
	// spaceWait is non-nil while a sender waits for room in buf; the
	// writer closes it after taking what is queued.
	spaceWait chan struct{}
	dropped   uint64
	// surrogateBytes counts the gossip of channels not registered here
	// waiting to be relayed, over all its channels (see pushGossip).
	surrogateBytes int
	// metrics counts merges; nil in tests.
	metrics *routerMetrics
	// beat asks for a heartbeat.
	beat bool

	// writing is set while a writer goroutine runs; startWriter starts
	// one (nil until the connection may be written to). A writer ends
	// only with the queue empty (stopWriterIfIdle), and the next push
	// starts another, so at most one runs at a time.
	writing     bool
	startWriter func()

	// wake has room for one token: the writer's wake-up call.
	wake chan struct{}
}

func newSendQueue(limit int) *sendQueue {
	return &sendQueue{limit: limit, wake: make(chan struct{}, 1)}
}

// signal makes sure a writer looks at the queue: it wakes the writer, or
// starts one.
func (q *sendQueue) signal() {
	q.mu.Lock()
	start := q.needWriterLocked()
	q.mu.Unlock()
	q.wakeWriter(start)
}

// needWriterLocked reports whether no writer runs and one must be
// started; the caller holds mu, and then calls wakeWriter.
func (q *sendQueue) needWriterLocked() bool {
	if q.writing || q.closed || q.startWriter == nil {
		return false
	}
	q.writing = true
	return true
}

// wakeWriter starts a writer, or wakes the one running.
func (q *sendQueue) wakeWriter(start bool) {
	if start {
		q.startWriter()
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// setStartWriter sets how writers are started, and starts one if
// something is queued already.
func (q *sendQueue) setStartWriter(start func()) {
	q.mu.Lock()
	q.startWriter = start
	need := !q.emptyLocked() && q.needWriterLocked()
	q.mu.Unlock()
	if need {
		q.wakeWriter(true)
	}
}

// emptyLocked reports whether nothing is queued; the caller holds mu.
func (q *sendQueue) emptyLocked() bool {
	return len(q.buf) == 0 && !q.topoFull && len(q.topo.names) == 0 && len(q.announce.names) == 0 && len(q.announceLater.names) == 0 &&
		len(q.relay.names) == 0 && len(q.pull) == 0 && len(q.answers) == 0 && len(q.syncAnswer) == 0 && !q.ownChanged && !q.digest && !q.sync && !q.beat &&
		len(q.order) == 0
}

// stopWriterIfIdle is called by the writer after waiting in vain: it
// reports whether the writer is to end, nothing being queued.
func (q *sendQueue) stopWriterIfIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.emptyLocked() || len(q.wake) > 0 {
		return false
	}
	q.writing = false
	return true
}

// pushHeartbeat asks for a heartbeat.
func (q *sendQueue) pushHeartbeat() { q.setFlag(&q.beat) }

// setFlag sets one of the queue's flags (a field of q), unless the queue
// is closed, and wakes the writer.
func (q *sendQueue) setFlag(flag *bool) {
	q.mu.Lock()
	if !q.closed {
		*flag = true
	}
	q.mu.Unlock()
	q.signal()
}

// reserve makes room for a body of n bytes, returning the offset of its
// length prefix; the caller holds mu and then appends the body to q.buf
// and calls finish. ok is false when the queue is full (an empty queue
// always takes a message, whatever its size).
func (q *sendQueue) reserve(n int) (off int, ok bool) {
	if len(q.buf) > 0 && len(q.buf)+4+n > q.limit {
		return 0, false
	}
	if q.buf == nil {
		q.buf = getBuffer()
	}
	off = len(q.buf)
	q.buf = append(q.buf, 0, 0, 0, 0)
	return off, true
}

func (q *sendQueue) finish(off int) {
	binary.BigEndian.PutUint32(q.buf[off:], uint32(len(q.buf)-off-4))
	q.count++
}

// pushTopology asks for the entries of names to be sent (all peers when
// full is set).
func (q *sendQueue) pushTopology(names []PeerName, full bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if full {
		q.topoFull = true
		q.topo = nameSet{}
	} else if !q.topoFull {
		q.topo.add(names)
	}
	q.mu.Unlock()
	q.signal()
}

// pushOwnChange asks for our own entry to be sent after a change of our
// connections: as a delta where the remote understands them (see
// topology_delta.go), else whole.
func (q *sendQueue) pushOwnChange() { q.setFlag(&q.ownChanged) }

// pushAnnounce asks for the current versions of names to be announced.
func (q *sendQueue) pushAnnounce(names []PeerName) { q.pushNames(&q.announce, names) }

// pushRelay asks for the current entries of names to be sent whole, but
// for those the remote is known to have.
func (q *sendQueue) pushRelay(names []PeerName) { q.pushNames(&q.relay, names) }

// pushAnnounceLater asks for the current versions of names to be
// announced with the next announcements of newer versions.
func (q *sendQueue) pushAnnounceLater(names []PeerName) { q.pushNames(&q.announceLater, names) }

// pushNames adds names to the set to.
func (q *sendQueue) pushNames(to *nameSet, names []PeerName) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	to.add(names)
	q.mu.Unlock()
	q.signal()
}

// pushAnswers queues the answer to a pull, given the remote's records of
// the entries it asks for.
func (q *sendQueue) pushAnswers(records []digestEntry) { q.pushRecords(&q.answers, records) }

// pushPull queues a request for entries, given our records of them.
func (q *sendQueue) pushPull(records []digestEntry) { q.pushRecords(&q.pull, records) }

// pushSyncAnswer queues the digest records that answer a sync request.
func (q *sendQueue) pushSyncAnswer(records []digestEntry) { q.pushRecords(&q.syncAnswer, records) }

// pushRecords appends records to the list to, unless it holds
// maxDigestRecords already.
func (q *sendQueue) pushRecords(to *[]digestEntry, records []digestEntry) {
	q.mu.Lock()
	if q.closed || len(*to) >= maxDigestRecords {
		q.mu.Unlock()
		return
	}
	if *to == nil {
		*to = recordsPool.get()
	}
	*to = append(*to, records...)
	q.mu.Unlock()
	q.signal()
}

// pushTopologySync starts an exchange of topologies: a sync request when
// the remote understands digests, else the full topology.
func (q *sendQueue) pushTopologySync(digests bool) {
	if digests {
		q.setFlag(&q.sync)
	} else {
		q.pushTopology(nil, true)
	}
}

// pushDigest asks for our topology digest to be sent.
func (q *sendQueue) pushDigest() { q.setFlag(&q.digest) }

// pushGossip queues data, merging it into what waits under the same key.
func (q *sendQueue) pushGossip(key gossipKey, data GossipData) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if s, ok := data.(*surrogateData); ok {
		queued := q.pushSurrogate(key, s)
		q.mu.Unlock()
		if queued {
			q.signal()
		}
		return
	}
	if q.gossip == nil {
		q.gossip = make(map[gossipKey]GossipData)
	}
	if pending, ok := q.gossip[key]; ok {
		q.gossip[key] = pending.Merge(data)
		q.metrics.gossipMerged()
	} else {
		q.gossip[key] = data
		q.order = append(q.order, key)
	}
	q.mu.Unlock()
	q.signal()
}

// nameSet is a set of peer names kept as a slice: names are appended, and
// duplicates removed when it has grown to twice its size after the last
// removal, and when it is taken. Cheaper than a map for the few names a
// batch usually holds, and bounded to twice the number of distinct names.
type nameSet struct {
	names     []PeerName
	compactAt int
}

func (s *nameSet) add(names []PeerName) {
	s.names = append(namesPool.grow(s.names, len(names)), names...)
	if len(s.names) >= max(s.compactAt, smallBatch) {
		s.compact()
		s.compactAt = 2 * len(s.names)
	}
}

func (s *nameSet) compact() {
	slices.Sort(s.names)
	s.names = slices.Compact(s.names)
}

// take appends the names, in order and without duplicates, to dst and
// empties the set. A set a burst made large is dropped rather than kept
// for the next batch: an idle connection should not hold it.
func (s *nameSet) take(dst []PeerName) []PeerName {
	s.compact()
	if len(s.names) > 0 {
		dst = append(namesPool.grow(dst, len(s.names)), s.names...)
	}
	if cap(s.names) > smallBatch {
		namesPool.put(s.names)
		s.names = nil
	} else {
		s.names = s.names[:0]
	}
	s.compactAt = 0
	return dst
}

// smallBatch is the capacity of the lists of a batch kept between batches;
// larger ones, left by a burst, are dropped (see release).
const smallBatch = 64

// release drops the lists of b that a burst made large, or all of them
// when the connection has nothing more to send, so that an idle
// connection does not keep them.
func (b *sendBatch) release(idle bool) {
	if idle || cap(b.topo) > smallBatch {
		namesPool.put(b.topo)
		b.topo = nil
	}
	if idle || cap(b.announce) > smallBatch {
		namesPool.put(b.announce)
		b.announce = nil
	}
	if idle || cap(b.relay) > smallBatch {
		namesPool.put(b.relay)
		b.relay = nil
	}
	if idle || cap(b.pull) > smallBatch {
		recordsPool.put(b.pull)
		b.pull = nil
	}
	if idle || cap(b.answers) > smallBatch {
		recordsPool.put(b.answers)
		b.answers = nil
	}
	if idle || cap(b.syncAnswer) > smallBatch {
		recordsPool.put(b.syncAnswer)
		b.syncAnswer = nil
	}
	if idle {
		*b = sendBatch{}
		return
	}
	if cap(b.keys) > smallBatch {
		b.keys, b.gossip = nil, nil
	}
}

// sendBatch is what the writer takes from the queue in one go.
type sendBatch struct {
	buf        []byte
	count      int
	topoFull   bool
	topo       []PeerName
	relay      []PeerName
	announce   []PeerName
	later      bool // announce holds announcements of newer versions
	answers    []digestEntry
	syncAnswer []digestEntry
	pull       []digestEntry
	ownChanged bool
	digest     bool
	sync       bool
	beat       bool
	gossip     []GossipData
	keys       []gossipKey
}

// take moves everything queued into b, reusing b's buffers. Topology is
// taken only when withTopology is set, and the announcements of newer
// versions only when withLater is set too; hasTopology tells whether some
// topology is still waiting, hasLater whether such announcements are.
func (q *sendQueue) take(b *sendBatch, withTopology, withLater bool) (hasTopology, hasLater bool) {
	q.mu.Lock()
	b.buf, q.buf = q.buf, nil
	b.count, q.count = q.count, 0
	b.topoFull = false
	b.topo = b.topo[:0]
	b.relay = b.relay[:0]
	b.announce = b.announce[:0]
	b.later = false
	b.ownChanged = false
	if withTopology {
		b.topoFull = q.topoFull
		q.topoFull = false
		b.topo = q.topo.take(b.topo)
		b.relay = q.relay.take(b.relay)
		b.announce = q.announce.take(b.announce)
		if withLater && len(q.announceLater.names) > 0 {
			n := len(b.announce)
			b.announce = q.announceLater.take(b.announce)
			b.later = true
			if n > 0 {
				slices.Sort(b.announce)
				b.announce = slices.Compact(b.announce)
			}
		}
		b.ownChanged, q.ownChanged = q.ownChanged, false
		b.answers, q.answers = q.answers, nil
	}
	hasTopology = q.topoFull || len(q.topo.names) > 0 || len(q.relay.names) > 0 || len(q.announce.names) > 0 || q.ownChanged || len(q.answers) > 0
	hasLater = len(q.announceLater.names) > 0
	b.pull, q.pull = q.pull, nil
	b.syncAnswer, q.syncAnswer = q.syncAnswer, nil
	b.digest, q.digest = q.digest, false
	b.sync, q.sync = q.sync, false
	b.beat, q.beat = q.beat, false
	b.keys = b.keys[:0]
	b.gossip = b.gossip[:0]
	for _, k := range q.order {
		b.keys = append(b.keys, k)
		b.gossip = append(b.gossip, q.gossip[k])
		delete(q.gossip, k)
	}
	q.order = q.order[:0]
	if len(q.gossip) == 0 && cap(q.order) > smallBatch {
		q.gossip, q.order = nil, nil
	}
	q.surrogateBytes = 0
	if q.spaceWait != nil {
		close(q.spaceWait)
		q.spaceWait = nil
	}
	q.mu.Unlock()
	return hasTopology, hasLater
}

// close drops everything queued and wakes any waiting sender.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.buf = nil
	q.topo = nameSet{}
	q.announce, q.announceLater, q.relay = nameSet{}, nameSet{}, nameSet{}
	q.answers, q.syncAnswer = nil, nil
	q.gossip = nil
	q.order = nil
	if q.spaceWait != nil {
		close(q.spaceWait)
		q.spaceWait = nil
	}
	q.mu.Unlock()
}
