package mesh

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Redial timing.
const (
	// initialRetryDelay is the delay before the first redial.
	initialRetryDelay = 500 * time.Millisecond
	// maxRetryDelay caps the exponential backoff.
	maxRetryDelay = 5 * time.Minute
	// longLivedConnection is how long a connection must last for the
	// backoff to start again from the beginning after it ends.
	longLivedConnection = time.Minute
	// discoveryDeferral is how long, at least, a peer waits before
	// dialling a discovered peer with a lower name, which is expected to
	// dial it first: without it both ends would dial each other at once,
	// and one of the two connections would be dropped. Each waits a random
	// time up to twice as long, so that the peers of a mesh that formed at
	// once do not all dial at the same moment.
	discoveryDeferral = 500 * time.Millisecond
	// maxDiscoveryDials bounds the dials to discovered peers in progress at
	// once, so that a mesh discovered all at once is connected gradually
	// rather than in a storm of handshakes and full topology exchanges.
	maxDiscoveryDials = 4
	// minConnsBeforeQuiet is the number of connections up to which
	// discovery dials while this router is still learning the mesh (see
	// discoveryPace).
	minConnsBeforeQuiet = 2
	// discoveryQuietPerPeer is, per known peer, how long discovery waits
	// for this router to learn nothing new before it dials beyond
	// minConnsBeforeQuiet; at least minDiscoveryQuiet, at most
	// maxDiscoveryQuiet.
	discoveryQuietPerPeer = time.Millisecond
	minDiscoveryQuiet     = 100 * time.Millisecond
	maxDiscoveryQuiet     = time.Second
	// maxDiscoveryHold bounds how long discovery holds back in a row: a
	// mesh where peers keep joining, or a peer whose entry never comes
	// (while others report connections to it), must not keep a router at
	// minConnsBeforeQuiet connections.
	maxDiscoveryHold = 30 * time.Second
)

// Target states, as TargetStatus.State reports them.
const (
	// TargetWaiting: the address is dialled at TryAfter (at once when
	// TryAfter is zero); LastError says why the last attempt failed.
	TargetWaiting = "waiting"
	// TargetAttempting: a dial, or the handshake after it, is under way.
	TargetAttempting = "attempting"
	// TargetConnected: a connection made from this address is up.
	TargetConnected = "connected"
	// TargetFailed: the address led to this router itself or to a peer
	// with its name; it is not dialled again (unless given again to
	// InitiateConnections).
	TargetFailed = "failed"
)

type targetState uint8

const (
	targetWaiting    targetState = iota // until tryAfter
	targetAttempting                    // a dial or handshake is under way
	targetConnected                     // a connection is up
	targetGivenUp                       // never retried (ourselves, name collision)
)

func (s targetState) String() string {
	switch s {
	case targetWaiting:
		return TargetWaiting
	case targetAttempting:
		return TargetAttempting
	case targetConnected:
		return TargetConnected
	}
	return TargetFailed
}

// target is an address the connection maker keeps a connection to.
type target struct {
	addr      string
	direct    bool // asked for by the program, not discovered
	state     targetState
	attempts  int
	tryAfter  time.Time
	lastError error
	// peer is the peer this address led to last time, if known: while we
	// are connected to that peer, by whichever connection, the address is
	// not dialled.
	peer PeerName
	// rank orders discovered targets (see ConnectionMaker.rank).
	rank uint64
}

// ConnectionMaker dials the peers this router should be connected to and
// redials them with exponential backoff and jitter: the addresses given to
// InitiateConnections and, with Config.PeerDiscovery, the addresses of peers
// learnt from the topology. Host names are resolved at every attempt.
type ConnectionMaker struct {
	router *Router
	wake   chan struct{}

	mu      sync.Mutex
	targets map[string]*target
	// selfAddrs remembers addresses that turned out to lead to this very
	// router, so that discovery does not dial them again. Bounded.
	selfAddrs map[string]struct{}
	rnd       *rand.Rand

	// Scratch of topologyChanged, which only the router's topology loop
	// calls: kept between calls so that a pass allocates nothing.
	connectedNow map[PeerName]bool
	cands        []discoveryCandidate
	pace         discoveryPace
	// recheck, when not zero, is when discovery may stop holding back:
	// run then asks the topology loop for a pass.
	recheck time.Time
	// allowance is the number of connections up to which discovered peers
	// are dialled now (see discoveryPace).
	allowance int
}

// discoveryPace holds discovery back while a router is learning the mesh.
// Every connection made is a change that every peer must learn: in a mesh
// forming all at once (a thousand peers that each know two others, say),
// the connections discovery adds to those it started with make every
// peer's entry change about three times as often, and the mesh takes
// three times as long to learn who is in it. So beyond minConnsBeforeQuiet
// connections (enough not to hang on one), discovery waits until this
// router has learnt no new peer, and asked no neighbour for the entry of a
// peer it knows nothing or only the name of, for a quiet period that grows
// with the mesh (discoveryQuiet), or for maxDiscoveryHold at most. A
// router that joins a formed mesh learns it in one exchange and then
// dials; one that loses a connection in a quiet mesh dials at once. It
// reads no clock: times are passed in.
type discoveryPace struct {
	// known is how many peers the topology had at the last look, and
	// learnt when we last learnt one or were waiting for an entry.
	known  int
	learnt time.Time
	// holding is when discovery began holding back, zero when it is not.
	holding time.Time
}

// allowance returns the number of connections up to which discovered
// peers may be dialled at now, given the peers known, whether entries of
// unknown peers are awaited, and the discovery limit; and, when it is
// below the limit, when to look again.
func (d *discoveryPace) allowance(now time.Time, known int, learning bool, limit int) (int, time.Time) {
	if known > d.known || learning || d.learnt.IsZero() {
		d.learnt = now
	}
	d.known = known
	quietAt := d.learnt.Add(discoveryQuiet(known))
	if !quietAt.After(now) || limit <= minConnsBeforeQuiet {
		d.holding = time.Time{}
		return limit, time.Time{}
	}
	if d.holding.IsZero() {
		d.holding = now
	}
	if end := d.holding.Add(maxDiscoveryHold); end.After(now) {
		if end.Before(quietAt) {
			return minConnsBeforeQuiet, end
		}
		return minConnsBeforeQuiet, quietAt
	}
	// Held back long enough: dial, until the router falls quiet and may
	// hold back again.
	return limit, time.Time{}
}

// discoveryCandidate is a peer topologyChanged may dial: those that report
// fewer connections than the discovery degree (not full) first, then by
// rank.
type discoveryCandidate struct {
	full bool
	rank uint64
	peer *Peer
}

// maxSelfAddrs bounds ConnectionMaker.selfAddrs.
const maxSelfAddrs = 64

func newConnectionMaker(r *Router) *ConnectionMaker {
	return &ConnectionMaker{
		router:    r,
		wake:      make(chan struct{}, 1),
		targets:   make(map[string]*target),
		selfAddrs: make(map[string]struct{}),
		rnd:       rand.New(rand.NewPCG(uint64(r.Ourself.UID), uint64(r.Ourself.Name))),
	}
}

func (cm *ConnectionMaker) signal() {
	select {
	case cm.wake <- struct{}{}:
	default:
	}
}

// normaliseAddress checks a "host[:port]" peer address and adds the
// default port when there is none. The host is not resolved here.
func normaliseAddress(peer string) (string, error) {
	host, port, err := net.SplitHostPort(peer)
	if err != nil {
		host, port = peer, strconv.Itoa(Port)
		if peer == "" || net.ParseIP(peer) == nil && (peer[0] == '[' || containsColon(peer)) {
			return "", fmt.Errorf("mesh: invalid peer address %q", peer)
		}
	}
	if host == "" {
		return "", fmt.Errorf("mesh: peer address %q has no host", peer)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("mesh: peer address %q has an invalid port", peer)
	}
	return net.JoinHostPort(host, port), nil
}

func containsColon(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

// InitiateConnections adds the given peer addresses ("host:port", or
// "host" for the default port) to those the router keeps connections to.
// With replace, addresses added before and not listed now are forgotten.
// It returns one error per invalid address; the others are still added.
func (cm *ConnectionMaker) InitiateConnections(peers []string, replace bool) []error {
	var errs []error
	addrs := make(map[string]struct{}, len(peers))
	for _, p := range peers {
		addr, err := normaliseAddress(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs[addr] = struct{}{}
	}
	cm.mu.Lock()
	if replace {
		for addr, t := range cm.targets {
			if _, keep := addrs[addr]; t.direct && !keep {
				cm.forgetLocked(addr)
			}
		}
	}
	for addr := range addrs {
		if t, ok := cm.targets[addr]; ok {
			t.direct = true
			if t.state == targetGivenUp {
				t.state, t.attempts, t.tryAfter = targetWaiting, 0, time.Time{}
			}
			continue
		}
		cm.targets[addr] = &target{addr: addr, direct: true}
	}
	cm.mu.Unlock()
	cm.signal()
	return errs
}

// ForgetConnections removes the given addresses from those the router
// keeps connections to. Existing connections are not closed.
func (cm *ConnectionMaker) ForgetConnections(peers []string) {
	cm.mu.Lock()
	for _, p := range peers {
		if addr, err := normaliseAddress(p); err == nil {
			cm.forgetLocked(addr)
		}
	}
	cm.mu.Unlock()
}

func (cm *ConnectionMaker) forgetLocked(addr string) {
	if t, ok := cm.targets[addr]; ok {
		if t.state == targetAttempting || t.state == targetConnected {
			t.direct = false // dropped when the attempt or connection ends
			return
		}
		delete(cm.targets, addr)
	}
}

// Targets returns the addresses given to InitiateConnections, sorted; with
// activeOnly, only those not connected at the moment.
func (cm *ConnectionMaker) Targets(activeOnly bool) []string {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	var out []string
	for addr, t := range cm.targets {
		if t.direct && (!activeOnly || t.state != targetConnected) {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// TargetStatus describes one address the connection maker works on.
type TargetStatus struct {
	// Address is the address dialled, "host:port".
	Address string
	// Direct is true for an address given to InitiateConnections (by the
	// program), false for one found by peer discovery (see
	// Config.PeerDiscovery). Only direct addresses are listed by Targets
	// and Status.Targets; discovered ones are dropped once no longer
	// needed.
	Direct bool
	// State is one of TargetWaiting, TargetAttempting, TargetConnected
	// and TargetFailed.
	State string
	// Attempts counts the dials of the address since it was added or
	// last stayed connected for a minute.
	Attempts int
	// TryAfter is when a waiting address is dialled next; zero when it
	// is due at once, and in the other states.
	TryAfter time.Time `json:",omitzero"`
	// LastError is why the last attempt failed, if it did.
	LastError string `json:",omitempty"`
}

// Status returns the state of every target, sorted by address.
func (cm *ConnectionMaker) Status() []TargetStatus {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	out := make([]TargetStatus, 0, len(cm.targets))
	for _, t := range cm.targets {
		s := TargetStatus{Address: t.addr, Direct: t.direct, State: t.state.String(), Attempts: t.attempts}
		if t.state == targetWaiting {
			s.TryAfter = t.tryAfter
		}
		if t.lastError != nil {
			s.LastError = t.lastError.Error()
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b TargetStatus) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// run dials targets when they are due until stop is closed.
func (cm *ConnectionMaker) run(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := cm.launchDue(time.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if at := cm.recheckDue(time.Now()); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-stop:
			return
		case <-cm.wake:
		case <-timer.C:
		}
	}
}

// recheckDue asks the topology loop for a pass if discovery has waited
// long enough for the topology to fall quiet, and returns when it should
// be asked otherwise (zero if it need not be).
func (cm *ConnectionMaker) recheckDue(now time.Time) time.Time {
	cm.mu.Lock()
	at := cm.recheck
	due := !at.IsZero() && !at.After(now)
	if due {
		cm.recheck = time.Time{}
	}
	cm.mu.Unlock()
	if due {
		cm.router.topologyChanged()
		return time.Time{}
	}
	return at
}

// discoveryQuiet is how long discovery waits after the last peer learnt,
// for a topology of n peers.
func discoveryQuiet(n int) time.Duration {
	return perPeer(n, discoveryQuietPerPeer, minDiscoveryQuiet, maxDiscoveryQuiet)
}

// launchDue starts a dial for every target that is due, within the
// connection limit, and returns when the next one is due (zero if none).
func (cm *ConnectionMaker) launchDue(now time.Time) time.Time {
	r := cm.router
	r.mu.RLock()
	connected := make(map[string]bool, len(r.conns))
	connectedPeers := make(map[PeerName]bool, len(r.conns))
	for _, c := range r.conns {
		if c.outbound {
			connected[c.remoteTCPAddr] = true
		}
		connectedPeers[c.remoteName] = true
	}
	nconns := len(r.conns)
	r.mu.RUnlock()

	cm.mu.Lock()
	defer cm.mu.Unlock()
	attempting, discovering := 0, 0
	for _, t := range cm.targets {
		if t.state == targetAttempting {
			attempting++
			if !t.direct {
				discovering++
			}
		}
	}
	var due []*target
	var next time.Time
	for _, t := range cm.targets {
		if t.state != targetWaiting || connected[t.addr] || (t.peer != UnknownPeerName && connectedPeers[t.peer]) {
			continue
		}
		if t.tryAfter.After(now) {
			if next.IsZero() || t.tryAfter.Before(next) {
				next = t.tryAfter
			}
			continue
		}
		due = append(due, t)
	}
	// Program-given addresses first, then discovered ones in an order of
	// our own (a hash of our name and the address): deterministic, but not
	// the same for every peer, so that discovery makes a random graph
	// rather than everyone dialling the same few peers.
	slices.SortFunc(due, func(a, b *target) int {
		if a.direct != b.direct {
			if a.direct {
				return -1
			}
			return 1
		}
		if !a.direct {
			if c := cmp.Compare(a.rank, b.rank); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.addr, b.addr)
	})
	for _, t := range due {
		if nconns+attempting >= r.ConnLimit {
			break
		}
		if !t.direct {
			if discovering >= maxDiscoveryDials || nconns+attempting >= min(cm.discoveryLimit(), cm.allowance) {
				continue
			}
			discovering++
		}
		attempting++
		t.state = targetAttempting
		t.attempts++
		r.wg.Add(1)
		go func(t *target) {
			defer r.wg.Done()
			cm.dial(t)
		}(t)
	}
	return next
}

// dial connects to a target; on success the calling goroutine becomes the
// connection's reader.
func (cm *ConnectionMaker) dial(t *target) {
	r := cm.router
	conn, err := r.transport.DialContext(r.ctx, t.addr)
	r.countDial(err)
	key := logKey{kind: "dial", addr: t.addr}
	if err != nil {
		// The first failure is logged, then one a minute at most per
		// address; not those caused by the router stopping.
		if r.ctx.Err() == nil {
			r.logLimited(key, fmt.Sprintf("->[%s] dial failed: %v", logAddr(t.addr), err), logAddr(t.addr), err)
		}
		cm.attemptEnded(t, time.Time{}, err)
		return
	}
	// The next failure, if any, is logged at once.
	r.logForget(key)
	c := r.newConnection(conn, true, t.addr, t)
	if c == nil {
		cm.attemptEnded(t, time.Time{}, ErrStopped)
		return
	}
	r.runConnection(c)
}

// connected is called when a connection to a target is registered.
func (cm *ConnectionMaker) connected(t *target, peer PeerName) {
	cm.mu.Lock()
	t.state = targetConnected
	t.lastError = nil
	t.peer = peer
	cm.mu.Unlock()
}

// connectionEnded is called when a connection to a target ends, whether
// its handshake failed or it ran for a while.
func (cm *ConnectionMaker) connectionEnded(c *LocalConnection, err error) {
	if c.remoteName != UnknownPeerName && errors.Is(err, ErrDuplicateConnection) {
		cm.mu.Lock()
		c.target.peer = c.remoteName
		cm.mu.Unlock()
	}
	cm.attemptEnded(c.target, c.started, err)
}

func (cm *ConnectionMaker) attemptEnded(t *target, started time.Time, err error) {
	cm.mu.Lock()
	defer cm.signal()
	defer cm.mu.Unlock()
	if cm.targets[t.addr] != t {
		return
	}
	lived := !started.IsZero() && time.Since(started) >= longLivedConnection
	if !t.direct && t.state == targetConnected && lived {
		// A discovered address served its purpose; discovery adds it
		// again if the peer is still unconnected. A connection that ended
		// soon (the remote over its limit, say) is backed off instead, so
		// that it is not redialled in a tight loop.
		delete(cm.targets, t.addr)
		return
	}
	t.lastError = err
	switch {
	case errors.Is(err, ErrConnectToSelf), errors.Is(err, ErrNameCollision):
		t.state = targetGivenUp
		if errors.Is(err, ErrConnectToSelf) && len(cm.selfAddrs) < maxSelfAddrs {
			cm.selfAddrs[t.addr] = struct{}{}
		}
		if !t.direct {
			delete(cm.targets, t.addr)
		}
		cm.router.logf("->[%s] not retrying: %v", logAddr(t.addr), err)
		return
	case errors.Is(err, ErrDuplicateConnection) && !t.direct:
		delete(cm.targets, t.addr)
		return
	}
	if lived {
		t.attempts = 0
	}
	t.state = targetWaiting
	t.tryAfter = time.Now().Add(cm.backoff(t.attempts))
}

// discoveryLimit is the number of connections up to which discovered
// peers are dialled.
func (cm *ConnectionMaker) discoveryLimit() int { return cm.router.discoveryLimit() }

// rank orders discovered peers for this peer: a hash of their name mixed
// with ours, so that every peer has an order of its own.
func (cm *ConnectionMaker) rank(name PeerName) uint64 {
	h := uint64(name) ^ uint64(cm.router.Ourself.Name)*0x9e3779b97f4a7c15
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// backoff returns the delay before attempt number n+1: exponential from
// initialRetryDelay up to maxRetryDelay, with ±25% jitter.
func (cm *ConnectionMaker) backoff(n int) time.Duration {
	d := initialRetryDelay
	for i := 1; i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	jitter := time.Duration(cm.rnd.Int64N(int64(d)/2+1)) - d/4
	return d + jitter
}

// topologyChanged refreshes the discovered targets: with peer discovery,
// while we have fewer connections than the discovery degree, the addresses
// at which other peers reach a few of the peers we are not connected to,
// the first in our own order of peers (see rank). Only so many are kept as
// can be dialled soon, so that the work does not grow with the mesh.
func (cm *ConnectionMaker) topologyChanged() {
	r := cm.router
	if !r.PeerDiscovery {
		return
	}
	if cm.connectedNow == nil {
		cm.connectedNow = make(map[PeerName]bool)
	}
	connected := cm.connectedNow
	clear(connected)
	r.mu.RLock()
	for name := range r.conns {
		connected[name] = true
	}
	r.mu.RUnlock()
	limit := cm.discoveryLimit()
	if len(connected) >= limit {
		// Nothing would be dialled: spare the scan of the topology.
		cm.pace.known = r.Peers.count()
		return
	}
	now := time.Now()
	allowance, recheck := cm.pace.allowance(now, r.Peers.count(), r.learning(), limit)
	cm.mu.Lock()
	raised := allowance > cm.allowance
	sooner := !recheck.IsZero() && (cm.recheck.IsZero() || recheck.Before(cm.recheck))
	cm.allowance, cm.recheck = allowance, recheck
	cm.mu.Unlock()
	if raised || sooner {
		// Targets chosen before may be dialled now; or run must ask for
		// a pass sooner than it would.
		cm.signal()
	}
	need := allowance - len(connected)
	if need <= 0 {
		return
	}
	view := r.Peers.view()
	ourAddr := ""
	if a := r.ListenAddr(); a != nil {
		ourAddr = a.String()
	}
	// The candidates: peers with an entry we are not connected to, the
	// lowest ranks first.
	// Peers that report fewer connections than the discovery degree come
	// first: a peer that has enough would end up with more than it needs,
	// and every connection costs both ends memory and the whole mesh
	// topology traffic.
	cands := cm.cands[:0]
	view.peers.Ascend(func(p *Peer) bool {
		if p.Name != r.Ourself.Name && !p.isPlaceholder() && !connected[p.Name] {
			cands = append(cands, discoveryCandidate{len(p.conns) >= limit, cm.rank(p.Name), p})
		}
		return true
	})
	defer func() {
		clear(cands) // keep no entry alive
		cm.cands = cands[:0]
	}()
	slices.SortFunc(cands, func(a, b discoveryCandidate) int {
		if a.full != b.full {
			if a.full {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.rank, b.rank)
	})

	cm.mu.Lock()
	defer cm.mu.Unlock()
	// Enough to dial as many as we need, a few at a time; those waiting
	// to be retried do not count.
	want := need + maxDiscoveryDials
	chosen := make(map[string]bool, want)
	changed := false
	for _, c := range cands {
		if want == 0 {
			break
		}
		addr := discoveredAddress(view, c.peer, ourAddr)
		if addr == "" {
			continue
		}
		if _, self := cm.selfAddrs[addr]; self {
			continue
		}
		if t, ok := cm.targets[addr]; ok {
			chosen[addr] = true
			if t.state != targetWaiting || t.attempts == 0 || !t.tryAfter.After(now) {
				want--
			}
			continue
		}
		if _, err := normaliseAddress(addr); err != nil {
			continue
		}
		t := &target{addr: addr, peer: c.peer.Name, rank: c.rank}
		if c.peer.Name < r.Ourself.Name {
			t.tryAfter = now.Add(discoveryDeferral + time.Duration(cm.rnd.Int64N(int64(discoveryDeferral))))
		}
		cm.targets[addr] = t
		chosen[addr] = true
		changed = true
		want--
	}
	// Discovered targets not chosen again are dropped, unless they wait
	// to be retried: they remember their backoff until it ends.
	for addr, t := range cm.targets {
		if !t.direct && t.state == targetWaiting && !chosen[addr] && !t.tryAfter.After(now) {
			delete(cm.targets, addr)
		}
	}
	if changed {
		cm.signal()
	}
}

// discoveredAddress returns an address at which another peer reaches p,
// as it reports its connection to p: the address it dialled, or the
// address p connected from with the port p listens on. Empty when there is
// none but ours.
func discoveredAddress(view *peersView, p *Peer, ourAddr string) string {
	for _, c := range p.conns {
		nb, ok := view.peers.Get(&Peer{Name: c.Name})
		if !ok {
			continue
		}
		if back, ok := nb.connectionTo(p.Name); ok && back.RemoteTCPAddr != "" && back.RemoteTCPAddr != ourAddr {
			return back.RemoteTCPAddr
		}
	}
	return ""
}
