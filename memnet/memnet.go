// Package memnet is an in-memory network on which many mesh routers run in
// one process, with faults injected at run time.
//
// A Network hands out one Host per address (n.Host("10.0.0.1")); a Host
// implements mesh.Transport, so a router uses it through Config.Transport
// and listens on "10.0.0.1:port". Connections are full duplex byte streams
// with TCP's main properties:
//
//   - each direction holds at most Config.BufferSize bytes not yet read, so
//     a writer blocks when the reader falls behind, until its write deadline;
//   - read and write deadlines work as for TCP and fail with errors that
//     match os.ErrDeadlineExceeded and whose Timeout method returns true;
//   - Close lets the remote read what was written, then io.EOF; writing to
//     a connection whose remote end closed fails with EPIPE.
//
// Faults, all of which can be changed while connections run:
//
//   - Cut (both ways) and CutOneWay: bytes sent across a cut direction are
//     held back, as TCP retransmits them: they count against the buffer, so
//     the sender eventually blocks, and the receiver reads nothing more
//     (not even io.EOF) until the cut heals, when they are delivered. A
//     connection across a cut therefore stalls until a deadline fires, as
//     a TCP connection over a broken link does. Dials between two hosts
//     fail while either direction is cut: they hang until the cut heals,
//     the dial's context ends or Config.DialTimeout passes, and then fail
//     with a timeout.
//   - Partition: hosts in different groups are cut from each other both
//     ways, with the same effects; HealPartition undoes it.
//   - SetLatency and SetLinkLatency: bytes become readable that long after
//     they were written (plus a random jitter drawn from the seed), and a
//     dial takes one round trip.
//   - Reset, ResetHost and ResetAll: existing connections fail at once on
//     both sides with ECONNRESET; bytes in flight are lost.
//   - Stall: a stalled host stops reading. Its reads block, ignoring their
//     deadlines (the host is stuck, not idle), until Unstall or until it
//     closes the connection itself; bytes sent to it pile up in its
//     buffers so its peers' writes block. It still accepts connections and
//     writes.
//
// A dial to a host that is reachable but has no listener on the port is
// refused at once (ECONNREFUSED); a host never created with Network.Host
// is unreachable.
//
// The only randomness is the latency jitter. Each direction of each
// connection draws it from a source of its own, seeded from Config.Seed,
// the two hosts, the listening port and the number of the connection
// among those made from the one host to that port of the other: the
// jitter of a link's n-th connection is the same sequence of delays in
// every run with the same seed, however the goroutines using other
// connections are scheduled. Seed tells the seed in use so that a failing
// run can be repeated. memnet starts no goroutines of its own.
package memnet

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gossip-mesh/mesh"
)

// Defaults.
const (
	// DefaultBufferSize is the default bound of the bytes in flight in one
	// direction of a connection.
	DefaultBufferSize = 256 << 10
	// DefaultDialTimeout is how long, by default, a dial to an unreachable
	// host hangs before it fails.
	DefaultDialTimeout = time.Second
	// DefaultBacklog is the default bound of the connections waiting to be
	// accepted by one listener.
	DefaultBacklog = 1024
	// firstListenPort is where the search for a free port starts when a
	// host listens on port 0; dialled connections use ports from
	// firstEphemeralPort up.
	firstListenPort    = 10000
	firstEphemeralPort = 40000
)

// networkName is what Addr.Network returns.
const networkName = "memnet"

// Config holds the settings of a Network.
type Config struct {
	// Seed seeds the random choices; 0 picks a seed from the clock. The
	// seed in use is returned by Network.Seed.
	Seed uint64
	// BufferSize bounds the bytes written in one direction of a connection
	// and not yet read; 0 means DefaultBufferSize.
	BufferSize int
	// DialTimeout is how long a dial to an unreachable host hangs before
	// it fails with a timeout; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// Backlog bounds the connections waiting to be accepted on one
	// listener; dials beyond it are refused. 0 means DefaultBacklog.
	Backlog int
}

// Network is a set of hosts and the links between them. Its methods are
// safe for concurrent use.
//
// Locking, in the order locks are taken: Network.mu guards hosts,
// listeners and faults, which change rarely: dials only read them;
// Network.pairsMu guards the set of connections; each listener's mu its
// queue; each host's portsMu its ports; each direction of a connection (a
// pipe) has its own mutex. Closing a connection takes none of these but
// its host's portsMu: it leaves the pair on Network.dead, from which the
// next holder of pairsMu removes it. With a thousand hosts, thousands of
// connections dial, accept and close at once, and a single lock for all of
// it queued them behind one another for minutes.
type Network struct {
	cfg  Config
	seed uint64

	mu          sync.RWMutex
	closed      bool
	hosts       map[string]*Host
	cuts        map[link]bool
	group       map[string]int
	latency     time.Duration
	jitter      time.Duration
	linkLatency map[link]time.Duration
	pairsMu     sync.Mutex
	pairs       map[*connPair]struct{} // guarded by pairsMu
	// dials counts the connections made so far from one host to a port
	// of another: it numbers them for their jitter sources. Guarded by
	// pairsMu.
	dials map[dialKey]uint64
	// deadMu guards dead: pairs closed at both ends, still in pairs until
	// sweepLocked removes them.
	deadMu sync.Mutex
	dead   []*connPair
	// changed is closed and replaced whenever reachability changes or a
	// host appears, to wake dials waiting for a path.
	changed chan struct{}
}

// link is one direction between two hosts.
type link struct{ from, to string }

// dialKey is a dialling host and the host and port it dials.
type dialKey struct {
	from, to string
	port     int
}

// New returns an empty network.
func New(cfg Config) *Network {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog
	}
	seed := cfg.Seed
	for seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	return &Network{
		cfg:         cfg,
		seed:        seed,
		hosts:       make(map[string]*Host),
		cuts:        make(map[link]bool),
		group:       make(map[string]int),
		linkLatency: make(map[link]time.Duration),
		pairs:       make(map[*connPair]struct{}),
		dials:       make(map[dialKey]uint64),
		changed:     make(chan struct{}),
	}
}

// Seed returns the seed of the network's random choices: pass it as
// Config.Seed to repeat them.
func (n *Network) Seed() uint64 { return n.seed }

// String describes the network by its seed, for test logs.
func (n *Network) String() string { return fmt.Sprintf("memnet(seed=%d)", n.seed) }

// Host returns the host with the given address (an IP address or any name
// without a port), creating it on first use.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.hosts[name]
	if !ok {
		h = &Host{
			net:           n,
			name:          name,
			listeners:     make(map[int]*listener),
			ports:         make(map[int]bool),
			pairs:         make(map[*connPair]struct{}),
			nextListen:    firstListenPort,
			nextEphemeral: firstEphemeralPort,
		}
		n.hosts[name] = h
		n.changedLocked()
	}
	return h
}

// Hosts returns the names of the hosts created so far, sorted.
func (n *Network) Hosts() []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]string, 0, len(n.hosts))
	for name := range n.hosts {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Conns returns the number of connections open on the network: neither
// reset nor closed at both ends.
func (n *Network) Conns() int {
	n.pairsMu.Lock()
	defer n.pairsMu.Unlock()
	n.sweepLocked()
	return len(n.pairs)
}

// Made returns the number of connections made on the network so far,
// open or not.
func (n *Network) Made() uint64 {
	n.pairsMu.Lock()
	defer n.pairsMu.Unlock()
	var total uint64
	for _, count := range n.dials {
		total += count
	}
	return total
}

// Close closes every listener and resets every connection; later dials
// and listens fail.
func (n *Network) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for _, h := range n.hosts {
		for _, l := range h.listeners {
			l.closeLocked()
		}
	}
	n.pairsMu.Lock()
	n.sweepLocked()
	for p := range n.pairs {
		n.resetLocked(p)
	}
	n.pairsMu.Unlock()
	n.changedLocked()
}

// Cut cuts the link between hosts a and b in both directions.
func (n *Network) Cut(a, b string) {
	n.setCuts(true, link{a, b}, link{b, a})
}

// CutOneWay cuts the link from one host to another: bytes from from to to
// are held back, bytes the other way still flow.
func (n *Network) CutOneWay(from, to string) {
	n.setCuts(true, link{from, to})
}

// Heal heals the link between a and b in both directions; held bytes are
// delivered. Partitions are not affected.
func (n *Network) Heal(a, b string) {
	n.setCuts(false, link{a, b}, link{b, a})
}

// HealOneWay heals the link from one host to another.
func (n *Network) HealOneWay(from, to string) {
	n.setCuts(false, link{from, to})
}

func (n *Network) setCuts(cut bool, links ...link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range links {
		if cut {
			n.cuts[l] = true
		} else {
			delete(n.cuts, l)
		}
	}
	n.refreshLocked()
}

// Partition splits the network: hosts in different groups cannot reach
// each other. Hosts named in no group form one more group together. It
// replaces any earlier partition; cuts made with Cut stay.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = make(map[string]int)
	for i, g := range groups {
		for _, h := range g {
			n.group[h] = i + 1
		}
	}
	n.refreshLocked()
}

// HealPartition undoes Partition.
func (n *Network) HealPartition() {
	n.Partition()
}

// HealAll removes every cut and the partition.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cuts = make(map[link]bool)
	n.group = make(map[string]int)
	n.refreshLocked()
}

// Reachable reports whether bytes flow from one host to another now.
func (n *Network) Reachable(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.reachableLocked(from, to)
}

func (n *Network) reachableLocked(from, to string) bool {
	if _, ok := n.hosts[to]; !ok {
		return false
	}
	return from == to || !n.cuts[link{from, to}] && n.group[from] == n.group[to]
}

// SetLatency sets the one-way latency of every link without a latency of
// its own, and the jitter added to every link: a random delay in
// [0, jitter) drawn for each write. Bytes stay in order.
func (n *Network) SetLatency(latency, jitter time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.latency, n.jitter = latency, jitter
	n.refreshLocked()
}

// SetLinkLatency sets the one-way latency between a and b, both ways;
// a negative latency returns the link to the global one.
func (n *Network) SetLinkLatency(a, b string, latency time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range []link{{a, b}, {b, a}} {
		if latency < 0 {
			delete(n.linkLatency, l)
		} else {
			n.linkLatency[l] = latency
		}
	}
	n.refreshLocked()
}

func (n *Network) latencyLocked(from, to string) time.Duration {
	if d, ok := n.linkLatency[link{from, to}]; ok {
		return d
	}
	return n.latency
}

// Stall makes host stop reading (see the package documentation).
func (n *Network) Stall(host string) { n.setStalled(host, true) }

// Unstall lets a stalled host read again.
func (n *Network) Unstall(host string) { n.setStalled(host, false) }

func (n *Network) setStalled(host string, stalled bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.hosts[host]
	if !ok {
		return
	}
	h.stalled = stalled
	n.pairsMu.Lock()
	defer n.pairsMu.Unlock()
	n.sweepLocked()
	for p := range h.pairs {
		for _, pp := range p.pipes() {
			if pp.to == host {
				pp.setStalled(stalled)
			}
		}
	}
}

// Reset resets every connection between hosts a and b, and returns how
// many there were.
func (n *Network) Reset(a, b string) int {
	return n.resetWhere(func(p *connPair) bool {
		return p.hostA == a && p.hostB == b || p.hostA == b && p.hostB == a
	})
}

// ResetHost resets every connection of host, and returns how many there
// were.
func (n *Network) ResetHost(host string) int {
	return n.resetWhere(func(p *connPair) bool { return p.hostA == host || p.hostB == host })
}

// ResetAll resets every connection, and returns how many there were.
func (n *Network) ResetAll() int {
	return n.resetWhere(func(*connPair) bool { return true })
}

func (n *Network) resetWhere(match func(*connPair) bool) int {
	n.pairsMu.Lock()
	defer n.pairsMu.Unlock()
	n.sweepLocked()
	count := 0
	for p := range n.pairs {
		if match(p) {
			n.resetLocked(p)
			count++
		}
	}
	return count
}

// resetLocked resets both directions of p and forgets it. pairsMu is
// held.
func (n *Network) resetLocked(p *connPair) {
	p.ab.reset()
	p.ba.reset()
	n.forgetLocked(p)
}

// retire records that p is closed at both ends, for sweepLocked.
func (n *Network) retire(p *connPair) {
	n.deadMu.Lock()
	n.dead = append(n.dead, p)
	n.deadMu.Unlock()
}

// sweepLocked forgets the pairs retired since the last sweep. pairsMu is
// held.
func (n *Network) sweepLocked() {
	n.deadMu.Lock()
	dead := n.dead
	n.dead = nil
	n.deadMu.Unlock()
	for _, p := range dead {
		n.forgetLocked(p)
	}
}

// forgetLocked removes p from the set of connections. pairsMu is held.
func (n *Network) forgetLocked(p *connPair) {
	delete(n.pairs, p)
	delete(p.a.host.pairs, p)
	delete(p.b.host.pairs, p)
}

// refreshLocked applies the current faults to every connection and wakes
// the dials waiting for a path.
func (n *Network) refreshLocked() {
	n.pairsMu.Lock()
	n.sweepLocked()
	now := time.Now()
	for p := range n.pairs {
		for _, pp := range p.pipes() {
			pp.setLink(!n.reachableLocked(pp.from, pp.to), n.latencyLocked(pp.from, pp.to), n.jitter, now)
		}
	}
	n.pairsMu.Unlock()
	n.changedLocked()
}

func (n *Network) changedLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// Host is one address of the network. It implements mesh.Transport.
type Host struct {
	net  *Network
	name string

	// Guarded by net.mu.
	listeners map[int]*listener
	stalled   bool

	pairs map[*connPair]struct{} // guarded by net.pairsMu

	// Guarded by portsMu, taken after net.mu when both are needed.
	portsMu       sync.Mutex
	ports         map[int]bool // listening ports and local ports of dialled connections
	nextListen    int
	nextEphemeral int
}

var _ mesh.Transport = (*Host)(nil)

// Name returns the host's address.
func (h *Host) Name() string { return h.name }

// Addr returns the host's address with the given port.
func (h *Host) Addr(port int) Addr { return Addr{Host: h.name, Port: port} }

// Listen implements mesh.Transport. address is "host:port" where host is
// this host's name or empty or an unspecified address (0.0.0.0, ::), and
// port 0 picks a free port.
func (h *Host) Listen(address string) (net.Listener, error) {
	host, port, err := splitAddress(address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: networkName, Err: err}
	}
	if host != "" && host != h.name && host != "0.0.0.0" && host != "::" {
		return nil, &net.OpError{Op: "listen", Net: networkName, Addr: Addr{host, port}, Err: syscall.EADDRNOTAVAIL}
	}
	n := h.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, &net.OpError{Op: "listen", Net: networkName, Addr: h.Addr(port), Err: net.ErrClosed}
	}
	if port == 0 {
		port = h.claimFreePort(&h.nextListen, firstListenPort, firstEphemeralPort)
		if port == 0 {
			return nil, &net.OpError{Op: "listen", Net: networkName, Addr: h.Addr(0), Err: syscall.EADDRINUSE}
		}
	} else if !h.claimPort(port) {
		return nil, &net.OpError{Op: "listen", Net: networkName, Addr: h.Addr(port), Err: syscall.EADDRINUSE}
	}
	l := &listener{host: h, port: port, notify: make(chan struct{})}
	h.listeners[port] = l
	return l, nil
}

// claimFreePort marks as used and returns a free port in [lo, hi),
// searching from *next (which it advances), or returns 0 if there is none.
func (h *Host) claimFreePort(next *int, lo, hi int) int {
	h.portsMu.Lock()
	defer h.portsMu.Unlock()
	for range hi - lo {
		p := *next
		*next++
		if *next >= hi {
			*next = lo
		}
		if !h.ports[p] {
			h.ports[p] = true
			return p
		}
	}
	return 0
}

// claimPort marks port as used, unless it is already.
func (h *Host) claimPort(port int) bool {
	h.portsMu.Lock()
	defer h.portsMu.Unlock()
	if h.ports[port] {
		return false
	}
	h.ports[port] = true
	return true
}

// releasePort marks port as free.
func (h *Host) releasePort(port int) {
	h.portsMu.Lock()
	delete(h.ports, port)
	h.portsMu.Unlock()
}

// Dial is DialContext without a context.
func (h *Host) Dial(address string) (net.Conn, error) {
	return h.DialContext(context.Background(), address)
}

// DialContext implements mesh.Transport: it connects to a listener of
// another host (or of this one), as described in the package
// documentation.
func (h *Host) DialContext(ctx context.Context, address string) (net.Conn, error) {
	host, port, err := splitAddress(address)
	if err == nil && (host == "" || port == 0) {
		err = fmt.Errorf("memnet: missing host or port in %q", address)
	}
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: networkName, Err: err}
	}
	n := h.net
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: networkName, Addr: Addr{host, port}, Err: err}
	}
	timeout := time.NewTimer(n.cfg.DialTimeout)
	defer timeout.Stop()
	// Allocated before Network.mu is taken: an allocation can make its
	// goroutine assist the garbage collector, and every other dial, accept
	// and fault would wait for it.
	shell := newPairShell()
	roundTripDone := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, opErr(err)
		}
		n.mu.RLock()
		if n.closed {
			n.mu.RUnlock()
			return nil, opErr(net.ErrClosed)
		}
		if n.reachableLocked(h.name, host) && n.reachableLocked(host, h.name) {
			rtt := n.latencyLocked(h.name, host) + n.latencyLocked(host, h.name)
			if rtt > 0 && !roundTripDone {
				n.mu.RUnlock()
				roundTripDone = true
				if err := sleepContext(ctx, rtt); err != nil {
					return nil, opErr(err)
				}
				continue // the path may have changed meanwhile
			}
			c, err := h.connectLocked(n.hosts[host], port, shell)
			n.mu.RUnlock()
			if err != nil {
				return nil, opErr(err)
			}
			return c, nil
		}
		changed := n.changed
		n.mu.RUnlock()
		select {
		case <-ctx.Done():
			return nil, opErr(ctx.Err())
		case <-timeout.C:
			return nil, opErr(os.ErrDeadlineExceeded)
		case <-changed:
		}
	}
}

// newPairShell allocates what a connection is made of, to be filled in by
// connectLocked.
func newPairShell() *connPair {
	p := &connPair{
		ab: &pipe{notify: make(chan struct{})},
		ba: &pipe{notify: make(chan struct{})},
	}
	p.a = &Conn{pair: p, rd: p.ba, wr: p.ab, rdl: newDeadline(), wdl: newDeadline()}
	p.b = &Conn{pair: p, rd: p.ab, wr: p.ba, rdl: newDeadline(), wdl: newDeadline()}
	return p
}

// connectLocked makes a connection from h to port of remote out of p (from
// newPairShell) and queues its far end on the listener. Network.mu is held
// for reading.
func (h *Host) connectLocked(remote *Host, port int, p *connPair) (*Conn, error) {
	n := h.net
	l := remote.listeners[port]
	if l == nil {
		return nil, syscall.ECONNREFUSED
	}
	n.pairsMu.Lock()
	defer n.pairsMu.Unlock()
	n.sweepLocked()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.queue) >= n.cfg.Backlog {
		return nil, syscall.ECONNREFUSED
	}
	local := h.claimFreePort(&h.nextEphemeral, firstEphemeralPort, 65536)
	if local == 0 {
		return nil, syscall.EADDRNOTAVAIL
	}
	key := dialKey{h.name, remote.name, port}
	n.dials[key]++
	p.hostA, p.hostB = h.name, remote.name
	n.initPipeLocked(p.ab, h.name, remote.name, jitterStream(key, n.dials[key], false))
	n.initPipeLocked(p.ba, remote.name, h.name, jitterStream(key, n.dials[key], true))
	p.a.host, p.a.localPort, p.a.local, p.a.remote = h, local, Addr{h.name, local}, Addr{remote.name, port}
	p.b.host, p.b.local, p.b.remote = remote, Addr{remote.name, port}, Addr{h.name, local}
	n.pairs[p] = struct{}{}
	h.pairs[p] = struct{}{}
	remote.pairs[p] = struct{}{}
	l.queue = append(l.queue, p.b)
	l.signalLocked()
	return p.a, nil
}

// jitterStream identifies the jitter source of one direction of the
// count-th connection made from key.from to key.port of key.to: a 64-bit
// FNV-1a hash of the three, the count and the direction (back is from the
// listener to the dialler), so that each pipe draws a sequence of its own.
// It allocates nothing: it runs under Network.pairsMu.
func jitterStream(key dialKey, count uint64, back bool) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	byteIn := func(b byte) { h = (h ^ uint64(b)) * prime }
	uintIn := func(v uint64) {
		for shift := 56; shift >= 0; shift -= 8 {
			byteIn(byte(v >> shift))
		}
	}
	for _, s := range [2]string{key.from, key.to} {
		uintIn(uint64(len(s)))
		for i := range len(s) {
			byteIn(s[i])
		}
	}
	uintIn(uint64(key.port))
	uintIn(count)
	if back {
		byteIn(1)
	} else {
		byteIn(0)
	}
	return h
}

// initPipeLocked fills in a pipe of newPairShell.
func (n *Network) initPipeLocked(p *pipe, from, to string, stream uint64) {
	p.seed = n.seed
	p.stream = stream
	p.from, p.to = from, to
	p.cap = n.cfg.BufferSize
	p.latency = n.latencyLocked(from, to)
	p.jitter = n.jitter
	p.stalled = n.hosts[to].stalled
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// splitAddress splits "host:port".
func splitAddress(address string) (string, int, error) {
	host, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("memnet: invalid port in %q", address)
	}
	return host, port, nil
}

// Addr is the address of a listener or of one end of a connection.
type Addr struct {
	Host string
	Port int
}

// Network returns "memnet".
func (a Addr) Network() string { return networkName }

// String returns "host:port".
func (a Addr) String() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// listener implements net.Listener.
type listener struct {
	host *Host
	port int

	mu     sync.Mutex
	queue  []*Conn
	closed bool
	notify chan struct{} // closed and replaced when queue or closed change
}

func (l *listener) signalLocked() {
	close(l.notify)
	l.notify = make(chan struct{})
}

// Accept waits for the next connection.
func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, &net.OpError{Op: "accept", Net: networkName, Addr: l.Addr(), Err: net.ErrClosed}
		}
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		ch := l.notify
		l.mu.Unlock()
		<-ch
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *listener) Close() error {
	n := l.host.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if !l.closeLocked() {
		return &net.OpError{Op: "close", Net: networkName, Addr: l.Addr(), Err: net.ErrClosed}
	}
	return nil
}

// closeLocked closes l, unless it is already, and reports whether it did.
// Network.mu is held.
func (l *listener) closeLocked() bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	queue := l.queue
	l.queue = nil
	l.signalLocked()
	l.mu.Unlock()
	delete(l.host.listeners, l.port)
	l.host.releasePort(l.port)
	n := l.host.net
	n.pairsMu.Lock()
	for _, c := range queue {
		n.resetLocked(c.pair)
	}
	n.pairsMu.Unlock()
	return true
}

// Addr returns the address listened on.
func (l *listener) Addr() net.Addr { return l.host.Addr(l.port) }
