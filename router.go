package mesh

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config holds the settings of a Router. The zero value of every field
// added since weave mesh selects a sensible default.
type Config struct {
	// Host is the address to listen on; empty means every interface.
	Host string
	// Port is the TCP port to listen on; 0 picks a free port (see
	// Router.ListenAddr). Use mesh.Port for the default 6783.
	Port int
	// Password enables encryption of every connection when non-nil. All
	// peers of a mesh must use the same password. An empty but non-nil
	// password still means "encrypted".
	Password []byte
	// ConnLimit bounds the connections this router makes: it dials no
	// more once it has this many. It accepts connections from others up to
	// four times as many, so that peers that know only this one can join.
	// 0 means DefaultConnLimit.
	ConnLimit int
	// ProtocolMinVersion is the oldest protocol version accepted (1 or 2);
	// 0 means ProtocolMinVersion.
	ProtocolMinVersion byte
	// PeerDiscovery makes the router connect to the peers it learns of
	// through the topology, until it has DiscoveryDegree connections.
	// Beyond two connections it dials only once it has stopped learning
	// new peers for a moment (up to a second in a large mesh, and never
	// more than 30 s in a row), so that a mesh forming all at once learns
	// who is in it before every connection made adds to what every peer
	// must learn.
	PeerDiscovery bool
	// DiscoveryDegree is how many connections discovery aims for: the
	// router dials discovered peers while it has fewer (and never more
	// than ConnLimit). A few random connections per peer keep every peer
	// within a few hops of every other, at a fraction of the cost of a
	// full mesh. 0 means DefaultDiscoveryDegree; set it to ConnLimit to
	// connect to every discovered peer up to the limit, as weave mesh did.
	DiscoveryDegree int
	// TrustedSubnets lists the networks whose peers are told they are
	// trusted (a feature used by overlays).
	TrustedSubnets []*net.IPNet
	// GossipInterval is how often each channel's complete state is
	// gossiped; nil means DefaultGossipInterval.
	GossipInterval *time.Duration

	// HeartbeatInterval is how often an idle connection sends a heartbeat;
	// a connection that receives nothing for twice as long is closed.
	// 0 means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// HandshakeTimeout bounds the connection handshake; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxFrameSize bounds every frame sent or received; 0 means
	// DefaultMaxFrameSize, which is also the largest value allowed.
	MaxFrameSize int
	// SendQueueBytes bounds the messages waiting to be sent on one
	// connection; 0 means DefaultSendQueueBytes. Relayed messages that do
	// not fit are dropped; local unicasts wait for room.
	SendQueueBytes int
	// MaxPeers bounds how many peers the topology holds; 0 means
	// DefaultMaxPeers.
	MaxPeers int
	// Transport dials and listens; nil means TCP.
	Transport Transport
	// Accept bounds the incoming connections that get a handshake: their
	// rate, and the handshakes in progress overall and per remote IP
	// address. Connections over a limit are reset at once. The zero value
	// selects the defaults (see AcceptLimits).
	Accept AcceptLimits
}

// More defaults.
const (
	// DefaultSendQueueBytes is the default bound of a connection's queue.
	DefaultSendQueueBytes = 1 << 20
	// DefaultMaxPeers is the default bound of the topology.
	DefaultMaxPeers = 100000
	// maxConnectionsPerPeer bounds the connections one peer may report.
	maxConnectionsPerPeer = 10000
	// defaultTopologyInterval is the shortest time between two topology
	// messages on one connection: changes made meanwhile are sent together.
	defaultTopologyInterval = 5 * time.Millisecond
	// routeDelay is how long route recomputation waits for more changes.
	routeDelay = 5 * time.Millisecond
	// routeGapPerPeer is, per known peer, the least time between two
	// recomputations while changes keep coming: large meshes, where
	// changes never stop while they form, recompute less often.
	routeGapPerPeer = 100 * time.Microsecond
	// announceDelayPerPeer is, per known peer, the least time between two
	// announcements of newer versions of entries on one connection (see
	// sendQueue.announceLater); maxAnnounceDelay bounds it. Every version
	// of an entry that spreads costs every peer a merge, and an entry
	// changes a dozen times while its peer makes its connections: in a
	// large mesh in turmoil, a relaying peer announces each entry about
	// once per delay (half a second at a thousand peers) rather than
	// every version. The entries of new peers are sent at once.
	announceDelayPerPeer = 500 * time.Microsecond
	maxAnnounceDelay     = time.Second
	// maxRouteGap bounds the spacing of route passes that their measured
	// cost asks for.
	maxRouteGap = 500 * time.Millisecond
	// readBufferSize is the read buffer of a connection's handshake, and
	// of a connection while frames arrive (see streamReader); larger frames
	// are read past it, into buffers shared through a pool.
	readBufferSize = 4 << 10
	// digestInterval is how often, while the topology changes, a router
	// exchanges digests with a random neighbour; digestIntervalPerPeer
	// spaces them more in large meshes, where a digest is large and every
	// router sends one: 5 s at a thousand peers. An entry asked of a
	// neighbour and not received in time starts an exchange too.
	digestInterval        = time.Second
	digestIntervalPerPeer = 5 * time.Millisecond
	// gcGrace is how long a peer stays unreachable before it is removed:
	// long enough for the update that links a newly learnt peer to arrive.
	// gcGracePerPeer makes it longer in large meshes, up to maxGCGrace: a
	// peer whose connections changed is unreachable in our view until the
	// updates of its new neighbours reach us, which takes seconds in a
	// thousand peers forming at once (10 s at a thousand peers).
	gcGrace        = time.Second
	gcGracePerPeer = 10 * time.Millisecond
	maxGCGrace     = 15 * time.Second
)

// Router is a peer of the mesh: it keeps connections to neighbours,
// gossips the topology, computes routes and carries the messages of the
// gossip channels registered with NewGossip.
type Router struct {
	Config
	// Overlay is the data-plane overlay; NullOverlay when none was given.
	Overlay Overlay
	// Ourself is this peer.
	Ourself *LocalPeer
	// Peers is every peer this router knows.
	Peers *Peers
	// Routes tells the next hop towards each peer.
	Routes *Routes
	// ConnectionMaker dials and redials the peers this router should be
	// connected to.
	ConnectionMaker *ConnectionMaker

	logger            *routerLogger
	shortID           PeerShortID
	transport         Transport
	gossipInterval    time.Duration
	heartbeatInterval time.Duration
	handshakeTimeout  time.Duration
	writeTimeout      time.Duration
	topologyInterval  time.Duration
	maxFrameSize      int
	maxVersion        byte // 0 means ProtocolMaxVersion; tests lower it
	sendQueueBytes    int
	limits            topologyLimits
	acceptGuard       *acceptGuard

	mu sync.RWMutex
	// ownMu serializes the updates of our own entry from our connections,
	// so that the last update made is from the last list of connections;
	// it is taken before Peers.mu, and never with mu held.
	ownMu    sync.Mutex
	channels map[string]*gossipChannel
	conns    map[PeerName]*LocalConnection
	connList []*LocalConnection            // conns, sorted by name (see connsChanged)
	pending  map[*LocalConnection]struct{} // every connection not yet ended
	started  bool
	stopped  bool
	listener net.Listener

	terminations atomic.Int64
	metrics      routerMetrics
	events       eventHub

	recent *recentSet
	// pulls are the topology entries asked of neighbours; guarded by
	// Peers.mu.
	pulls pullsInFlight
	// entryHeldFunc is entryHeld, made once (see handleTopology).
	entryHeldFunc func(peerSummary) bool
	rndMu         sync.Mutex
	rnd           *mrand.Rand
	topoChanged   chan struct{}
	stop          chan struct{}
	ctx           context.Context
	cancel        context.CancelFunc
	stopOnce      sync.Once
	wg            sync.WaitGroup
}

// NewRouter creates a router named name. It checks the configuration and
// returns an error for anything invalid. A nil overlay means NullOverlay;
// a nil logger means no logging.
func NewRouter(config Config, name PeerName, nickName string, overlay Overlay, logger Logger) (*Router, error) {
	if err := validateConfig(&config, name, nickName); err != nil {
		return nil, err
	}
	if overlay == nil {
		overlay = NullOverlay{}
	}
	uid, err := randomUint64()
	if err != nil {
		return nil, err
	}
	for uid == 0 {
		if uid, err = randomUint64(); err != nil {
			return nil, err
		}
	}
	seed, err := randomUint64()
	if err != nil {
		return nil, err
	}
	r := &Router{
		Config:            config,
		Overlay:           overlay,
		logger:            newRouterLogger(logger),
		shortID:           PeerShortID(seed & 0xfff),
		transport:         config.Transport,
		gossipInterval:    DefaultGossipInterval,
		heartbeatInterval: orDuration(config.HeartbeatInterval, DefaultHeartbeatInterval),
		handshakeTimeout:  orDuration(config.HandshakeTimeout, DefaultHandshakeTimeout),
		topologyInterval:  defaultTopologyInterval,
		maxFrameSize:      orInt(config.MaxFrameSize, DefaultMaxFrameSize),
		sendQueueBytes:    orInt(config.SendQueueBytes, DefaultSendQueueBytes),
		channels:          make(map[string]*gossipChannel),
		conns:             make(map[PeerName]*LocalConnection),
		pending:           make(map[*LocalConnection]struct{}),
		recent:            newRecentSet(),
		acceptGuard:       newAcceptGuard(config.Accept),
		rnd:               mrand.New(mrand.NewPCG(seed, uid)),
		topoChanged:       make(chan struct{}, 1),
		stop:              make(chan struct{}),
	}
	if r.ConnLimit == 0 {
		r.ConnLimit = DefaultConnLimit
	}
	if r.DiscoveryDegree == 0 {
		r.DiscoveryDegree = DefaultDiscoveryDegree
	}
	if r.ProtocolMinVersion == 0 {
		r.ProtocolMinVersion = ProtocolMinVersion
	}
	if config.GossipInterval != nil {
		r.gossipInterval = *config.GossipInterval
	}
	if r.transport == nil {
		r.transport = &TCPTransport{}
	}
	r.writeTimeout = 2 * r.heartbeatInterval
	r.limits = topologyLimits{MaxPeers: orInt(config.MaxPeers, DefaultMaxPeers), MaxConnections: maxConnectionsPerPeer}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	ourself := &Peer{Name: name, NickName: nickName, UID: PeerUID(uid), ShortID: r.shortID, HasShortID: true}
	r.Ourself = &LocalPeer{Name: name, NickName: nickName, UID: PeerUID(uid), router: r}
	r.Peers = newPeers(ourself, r.limits)
	r.Routes = newRoutes(r.Peers)
	r.entryHeldFunc = r.entryHeld
	r.ConnectionMaker = newConnectionMaker(r)
	r.warnWeakPassword()
	return r, nil
}

func validateConfig(c *Config, name PeerName, nickName string) error {
	switch {
	case name == UnknownPeerName || name > maxPeerName:
		return fmt.Errorf("mesh: invalid peer name %d", uint64(name))
	case len(nickName) > maxNickNameLen:
		return fmt.Errorf("mesh: nickname longer than %d bytes", maxNickNameLen)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("mesh: invalid port %d", c.Port)
	case c.ConnLimit < 0:
		return fmt.Errorf("mesh: invalid connection limit %d", c.ConnLimit)
	case c.DiscoveryDegree < 0:
		return fmt.Errorf("mesh: invalid discovery degree %d", c.DiscoveryDegree)
	case c.ProtocolMinVersion != 0 && (c.ProtocolMinVersion < ProtocolMinVersion || c.ProtocolMinVersion > ProtocolMaxVersion):
		return fmt.Errorf("mesh: protocol minimum version %d is outside [%d,%d]", c.ProtocolMinVersion, ProtocolMinVersion, ProtocolMaxVersion)
	case c.GossipInterval != nil && *c.GossipInterval <= 0:
		return fmt.Errorf("mesh: gossip interval must be positive, not %v", *c.GossipInterval)
	case c.HeartbeatInterval < 0 || c.HandshakeTimeout < 0:
		return errors.New("mesh: negative heartbeat interval or handshake timeout")
	case c.MaxFrameSize < 0 || c.MaxFrameSize > DefaultMaxFrameSize:
		return fmt.Errorf("mesh: max frame size must be within [0,%d]", DefaultMaxFrameSize)
	case c.MaxFrameSize != 0 && c.MaxFrameSize < 4096:
		return errors.New("mesh: max frame size below 4096 bytes")
	case c.SendQueueBytes < 0 || c.MaxPeers < 0:
		return errors.New("mesh: negative send queue or peer limit")
	}
	if err := c.Accept.validate(); err != nil {
		return err
	}
	for _, n := range c.TrustedSubnets {
		if n == nil {
			return errors.New("mesh: nil trusted subnet")
		}
	}
	return nil
}

func orDuration(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func randomUint64() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("mesh: reading random bytes: %w", err)
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

// NewGossip registers a gossip channel: messages on it are passed to
// gossiper, and the returned Gossip sends on it. Each name may be
// registered once; "topology" is reserved.
func (router *Router) NewGossip(channelName string, gossiper Gossiper) (Gossip, error) {
	switch {
	case gossiper == nil:
		return nil, errors.New("mesh: nil gossiper")
	case channelName == "" || len(channelName) > maxChannelNameLen:
		return nil, fmt.Errorf("mesh: invalid channel name %q", channelName)
	case channelName == topologyChannel:
		return nil, fmt.Errorf("mesh: channel name %q is reserved", channelName)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if router.stopped {
		return nil, ErrStopped
	}
	if _, ok := router.channels[channelName]; ok {
		return nil, fmt.Errorf("mesh: channel %q is already registered", channelName)
	}
	ch := newGossipChannel(channelName, router, gossiper)
	ch.metrics = router.metrics.addChannel(channelName)
	router.channels[channelName] = ch
	if router.started {
		router.startChannel(ch)
	}
	return &channelSender{router: router, channel: channelName}, nil
}

func (router *Router) startChannel(ch *gossipChannel) {
	router.wg.Add(1)
	go func() {
		defer router.wg.Done()
		ch.run(router.stop)
	}()
}

func (router *Router) channel(name string) *gossipChannel {
	router.mu.RLock()
	defer router.mu.RUnlock()
	return router.channels[name]
}

// Start listens for connections and starts the router's goroutines. It
// returns an error when the address cannot be listened on, or when the
// router was already started or stopped.
func (router *Router) Start() error {
	router.mu.Lock()
	defer router.mu.Unlock()
	if router.stopped {
		return ErrStopped
	}
	if router.started {
		return errors.New("mesh: router already started")
	}
	ln, err := router.transport.Listen(net.JoinHostPort(router.Host, strconv.Itoa(router.Port)))
	if err != nil {
		return fmt.Errorf("mesh: listening: %w", err)
	}
	router.listener = ln
	router.started = true
	for _, ch := range router.channels {
		router.startChannel(ch)
	}
	router.wg.Add(4)
	go func() {
		defer router.wg.Done()
		router.acceptLoop(ln)
	}()
	go func() {
		defer router.wg.Done()
		router.heartbeatLoop()
	}()
	go func() {
		defer router.wg.Done()
		router.topologyLoop()
	}()
	go func() {
		defer router.wg.Done()
		router.ConnectionMaker.run(router.stop)
	}()
	return nil
}

// ListenAddr returns the address the router listens on, with the real port
// when Config.Port was 0; nil before Start.
func (router *Router) ListenAddr() net.Addr {
	router.mu.RLock()
	defer router.mu.RUnlock()
	if router.listener == nil {
		return nil
	}
	return router.listener.Addr()
}

func (router *Router) listenPort() int {
	if a, ok := router.ListenAddr().(*net.TCPAddr); ok {
		return a.Port
	}
	if a := router.ListenAddr(); a != nil {
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			port, _ := strconv.Atoi(p)
			return port
		}
	}
	return 0
}

// Stop closes the listener and every connection, and returns once every
// goroutine the router started has ended. It may be called more than once.
func (router *Router) Stop() error {
	router.stopOnce.Do(func() {
		router.mu.Lock()
		router.stopped = true
		ln := router.listener
		pending := make([]*LocalConnection, 0, len(router.pending))
		for c := range router.pending {
			pending = append(pending, c)
		}
		router.mu.Unlock()
		close(router.stop)
		router.cancel()
		if ln != nil {
			ln.Close()
		}
		for _, c := range pending {
			c.shutdown(ErrStopped)
		}
		router.wg.Wait()
		router.events.close()
		router.Overlay.Stop()
	})
	return nil
}

func (router *Router) acceptLoop(ln net.Listener) {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-router.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			router.logOnce("accept", fmt.Sprintf("accept: %v", err), err)
			select {
			case <-router.stop:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		// Connections over the accept limits are reset here, before
		// they cost a goroutine.
		release, ok := router.admitConnection(conn)
		if !ok {
			continue
		}
		router.logf("->[%s] connection accepted", conn.RemoteAddr())
		router.startConnection(conn, false, "", nil, release)
	}
}

// startConnection runs a new connection on a goroutine of its own.
// handshakeDone, if not nil, is called once the handshake has ended.
func (router *Router) startConnection(conn net.Conn, outbound bool, addr string, t *target, handshakeDone func()) {
	c := router.newConnection(conn, outbound, addr, t)
	if c == nil {
		if handshakeDone != nil {
			handshakeDone()
		}
		return
	}
	c.handshakeDone = handshakeDone
	router.wg.Add(1)
	go func() {
		defer router.wg.Done()
		router.runConnection(c)
	}()
}

func (router *Router) newConnection(conn net.Conn, outbound bool, addr string, t *target) *LocalConnection {
	c := &LocalConnection{
		router:        router,
		conn:          conn,
		br:            getHandshakeReader(conn),
		readTimeout:   2 * router.heartbeatInterval,
		outbound:      outbound,
		remoteTCPAddr: addr,
		target:        t,
		q:             newSendQueue(router.sendQueueBytes),
		done:          make(chan struct{}),
	}
	router.instrumentConnection(c)
	router.mu.Lock()
	defer router.mu.Unlock()
	if router.stopped {
		abortConn(conn)
		return nil
	}
	router.pending[c] = struct{}{}
	return c
}

// runConnection runs c's handshake on the calling goroutine, which must be
// one the router waits for, then its read loop on a new one.
func (router *Router) runConnection(c *LocalConnection) {
	if !c.run() {
		router.forget(c)
		return
	}
	router.startReader(c)
}

// startReader starts c's reading goroutine. The caller must be a goroutine
// the router waits for: Stop cannot have returned.
//
// The reading goroutine is not the one that ran the handshake: the key
// exchange needs a deep stack, which the goroutine would keep for the life
// of the connection. A goroutine of its own starts on the smallest stack,
// and grows only as reading needs (see readLoop).
func (router *Router) startReader(c *LocalConnection) {
	router.wg.Add(1)
	go router.runReader(c)
}

// runReader is a reading goroutine. It, and readLoop under it, keep their
// frames small: a quiet connection's goroutine waits for its next frame
// below them, and the whole chain must fit in the smallest stack.
func (router *Router) runReader(c *LocalConnection) {
	defer router.wg.Done()
	c.readerSince = time.Now()
	c.readers.Add(1)
	c.readerEnded(c.readLoop())
}

func (router *Router) forget(c *LocalConnection) {
	router.mu.Lock()
	delete(router.pending, c)
	router.mu.Unlock()
}

// addConnection registers a connection that completed its handshake.
func (router *Router) addConnection(c *LocalConnection) error {
	router.mu.Lock()
	if router.stopped {
		router.mu.Unlock()
		return ErrStopped
	}
	// Both ends compute the same XOR of the two connection IDs, so they
	// agree on which of two connections between them survives: the lower.
	var replaced *LocalConnection
	if old, ok := router.conns[c.remoteName]; ok {
		nx, ox := c.xorConnID(), old.xorConnID()
		if nx >= ox {
			router.mu.Unlock()
			if nx == ox {
				old.shutdown(ErrDuplicateConnection)
			}
			return fmt.Errorf("%w %s added to %s", ErrDuplicateConnection, c.Remote(), router.Ourself)
		}
		delete(router.conns, c.remoteName)
		replaced = old
	} else if limit := router.connectionCap(c.outbound); len(router.conns) >= limit {
		router.mu.Unlock()
		return fmt.Errorf("%w (limit %d)", ErrConnLimit, limit)
	}
	router.conns[c.remoteName] = c
	router.connsChanged()
	established := overlayEstablished(c.overlayConn)
	c.established.Store(established)
	others := router.otherConnections(c)
	router.mu.Unlock()
	// router.mu is not held while the topology is locked: readers of our
	// connections (every relayed message) need not wait for the
	// topology's writers.
	router.ownMu.Lock()
	summaries := router.ourSummaries()
	router.Peers.mu.Lock()
	_, added := router.Peers.topo.addPeerIfUnknown(c.remoteSumm)
	c.heardBit = router.Peers.topo.heard.acquire()
	router.Peers.topo.setOurConnections(summaries)
	sameNames := c.hasRemoteNames && c.remoteNames == router.Peers.topo.namesHash
	router.Peers.mu.Unlock()
	router.ownMu.Unlock()
	if replaced != nil {
		replaced.shutdown(ErrDuplicateConnection)
	}
	if c.overlayConn != nil {
		c.overlayConn.Confirm()
	}

	if !established && c.overlayConn != nil {
		router.wg.Add(1)
		go func() {
			defer router.wg.Done()
			router.watchOverlay(c)
		}()
	}
	// Both ends send what they know: a digest, from which each pulls what
	// it lacks, or to a weave peer the full topology. Two mesh peers that
	// know the same peers skip it: the versions of their entries converge
	// as every change spreads, and the periodic sync requests find what
	// that misses. While a large mesh forms, most new connections join
	// such peers, and a digest lists every peer.
	switch {
	case !c.digests:
		c.q.pushTopology(nil, true)
	case !sameNames:
		c.q.pushDigest()
	}
	for _, ch := range router.channelList() {
		ch.deliver(inboxNewNeighbour, c.remoteName, nil)
	}
	for _, o := range others {
		o.q.pushOwnChange()
		if added {
			o.q.pushTopology([]PeerName{c.remoteName}, false)
		}
	}
	if c.target != nil {
		router.ConnectionMaker.connected(c.target, c.remoteName)
	}
	router.logf("%s: connection added", c)
	router.topologyChanged()
	return nil
}

func overlayEstablished(oc OverlayConnection) bool {
	if oc == nil {
		return true
	}
	select {
	case <-oc.EstablishedChannel():
		return true
	default:
		return false
	}
}

// watchOverlay waits for the overlay to establish the connection, or to
// fail it.
func (router *Router) watchOverlay(c *LocalConnection) {
	select {
	case <-c.done:
	case err := <-c.overlayConn.ErrorChannel():
		c.shutdown(err)
	case <-c.overlayConn.EstablishedChannel():
		c.established.Store(true)
		router.ourConnectionsChanged(nil)
	}
}

// inboundHeadroom is how many times ConnLimit connections a router
// accepts: the connection maker stops dialling at ConnLimit, but peers that
// know only this one (the hub of a star) must still be able to join.
const inboundHeadroom = 4

// discoveryLimit is the number of connections up to which discovered
// peers are dialled, and beyond which a peer that found us by discovery is
// refused.
func (router *Router) discoveryLimit() int {
	return min(router.ConnLimit, router.DiscoveryDegree)
}

// connectionCap is the most connections we may have when adding one.
func (router *Router) connectionCap(outbound bool) int {
	if outbound {
		return router.ConnLimit
	}
	return inboundHeadroom * router.ConnLimit
}

// removeConnection unregisters a connection that ended.
func (router *Router) removeConnection(c *LocalConnection) {
	router.mu.Lock()
	if router.conns[c.remoteName] != c {
		router.mu.Unlock()
		return
	}
	delete(router.conns, c.remoteName)
	router.connsChanged()
	router.mu.Unlock()
	router.terminations.Add(1)
	router.ourConnectionsChanged(nil)
	router.pullsNeighbourGone(c.remoteName)
	router.ConnectionMaker.signal()
	router.logf("%s: connection deleted", c)
}

// ourConnectionsChanged rebuilds our topology entry from our connections
// and tells every neighbour (but except).
func (router *Router) ourConnectionsChanged(except *LocalConnection) {
	router.ownMu.Lock()
	summaries := router.ourSummaries()
	router.Peers.mu.Lock()
	router.Peers.topo.setOurConnections(summaries)
	router.Peers.mu.Unlock()
	router.ownMu.Unlock()
	router.mu.RLock()
	others := router.otherConnections(except)
	router.mu.RUnlock()
	for _, o := range others {
		o.q.pushOwnChange()
	}
	router.topologyChanged()
}

// ourSummaries lists our connections as they are now.
func (router *Router) ourSummaries() []connectionSummary {
	router.mu.RLock()
	defer router.mu.RUnlock()
	return router.connectionSummaries()
}

// connectionSummaries lists our connections; the caller holds router.mu.
func (router *Router) connectionSummaries() []connectionSummary {
	out := make([]connectionSummary, 0, len(router.conns))
	for _, c := range router.conns {
		out = append(out, c.summary())
	}
	return out
}

// otherConnections lists our connections but except; the caller holds
// router.mu.
func (router *Router) otherConnections(except *LocalConnection) []*LocalConnection {
	out := make([]*LocalConnection, 0, len(router.connList))
	for _, c := range router.connList {
		if c != except {
			out = append(out, c)
		}
	}
	return out
}

func (router *Router) connectionTo(name PeerName) *LocalConnection {
	router.mu.RLock()
	defer router.mu.RUnlock()
	return router.conns[name]
}

// connections returns our connections, in the order of the remotes'
// names. The list is shared: it must not be modified.
func (router *Router) connections() []*LocalConnection {
	router.mu.RLock()
	defer router.mu.RUnlock()
	return router.connList
}

// connsChanged rebuilds connList after a change of conns; the caller holds
// mu. Every relayed message walks our connections, and they change seldom:
// the list is built once per change rather than once per message.
func (router *Router) connsChanged() {
	list := make([]*LocalConnection, 0, len(router.conns))
	for _, c := range router.conns {
		list = append(list, c)
	}
	slices.SortFunc(list, func(a, b *LocalConnection) int { return cmp.Compare(a.remoteName, b.remoteName) })
	router.connList = list
}

func (router *Router) trusts(addr net.Addr) bool {
	if len(router.TrustedSubnets) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	for _, n := range router.TrustedSubnets {
		if ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// topologyChanged asks for routes to be recomputed soon.
func (router *Router) topologyChanged() {
	select {
	case router.topoChanged <- struct{}{}:
	default:
	}
}

// topologyLoop recomputes routes after bursts of changes, removes peers
// that became unreachable, and gossips periodically.
func (router *Router) topologyLoop() {
	gossipTicker := time.NewTicker(router.gossipInterval)
	defer gossipTicker.Stop()
	routeTimer := time.NewTimer(time.Hour)
	routeTimer.Stop()
	gcTimer := time.NewTimer(time.Hour)
	gcTimer.Stop()
	defer routeTimer.Stop()
	defer gcTimer.Stop()
	routeArmed, gcArmed := false, false
	// The pass runs routeDelay after a change, but no sooner than minGap
	// after the previous pass.
	var lastPass time.Time
	minGap := routeDelay
	// While the topology changes, a digest goes to a random neighbour
	// every digestInterval, to repair entries the relaying missed.
	digestTicker := time.NewTicker(digestInterval)
	defer digestTicker.Stop()
	changedSinceDigest := false
	var lastDigest time.Time
	lastBaseSweep := time.Now()
	for {
		select {
		case <-router.stop:
			return
		case now := <-digestTicker.C:
			if now.Sub(lastBaseSweep) >= baseQuietInterval {
				lastBaseSweep = now
				router.Peers.mu.Lock()
				router.Peers.topo.dropQuietBases()
				router.Peers.topo.heard.sweep(router.Peers.topo.record)
				router.Peers.mu.Unlock()
			}
			// An entry asked for and not received may be missing still:
			// a digest exchange finds it.
			// Both are spaced by the size of the mesh: on a machine too
			// busy to answer pulls in time, exchanges every second would
			// only add to the load.
			if router.expirePulls() {
				changedSinceDigest = true
			}
			spacing := max(digestInterval, time.Duration(router.Peers.count())*digestIntervalPerPeer)
			if changedSinceDigest && now.Sub(lastDigest) >= spacing-digestInterval/2 {
				changedSinceDigest = false
				lastDigest = now
				router.sendDigestToRandomNeighbour()
			}
			continue
		case <-router.topoChanged:
			changedSinceDigest = true
			if !routeArmed {
				delay := routeDelay
				if wait := minGap - time.Since(lastPass); wait > delay {
					delay = wait
				}
				routeTimer.Reset(delay)
				routeArmed = true
			}
			continue
		case <-routeTimer.C:
			routeArmed = false
		case <-gcTimer.C:
			gcArmed = false
		case <-gossipTicker.C:
			router.periodicGossip()
			continue
		}
		began := time.Now()
		router.Peers.mu.RLock()
		changed := router.Routes.recalculate(router.Peers.topo)
		router.Peers.mu.RUnlock()
		if changed {
			router.Routes.fireOnChange()
		}
		removed, pending := router.Peers.collect(time.Now().UnixNano(), int64(router.gcGrace()), router.Routes.table.Load())
		router.topologyPassDone(changed, removed)
		for _, p := range removed {
			router.logf("Removed unreachable peer %s", p)
		}
		if len(removed) > 0 {
			router.topologyChanged()
		}
		if pending && !gcArmed {
			gcTimer.Reset(router.gcGrace())
			gcArmed = true
		}
		router.ConnectionMaker.topologyChanged()
		router.Peers.dropStaleView()
		// While changes keep coming, run this pass no more often than ten
		// times what it costs, so that a large mesh in turmoil spends at
		// most a tenth of a core on it. The cost is measured on the
		// clock, which on a loaded machine counts time waiting for locks
		// and for a CPU too: it is capped, so that routes never lag by
		// more than maxRouteGap for it.
		lastPass = time.Now()
		minGap = max(routeDelay, min(10*lastPass.Sub(began), maxRouteGap), time.Duration(router.Peers.count())*routeGapPerPeer)
	}
}

// heartbeatLoop queues a heartbeat on every connection every heartbeat
// interval, busy or not, as weave does: the remote's read timeout is only
// twice as long. It has a goroutine of its own, so that nothing the
// topology loop does (a long pass, a slow callback) delays heartbeats.
func (router *Router) heartbeatLoop() {
	ticker := time.NewTicker(router.heartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-router.stop:
			return
		case <-ticker.C:
			for _, c := range router.connections() {
				c.q.pushHeartbeat()
			}
		}
	}
}

func (router *Router) periodicGossip() {
	// The full topology goes to one random neighbour: together with the
	// stale entries sent back to whoever is behind, that is enough to
	// repair anything missed, at a fraction of weave's cost in dense
	// meshes, where the full topology is large.
	if c := router.randomNeighbour(); c != nil {
		c.q.pushTopologySync(c.digests)
	}
	for _, ch := range router.channelList() {
		ch.deliver(inboxPeriodic, UnknownPeerName, nil)
	}
}

func (router *Router) channelList() []*gossipChannel {
	router.mu.RLock()
	defer router.mu.RUnlock()
	out := make([]*gossipChannel, 0, len(router.channels))
	for _, ch := range router.channels {
		out = append(out, ch)
	}
	return out
}

// sendDigestToRandomNeighbour starts an exchange of digests with a random
// neighbour that understands them.
func (router *Router) sendDigestToRandomNeighbour() {
	var capable []*LocalConnection
	for _, c := range router.connections() {
		if c.digests {
			capable = append(capable, c)
		}
	}
	if len(capable) == 0 {
		return
	}
	router.rndMu.Lock()
	c := capable[router.rnd.IntN(len(capable))]
	router.rndMu.Unlock()
	c.q.pushTopologySync(true)
}

func (router *Router) randomNeighbour() *LocalConnection {
	conns := router.connections()
	if len(conns) == 0 {
		return nil
	}
	router.rndMu.Lock()
	defer router.rndMu.Unlock()
	return conns[router.rnd.IntN(len(conns))]
}

// neighbourSubset picks the connections gossip goes to, leaving out the
// one to except.
func (router *Router) neighbourSubset(except PeerName) []*LocalConnection {
	router.mu.RLock()
	names := make([]PeerName, 0, len(router.conns))
	for name, c := range router.conns {
		if c.established.Load() {
			names = append(names, name)
		}
	}
	router.mu.RUnlock()
	n := subsetSize(router.Routes.reachableCount())
	router.rndMu.Lock()
	chosen := chooseSubset(names, n, except, router.rnd)
	router.rndMu.Unlock()
	out := make([]*LocalConnection, 0, len(chosen))
	for _, name := range chosen {
		if c := router.connectionTo(name); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// handleGossip dispatches a tag 4, 5 or 6 frame received on c.
func (router *Router) handleGossip(c *LocalConnection, body []byte) error {
	m, err := parseGossipMessage(body)
	if err != nil {
		return err
	}
	switch m.Tag {
	case tagGossipUnicast:
		if m.Dst != router.Ourself.Name {
			router.forwardUnicast(&m, body)
			return nil
		}
		ch := router.channel(m.Channel)
		if ch == nil {
			router.logOnce("nochan", fmt.Sprintf("[gossip %s]: unicast from %s for a channel not registered here: dropped", m.Channel, m.Src), c)
			return nil
		}
		ch.deliver(inboxUnicast, m.Src, clone(m.Payload))
	case tagGossipBroadcast:
		ch := router.channel(m.Channel)
		if ch == nil {
			for _, next := range router.broadcastHops(m.Src) {
				_ = next.sendRaw(body, false)
			}
			return nil
		}
		ch.deliver(inboxBroadcast, m.Src, clone(m.Payload))
	case tagGossip:
		switch {
		case m.Channel == topologyChannel:
			return router.handleTopology(c, m.Payload)
		case m.Channel == digestChannel && c.digests:
			return router.handleDigest(c, m.Payload)
		case m.Channel == syncChannel && c.digests:
			return router.handleSync(c, m.Payload)
		case m.Channel == announceChannel && c.digests:
			return router.handleAnnounce(c, m.Payload)
		case m.Channel == pullChannel && c.digests:
			return router.handlePull(c, m.Payload)
		case m.Channel == deltaChannel && c.digests:
			return router.handleDelta(c, m.Payload)
		}
		ch := router.channel(m.Channel)
		if ch == nil {
			if router.recent.firstTime(m.Channel, m.Payload) {
				router.sendNeighbourSubset(m.Channel, newSurrogateData(clone(m.Payload)), m.Src)
			}
			return nil
		}
		ch.deliver(inboxGossip, m.Src, clone(m.Payload))
	}
	return nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// handleTopology merges a topology update received on c and passes on to
// the other neighbours what was new.
func (router *Router) handleTopology(c *LocalConnection, payload []byte) error {
	updates, err := appendDecodedTopology(updatesPool.get(), payload, router.limits, router.entryHeldFunc)
	if err != nil {
		return err
	}
	router.mergeUpdates(c, updates)
	updatesPool.put(updates)
	return nil
}

// entryHeld reports whether s is no newer than the entry we hold for its
// peer, or is ours: the decoder then skips its connections. It is called
// for every entry received, so it does not wait for the lock: while a
// merge holds it, every entry is decoded whole.
func (router *Router) entryHeld(s peerSummary) bool {
	if s.Name == router.Ourself.Name {
		return true
	}
	if !router.Peers.mu.TryRLock() {
		return false
	}
	p := router.Peers.topo.get(s.Name)
	held := p != nil && !p.isPlaceholder() && !s.newerThan(p)
	router.Peers.mu.RUnlock()
	return held
}

// mergeUpdates merges topology entries received on c and passes on to the
// other neighbours what was new.
func (router *Router) mergeUpdates(c *LocalConnection, updates []peerUpdate) {
	conns := router.connections()
	sc := relayScratchPool.Get().(*relayScratch)
	defer sc.release()
	neighbours := sc.reset(len(conns))
	for i, o := range conns {
		neighbours[i] = o.remoteName
	}
	// relay gets, per neighbour (by position in conns), the names of
	// peers new to us, whose entries to send at once, later those of
	// newer versions of entries the neighbour most likely has, to
	// announce.
	relay, later := sc.relay, sc.later
	var orders []pullOrder
	router.Peers.mu.Lock()
	for i := range updates {
		u := &updates[i].peerSummary
		router.Peers.topo.heard.note(u.Name, u.UID, u.Version, c.heardBit)
	}
	res := router.Peers.topo.apply(updates)
	router.metrics.topologyUpdates.Add(uint64(len(res.changed)))
	if len(res.changed) > 0 {
		now := time.Now().UnixNano()
		rc := &sc.rc
		router.Peers.topo.initRelayContext(rc, c.remoteName, neighbours)
		for i, x := range res.changed {
			if p := router.Peers.topo.get(x); p != nil {
				if o, ok := router.pulls.received(p, now); ok {
					orders = append(orders, o)
				}
			}
			to := relay
			if res.renewed[i] {
				to = later
			}
			sc.targets = rc.appendTargets(sc.targets[:0], x)
			for _, n := range sc.targets {
				to[n] = append(to[n], x)
			}
		}
	}
	router.Peers.mu.Unlock()
	router.sendPulls(orders)
	for i, o := range conns {
		names, newer := relay[i], later[i]
		switch {
		case o.digests:
			if len(names) > 0 {
				o.q.pushRelay(names)
			}
			if len(newer) > 0 {
				o.q.pushAnnounceLater(newer)
			}
		case len(names) > 0 || len(newer) > 0:
			o.q.pushTopology(append(names, newer...), false)
		}
	}
	if res.ourVersionBumped {
		router.ourEntryRaised()
	}
	if len(res.revived) > 0 && c.digests {
		// The sender names them: it most likely has their entries.
		pull := make([]digestEntry, len(res.revived))
		for i, n := range res.revived {
			pull[i] = digestEntry{Name: n}
		}
		c.q.pushPull(pull)
	}
	switch {
	case len(res.stale) == 0:
	case c.digests:
		// The sender is behind: it pulls what it still lacks once our
		// entries reach it.
		c.q.pushAnnounce(res.stale)
	default:
		c.q.pushTopology(res.stale, false)
	}
	if len(res.changed) > 0 || res.ourVersionBumped || res.placeholders > 0 {
		router.topologyChanged()
	}
}

// relayScratch holds the lists mergeUpdates builds for each message, kept
// between messages (and readers) so that relaying allocates nothing once
// warm. The send queues copy the names they are given.
type relayScratch struct {
	neighbours   []PeerName
	relay, later [][]PeerName
	targets      []int
	rc           relayContext
}

var relayScratchPool = sync.Pool{New: func() any { return new(relayScratch) }}

// maxRelayScratch bounds the names a relayScratch keeps room for between
// messages; a burst that needed more gives its lists up.
const maxRelayScratch = 1 << 14

// reset readies the lists for n neighbours and returns the neighbour list.
func (sc *relayScratch) reset(n int) []PeerName {
	sc.neighbours = slices.Grow(sc.neighbours[:0], n)[:n]
	for _, l := range []*[][]PeerName{&sc.relay, &sc.later} {
		*l = slices.Grow((*l)[:0], n)[:n]
		for i := range *l {
			(*l)[i] = (*l)[i][:0]
		}
	}
	return sc.neighbours
}

// release gives the lists back to the pool, unless a burst made them
// large.
func (sc *relayScratch) release() {
	sc.rc.reset()
	kept := 0
	for _, l := range [][][]PeerName{sc.relay, sc.later} {
		for _, names := range l {
			kept += cap(names)
		}
	}
	if kept > maxRelayScratch {
		return
	}
	relayScratchPool.Put(sc)
}

// perPeer returns per times n peers, within lo and hi: the durations that
// grow with the mesh.
func perPeer(n int, per, lo, hi time.Duration) time.Duration {
	return min(max(lo, time.Duration(n)*per), hi)
}

// gcGrace is how long a peer stays unreachable before it is removed.
func (router *Router) gcGrace() time.Duration {
	return perPeer(router.Peers.count(), gcGracePerPeer, gcGrace, maxGCGrace)
}

// announceDelay is the least time between two announcements of newer
// versions of entries on one connection.
func (router *Router) announceDelay() time.Duration {
	return perPeer(router.Peers.count(), announceDelayPerPeer, router.topologyInterval, maxAnnounceDelay)
}

// ourEntryRaised sends our own entry whole to every neighbour, after we
// raised our version above that of an old incarnation of ours: every
// neighbour needs it.
func (router *Router) ourEntryRaised() {
	for _, o := range router.connections() {
		o.q.pushTopology([]PeerName{router.Ourself.Name}, false)
	}
	router.topologyChanged()
}

// sendUnicast sends a message of a channel to dst.
func (router *Router) sendUnicast(channel string, dst PeerName, msg []byte) error {
	if dst == router.Ourself.Name {
		if ch := router.channel(channel); ch != nil && ch.deliver(inboxUnicast, dst, clone(msg)) {
			return nil
		}
		return errQueueFull
	}
	c := router.nextHop(dst)
	if c == nil {
		return fmt.Errorf("%w %s", ErrNoRoute, dst)
	}
	m := gossipMessage{Tag: tagGossipUnicast, Channel: channel, Src: router.Ourself.Name, Dst: dst, Payload: msg}
	return c.sendMessage(&m, true)
}

func (router *Router) nextHop(dst PeerName) *LocalConnection {
	hop, ok := router.Routes.Unicast(dst)
	if !ok {
		hop, ok = router.Routes.UnicastAll(dst)
	}
	if !ok {
		return nil
	}
	return router.connectionTo(hop)
}

// forwardUnicast passes on, unchanged, a unicast for another peer.
func (router *Router) forwardUnicast(m *gossipMessage, body []byte) {
	c := router.nextHop(m.Dst)
	if c == nil {
		router.logOnce("relay", fmt.Sprintf("[gossip %s]: unknown relay destination: %s", m.Channel, m.Dst))
		return
	}
	_ = c.sendRaw(body, false)
}

// broadcastHops returns the connections a broadcast from src is passed on
// to: our children in src's tree over every reported connection, as weave
// does, so a new connection carries broadcasts as soon as we know of it.
func (router *Router) broadcastHops(src PeerName) []*LocalConnection {
	// Routes lag the topology while it changes (the topology loop
	// recomputes them at most so often). A broadcast is relayed along the
	// tree of our current view, so that peers whose views agree agree on
	// the tree, and each gets the broadcast once.
	hops := router.Routes.BroadcastAll(src)
	out := make([]*LocalConnection, 0, len(hops))
	for _, name := range hops {
		if c := router.connectionTo(name); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// relayBroadcast sends data originated by src along src's broadcast tree.
// The data is encoded once, here, and the same bytes go to every child:
// data merged while waiting could be shared between neighbours' queues,
// and a broadcast must reach each peer exactly once. A neighbour whose
// queue is full misses the broadcast; periodic gossip repairs that.
func (router *Router) relayBroadcast(channel string, src PeerName, data GossipData) {
	hops := router.broadcastHops(src)
	if len(hops) == 0 {
		return
	}
	for _, msg := range data.Encode() {
		m := gossipMessage{Tag: tagGossipBroadcast, Channel: channel, Src: src, Payload: msg}
		for _, c := range hops {
			if err := c.sendMessage(&m, false); errors.Is(err, errQueueFull) {
				router.logOnce("bcastdrop", fmt.Sprintf("%s: send queue full, broadcast dropped", c), c)
				router.metrics.broadcastSkipped.Add(1)
			}
		}
	}
}

// sendNeighbourSubset gossips data to a random subset of neighbours but
// except.
func (router *Router) sendNeighbourSubset(channel string, data GossipData, except PeerName) {
	key := gossipKey{tag: tagGossip, channel: channel, src: router.Ourself.Name}
	for _, c := range router.neighbourSubset(except) {
		c.q.pushGossip(key, data)
	}
}

// The Router is the Gossiper of the built-in "topology" channel.
var _ Gossiper = (*Router)(nil)

// OnGossipUnicast implements Gossiper; topology is never sent by unicast.
func (router *Router) OnGossipUnicast(sender PeerName, msg []byte) error {
	return fmt.Errorf("mesh: unexpected topology unicast from %s", sender)
}

// OnGossipBroadcast implements Gossiper: it merges a topology update and
// returns what was new.
func (router *Router) OnGossipBroadcast(_ PeerName, update []byte) (GossipData, error) {
	return router.OnGossip(update)
}

// Gossip implements Gossiper: the complete topology.
func (router *Router) Gossip() GossipData {
	return newTopologyGossipData(router.Peers, router.Peers.Names())
}

// OnGossip implements Gossiper: it merges a topology update and returns
// what was new, or nil.
func (router *Router) OnGossip(update []byte) (GossipData, error) {
	updates, err := decodeTopology(update, router.limits)
	if err != nil {
		return nil, err
	}
	router.Peers.mu.Lock()
	res := router.Peers.topo.apply(updates)
	router.metrics.topologyUpdates.Add(uint64(len(res.changed)))
	router.Peers.mu.Unlock()
	if res.ourVersionBumped {
		res.changed = append(res.changed, router.Ourself.Name)
	}
	if len(res.changed) > 0 || res.placeholders > 0 {
		router.topologyChanged()
	}
	if len(res.changed) == 0 {
		return nil, nil
	}
	return newTopologyGossipData(router.Peers, res.changed), nil
}
