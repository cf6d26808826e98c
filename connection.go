package mesh

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LocalConnection is a connection of this router to a neighbour.
//
// Each connection has two goroutines: one reads and dispatches frames (it
// also runs the handshake), the other writes what the send queue holds,
// batching frames into few system calls. Both end when the connection shuts
// down, which happens once, for the first error either meets or when the
// router stops.
type LocalConnection struct {
	router *Router
	conn   net.Conn
	br     *bufio.Reader
	// readTimeout bounds the arrival of each frame once the handshake is
	// over; readArmed is when its deadline was last set (see
	// armReadDeadline), and readerSince when the reading goroutine
	// started (see readLoop). Only the reading goroutine uses them.
	readTimeout time.Duration
	readArmed   time.Time
	readerSince time.Time
	// readers counts the reading goroutines the connection has had.
	readers  atomic.Uint32
	outbound bool
	// remoteTCPAddr is what our topology entry says about this connection:
	// the dialled address when outbound, the remote's address (with its
	// listening port when it told us) when inbound.
	remoteTCPAddr string
	target        *target

	// Set by the handshake, then read-only.
	remoteName   PeerName
	remoteUID    PeerUID
	remoteNick   string
	remoteSumm   peerSummary
	ourConnID    uint64
	remoteConnID uint64
	version      byte
	encrypted    bool
	// digests is set when the remote is a mesh peer that understands
	// the topology extensions: digests, sync requests, announcements,
	// pulls and deltas (digest.go, topology_pull.go, topology_delta.go).
	digests bool
	// remoteNames is the hash of the peers the remote knew at the
	// handshake (see topology.namesHash), if it sent one.
	remoteNames    uint64
	hasRemoteNames bool
	// lastOwn is the version of our entry last sent on this connection,
	// lastTopo when topology was last sent (only the writer uses them).
	lastOwn  *Peer
	lastTopo time.Time
	// lastLater is when announcements of newer versions were last sent
	// (see sendQueue.announceLater); only the writer uses it.
	lastLater time.Time
	reader    *frameReader
	writer    *frameWriter
	// first is a frame the handshake read (see handshakeResult.first).
	first []byte
	// heardBit tells this neighbour apart in the topology's heardSet;
	// 0 when it has none. Guarded by the topology's lock.
	heardBit uint64
	// rs is the reader's scratch space.
	rs readScratch
	// overlayConn is set by the handshake, under errMu: shutdown, which
	// Stop may call meanwhile, stops it.
	overlayConn OverlayConnection
	started     time.Time
	// handshakeDone, if set, is called when the handshake ends (it frees
	// the connection's place among the handshakes in progress).
	handshakeDone func()

	established atomic.Bool
	q           *sendQueue
	done        chan struct{}
	closeOnce   sync.Once
	errMu       sync.Mutex
	err         error
	closed      bool // guarded by errMu
}

var _ Connection = (*LocalConnection)(nil)

// Remote returns the peer at the other end.
func (c *LocalConnection) Remote() *Peer {
	if p := c.router.Peers.current(c.remoteName); p != nil {
		return p
	}
	s := c.remoteSumm
	return &Peer{Name: s.Name, NickName: s.NickName, UID: s.UID, Version: s.Version, ShortID: s.ShortID, HasShortID: s.HasShortID}
}

// RemoteTCPAddr returns the address of the other end as reported in the
// topology.
func (c *LocalConnection) RemoteTCPAddr() string { return c.remoteTCPAddr }

// Outbound reports whether this router dialled the connection.
func (c *LocalConnection) Outbound() bool { return c.outbound }

// Established reports whether the connection is fully up.
func (c *LocalConnection) Established() bool { return c.established.Load() }

// ProtocolVersion returns the protocol version in use.
func (c *LocalConnection) ProtocolVersion() byte { return c.version }

// Encrypted reports whether the connection is encrypted.
func (c *LocalConnection) Encrypted() bool { return c.encrypted }

func (c *LocalConnection) String() string {
	if c.remoteName != UnknownPeerName {
		return fmt.Sprintf("->[%s|%s(%s)]", c.conn.RemoteAddr(), c.remoteName, c.remoteNick)
	}
	return fmt.Sprintf("->[%s]", c.conn.RemoteAddr())
}

func (c *LocalConnection) summary() connectionSummary {
	return connectionSummary{
		Name:          c.remoteName,
		RemoteTCPAddr: c.remoteTCPAddr,
		Outbound:      c.outbound,
		Established:   c.established.Load(),
	}
}

func (c *LocalConnection) xorConnID() uint64 { return c.ourConnID ^ c.remoteConnID }

// shutdown ends the connection (once) and records why.
func (c *LocalConnection) shutdown(err error) {
	c.closeOnce.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.closed = true
		oc := c.overlayConn
		c.errMu.Unlock()
		close(c.done)
		c.q.close()
		abortConn(c.conn)
		if oc != nil {
			oc.Stop()
		}
	})
}

// armReadDeadline gives the next frame a deadline: it must arrive whole
// within the read timeout (twice the heartbeat interval), so that a peer
// that sends nothing, or trickles a frame a byte at a time, is dropped.
// Setting a deadline costs a little, so while frames keep coming it is
// moved at most four times per timeout: a frame then has at least three
// quarters of the timeout to arrive.
func (c *LocalConnection) armReadDeadline(now time.Time) {
	if now.Sub(c.readArmed) < c.readTimeout/4 {
		return
	}
	c.readArmed = now
	if err := c.conn.SetReadDeadline(now.Add(c.readTimeout)); err != nil {
		c.shutdown(err)
	}
}

// run is the connection's first goroutine: handshake and registration
// with the router. Once registered, the read loop goes on in a goroutine
// of its own, started just before run returns (see Router.startReader).
// It reports whether it did.
func (c *LocalConnection) run() bool {
	r := c.router
	err := c.handshake()
	if c.br != nil {
		putHandshakeReader(c.br)
		c.br = nil
	}
	r.countFailure(err)
	if c.handshakeDone != nil {
		c.handshakeDone()
	}
	if err == nil {
		// From now on, what is queued starts a writer.
		c.q.setStartWriter(c.startWriter)
		err = r.addConnection(c)
		r.countRegistration(err)
		if err == nil {
			return true
		}
	}
	c.ended(err)
	return false
}

// readerEnded is called by the reading goroutine when readLoop returned
// err: it starts the next reading goroutine when err is errFreshReader,
// and otherwise winds the connection up.
func (c *LocalConnection) readerEnded(err error) {
	r := c.router
	if err == errFreshReader {
		r.startReader(c)
		return
	}
	c.reader.close()
	r.removeConnection(c)
	// What the remote was heard to have is forgotten, and its bit is
	// free for another connection (see heardSet).
	r.Peers.mu.Lock()
	r.Peers.topo.heard.release(c.heardBit)
	c.heardBit = 0
	r.Peers.mu.Unlock()
	r.metrics.dropped.Add(1)
	c.ended(err)
	r.forget(c)
}

// ended shuts the connection down and reports how it ended.
func (c *LocalConnection) ended(err error) {
	r := c.router
	c.shutdown(err)
	if c.target != nil {
		r.ConnectionMaker.connectionEnded(c, err)
	}
	if err != nil && !errors.Is(err, ErrStopped) {
		r.logConnectionEnd(c, err)
	}
}

func (c *LocalConnection) handshake() error {
	r := c.router
	id, err := randomUint64()
	if err != nil {
		return err
	}
	c.ourConnID = id
	ours := peerFeatures{
		Name:       r.Ourself.Name,
		NickName:   r.Ourself.NickName,
		UID:        r.Ourself.UID,
		ConnID:     c.ourConnID,
		ShortID:    r.shortID,
		HasShortID: true,
		Trusted:    r.trusts(c.conn.RemoteAddr()),
	}
	extra := make(map[string]string)
	r.Overlay.AddFeaturesTo(extra)
	if port := r.listenPort(); port > 0 {
		extra[featureListenPort] = strconv.Itoa(port)
	}
	extra[featureTopologyDigest] = strconv.Itoa(ourDigestLevel)
	r.Peers.mu.RLock()
	extra[featureTopologyNames] = strconv.FormatUint(r.Peers.topo.namesHash, 16)
	r.Peers.mu.RUnlock()
	res, err := doHandshake(c.conn, c.br, &handshakeConfig{
		Outbound:     c.outbound,
		Password:     r.Password,
		MinVersion:   r.ProtocolMinVersion,
		MaxVersion:   r.maxVersion,
		Features:     ours.featuresMap(extra),
		MaxFrameSize: r.maxFrameSize,
		Timeout:      r.handshakeTimeout,
	})
	if err != nil {
		return err
	}
	remote, err := parseFeatures(res.Features)
	if err != nil {
		return err
	}
	c.remoteName, c.remoteUID, c.remoteNick = remote.Name, remote.UID, remote.NickName
	c.remoteConnID = remote.ConnID
	c.remoteSumm = peerSummary{Name: remote.Name, NickName: remote.NickName, UID: remote.UID, ShortID: remote.ShortID, HasShortID: remote.HasShortID}
	c.version, c.encrypted = res.Version, res.Encrypted
	if level, err := strconv.Atoi(res.Features[featureTopologyDigest]); err == nil {
		c.digests = level >= ourDigestLevel
	}
	if h, err := strconv.ParseUint(res.Features[featureTopologyNames], 16, 64); err == nil {
		c.remoteNames, c.hasRemoteNames = h, true
	}
	c.reader, c.writer, c.first = res.reader, res.writer, res.first
	// From here on the connection reads through a buffer it holds only
	// while frames arrive, not the handshake's.
	c.reader.useStream(c.conn)
	putHandshakeReader(c.br)
	c.br = nil
	if remote.Name == r.Ourself.Name {
		if remote.UID == r.Ourself.UID {
			return ErrConnectToSelf
		}
		return fmt.Errorf("%w: local %q and remote %q", ErrNameCollision, r.Ourself.String(), fmt.Sprintf("%s(%s)", remote.Name, remote.NickName))
	}
	if !c.outbound {
		c.remoteTCPAddr = c.conn.RemoteAddr().String()
		if p, ok := res.Features[featureListenPort]; ok {
			if port, err := strconv.ParseUint(p, 10, 16); err == nil && port > 0 {
				if host, _, err := net.SplitHostPort(c.remoteTCPAddr); err == nil {
					c.remoteTCPAddr = net.JoinHostPort(host, strconv.FormatUint(port, 10))
				}
			}
		}
	}
	oc, err := r.Overlay.PrepareConnection(OverlayConnectionParams{
		RemotePeer: c.Remote(),
		Outbound:   c.outbound,
		ConnUID:    c.xorConnID(),
		Features:   res.Features,
		SendControlMessage: func(tag byte, msg []byte) error {
			return c.sendRaw(append([]byte{tag}, msg...), false)
		},
	})
	if err != nil {
		return err
	}
	c.errMu.Lock()
	closed := c.closed
	if !closed {
		c.overlayConn = oc
	}
	c.errMu.Unlock()
	if closed {
		oc.Stop()
		if err := c.closeErr(); err != nil {
			return err
		}
		return errConnClosed
	}
	c.started = time.Now()
	return nil
}

// featureListenPort is an extra feature: the port we listen on, so that
// peers accepting our connections can report an address others can dial.
const featureListenPort = "ListenPort"

// readerRenewal is how long a connection's reading goroutine runs at least
// before it hands over to a new one (see readLoop).
const readerRenewal = 2 * time.Second

// errFreshReader ends a read loop that hands over to a new goroutine.
var errFreshReader = errors.New("mesh: reading goes on in a new goroutine")

// readLoop reads and handles frames until the connection ends, or until it
// returns errFreshReader to have the reading go on in a new goroutine.
//
// Handling a frame (decrypting it, merging topology) grows the reading
// goroutine's stack, and the runtime never shrinks the stack of a
// goroutine parked in a read below twice the smallest size: the read's
// own frames are too deep a part of it. So when the connection falls
// quiet, a goroutine that has run for readerRenewal hands over to a new
// one, which waits on the smallest stack. Over thousands of mostly quiet
// connections that halves the memory of their stacks, for the cost of
// one goroutine start per connection every few seconds at most.
func (c *LocalConnection) readLoop() error {
	if c.first != nil {
		first := c.first
		c.first = nil
		if err := c.dispatch(first); err != nil {
			return err
		}
	}
	for {
		now := time.Now()
		c.armReadDeadline(now)
		if c.reader.drained() && now.Sub(c.readerSince) >= readerRenewal {
			return errFreshReader
		}
		// Wait for the next bytes here, near the bottom of the stack: a
		// quiet connection's goroutine then uses little of its stack, and
		// the runtime can shrink it.
		c.reader.wait()
		body, err := c.reader.readFrame()
		if err != nil {
			select {
			case <-c.done:
				return c.closeErr()
			default:
			}
			return err
		}
		if err := c.dispatch(body); err != nil {
			return err
		}
	}
}

// dispatch handles one frame received.
func (c *LocalConnection) dispatch(body []byte) error {
	if len(body) == 0 {
		return nil
	}
	r := c.router
	r.metrics.frameReceived(body)
	switch tag := body[0]; tag {
	case tagHeartbeat:
	case tagGossip, tagGossipUnicast, tagGossipBroadcast:
		return r.handleGossip(c, body)
	case 1, 2, 3, tagOverlayControl:
		if c.overlayConn != nil {
			msg := append([]byte(nil), body[1:]...)
			c.overlayConn.ControlMessage(tag, msg)
		}
	default:
		r.logOnce("tag", fmt.Sprintf("%s: ignoring unknown protocol tag: %d", c, tag), c)
	}
	return nil
}

func (c *LocalConnection) closeErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// sendRaw queues a complete frame body. With wait it blocks while the
// queue is full, until there is room or the connection ends.
func (c *LocalConnection) sendRaw(body []byte, wait bool) error {
	return c.enqueue(nil, body, wait)
}

// sendMessage queues a gossip message, encoding it straight into the queue.
func (c *LocalConnection) sendMessage(m *gossipMessage, wait bool) error {
	return c.enqueue(m, nil, wait)
}

// enqueue appends m, encoded, or else body to the send queue.
func (c *LocalConnection) enqueue(m *gossipMessage, body []byte, wait bool) error {
	size := len(body)
	if m != nil {
		size = 1 + len(m.Channel) + len(m.Payload) + 48
	}
	for {
		q := c.q
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errConnClosed
		}
		if off, ok := q.reserve(size); ok {
			if m != nil {
				q.buf = appendGossipMessage(q.buf, m)
			} else {
				q.buf = append(q.buf, body...)
			}
			q.finish(off)
			start := q.needWriterLocked()
			q.mu.Unlock()
			q.wakeWriter(start)
			return nil
		}
		if !c.waitForSpace(q, wait) {
			return errQueueFull
		}
	}
}

// waitForSpace is called with q.mu held and releases it. It reports
// whether to try again.
func (c *LocalConnection) waitForSpace(q *sendQueue, wait bool) bool {
	if !wait {
		q.dropped++
		c.router.metrics.sendQueueFull.Add(1)
		q.mu.Unlock()
		return false
	}
	if q.spaceWait == nil {
		q.spaceWait = make(chan struct{})
	}
	ch := q.spaceWait
	q.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-c.done:
		return true // the next attempt sees the queue closed
	}
}

// writerLinger is how long a connection's writer waits for more to send
// before it ends; what is queued next starts a new one. An idle
// connection thus costs one goroutine, its reader, most of the time: its
// heartbeat comes every heartbeat interval (see Router.heartbeats).
const writerLinger = time.Second

// startWriter starts a writer goroutine; the send queue calls it when
// something is queued and no writer runs (see sendQueue.signal).
func (c *LocalConnection) startWriter() {
	r := c.router
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.writeLoop()
	}()
}

// writeLoop sends what is queued, until nothing has been queued for
// writerLinger or the connection ends. Topology is sent at most once per
// topology interval, and announcements of newer versions of entries at
// most once per announce delay, so bursts of changes are merged into one
// message per neighbour.
func (c *LocalConnection) writeLoop() {
	topoTimer := time.NewTimer(time.Hour)
	topoTimer.Stop()
	defer topoTimer.Stop()
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	var (
		batch      sendBatch
		enc        topoEncoder
		timerArmed bool
		timerAt    time.Time // when the armed timer fires
	)
	for {
		now := time.Now()
		interval := c.router.topologyInterval
		laterDelay := c.router.announceDelay()
		withTopo := now.Sub(c.lastTopo) >= interval
		withLater := withTopo && now.Sub(c.lastLater) >= laterDelay
		stillTopo, stillLater := c.q.take(&batch, withTopo, withLater)
		err := c.sendBatch(&batch, &enc, now)
		if batch.later {
			c.lastLater = now
		}
		// What is still waiting goes when its interval is up: the timer
		// is armed for the earliest, or re-armed if it was set later.
		var due time.Time
		if stillTopo {
			due = c.lastTopo.Add(interval)
		}
		if stillLater {
			at := c.lastLater.Add(laterDelay)
			if t := c.lastTopo.Add(interval); t.After(at) {
				at = t
			}
			if due.IsZero() || at.Before(due) {
				due = at
			}
		}
		if !due.IsZero() && (!timerArmed || due.Before(timerAt)) {
			topoTimer.Reset(max(due.Sub(now), 0))
			timerArmed, timerAt = true, due
		}
		idle := !stillTopo && !stillLater && len(c.q.wake) == 0
		batch.release(idle)
		enc.release(idle)
		if err != nil {
			c.shutdown(err)
			return
		}
		linger.Reset(writerLinger)
		for waiting := true; waiting; {
			select {
			case <-c.done:
				return
			case <-c.q.wake:
				waiting = false
			case <-topoTimer.C:
				timerArmed = false
				waiting = false
			case <-linger.C:
				if !timerArmed && c.q.stopWriterIfIdle() {
					return
				}
				linger.Reset(writerLinger)
			}
		}
	}
}

// sendBatch encodes and writes what the writer took from the queue.
func (c *LocalConnection) sendBatch(batch *sendBatch, enc *topoEncoder, now time.Time) error {
	r := c.router
	out := getBuffer()
	scratch := getBuffer()
	defer func() {
		putBuffer(out)
		putBuffer(scratch)
		putBuffer(batch.buf)
		batch.buf = nil
	}()
	var err error
	switch {
	case batch.sync:
		// A sync request gets the remote's digest back: no need to send
		// ours as well.
		out, scratch, err = c.appendDigestFrames(out, scratch, syncChannel, enc.digest(r.Peers))
	case batch.digest:
		out, scratch, err = c.appendDigestFrames(out, scratch, digestChannel, enc.digest(r.Peers))
	case len(batch.syncAnswer) > 0:
		// A whole digest, or a sync request, would say all this answer
		// does: it is sent only alone.
		out, scratch, err = c.appendDigestFrames(out, scratch, digestChannel, enc.digestRecords(batch.syncAnswer))
	}
	if err == nil && len(batch.answers) > 0 {
		var whole []PeerName
		whole, err = enc.answers(r.Peers, batch.answers, func(delta []byte) error {
			m := gossipMessage{Tag: tagGossip, Channel: deltaChannel, Src: r.Ourself.Name, Payload: delta}
			scratch = appendGossipMessage(scratch[:0], &m)
			var ferr error
			out, ferr = c.appendFrame(out, scratch)
			return ferr
		})
		if len(whole) > 0 {
			batch.topo = append(batch.topo, whole...)
			slices.Sort(batch.topo)
			batch.topo = slices.Compact(batch.topo)
		}
	}
	if err == nil && (batch.topoFull || len(batch.topo) > 0 || len(batch.relay) > 0 || batch.ownChanged) {
		c.lastTopo = now
		var names []PeerName
		if !batch.topoFull {
			names = batch.topo
			if len(batch.relay) > 0 {
				n := len(names)
				names = appendUnheard(names, r.Peers, batch.relay, c)
				if n > 0 && len(names) > n {
					slices.Sort(names)
					names = slices.Compact(names)
				}
			}
		}
		// Our own entry goes whole when asked for (in names, or the full
		// topology), else as a delta from the version this connection
		// last carried, if the remote takes deltas.
		wholeOwn := batch.topoFull || slices.Contains(names, r.Ourself.Name)
		var own *Peer
		if wholeOwn || batch.ownChanged {
			own = r.Peers.current(r.Ourself.Name)
		}
		if base := c.lastOwn; !wholeOwn && own != nil {
			if c.digests && base != nil && base.UID == own.UID && base.Version < own.Version {
				d := diffEntries(base, own)
				payload := appendDelta(nil, &d)
				m := gossipMessage{Tag: tagGossip, Channel: deltaChannel, Src: r.Ourself.Name, Payload: payload}
				scratch = appendGossipMessage(scratch[:0], &m)
				out, err = c.appendFrame(out, scratch)
			} else if base == nil || base.UID != own.UID || base.Version < own.Version {
				names = append(names, r.Ourself.Name)
			}
		}
		if own != nil {
			c.lastOwn = own
		}
		var msgs [][]byte
		if err == nil && (batch.topoFull || len(names) > 0) {
			msgs = enc.topology(r.Peers, names)
		}
		for _, msg := range msgs {
			m := gossipMessage{Tag: tagGossip, Channel: topologyChannel, Src: r.Ourself.Name, Payload: msg}
			scratch = appendGossipMessage(scratch[:0], &m)
			if out, err = c.appendFrame(out, scratch); err != nil {
				break
			}
		}
	}
	if err == nil && len(batch.announce) > 0 {
		c.lastTopo = now
		out, scratch, err = c.appendDigestFrames(out, scratch, announceChannel, enc.announce(r.Peers, batch.announce, c))
	}
	if err == nil && len(batch.pull) > 0 {
		out, scratch, err = c.appendDigestFrames(out, scratch, pullChannel, enc.digestRecords(batch.pull))
	}
	for buf := batch.buf; err == nil && len(buf) >= 4; {
		n := binary.BigEndian.Uint32(buf)
		body := buf[4 : 4+n]
		buf = buf[4+n:]
		out, err = c.appendFrame(out, body)
	}
	for i := 0; err == nil && i < len(batch.keys); i++ {
		k := batch.keys[i]
		for _, msg := range batch.gossip[i].Encode() {
			m := gossipMessage{Tag: k.tag, Channel: k.channel, Src: k.src, Payload: msg}
			scratch = appendGossipMessage(scratch[:0], &m)
			if out, err = c.appendFrame(out, scratch); err != nil {
				break
			}
		}
		batch.gossip[i] = nil
	}
	if err == nil && batch.beat {
		out, err = c.appendFrame(out, []byte{tagHeartbeat})
	}
	if err == nil && len(out) > 0 {
		err = c.write(out)
	}
	return err
}

// appendDigestFrames adds one frame per message of digest records on
// channel.
func (c *LocalConnection) appendDigestFrames(out, scratch []byte, channel string, msgs [][]byte) ([]byte, []byte, error) {
	var err error
	for _, msg := range msgs {
		m := gossipMessage{Tag: tagGossip, Channel: channel, Src: c.router.Ourself.Name, Payload: msg}
		scratch = appendGossipMessage(scratch[:0], &m)
		if out, err = c.appendFrame(out, scratch); err != nil {
			break
		}
	}
	return out, scratch, err
}

// write sends out with a deadline, so that a peer that stops reading is
// dropped rather than blocking the writer for ever.
func (c *LocalConnection) write(out []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.router.writeTimeout)); err != nil {
		return err
	}
	_, err := c.conn.Write(out)
	return err
}

// writeChunk is how much the writer gathers before a write system call.
const writeChunk = 256 << 10

// appendFrame adds one frame to out, and writes out once it holds
// writeChunk bytes: a batch as large as a channel's whole state, sent down
// a new connection, goes out as it is encoded, each write with a deadline
// of its own, rather than after all of it. A message too large for a
// frame is dropped and logged; the connection goes on.
func (c *LocalConnection) appendFrame(out, body []byte) ([]byte, error) {
	if len(body) <= c.writer.maxFrame {
		// Grow out through the pool: a batch of topology can be large.
		out = bufferPool.grow(out, len(body)+maxFrameOverhead)
	}
	res, err := c.writer.appendFrame(out, body)
	c.router.metrics.frameSent(body, err)
	if errors.Is(err, ErrFrameTooLarge) {
		c.router.logOnce("big", fmt.Sprintf("%s: dropping message: %v", c, err), c, err)
		return out, nil
	}
	if err == nil && len(res) >= writeChunk {
		err = c.write(res)
		res = res[:0]
	}
	return res, err
}
