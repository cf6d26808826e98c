package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Protection against connection floods.
//
// Every accepted connection costs a goroutine, a read buffer and, with a
// password, a key exchange, for up to HandshakeTimeout before the remote
// has proved anything. The accept guard decides, before any of that is
// spent, whether a new connection gets a handshake at all: a token bucket
// bounds the rate of handshakes started, and caps bound the handshakes in
// progress overall and from any one IP address. A connection refused is
// reset at once, from the accept loop, without a goroutine of its own. A
// peer that joins legitimately is refused only while one of the caps is
// reached, and its connection maker retries with backoff.
//
// The guard does no I/O and reads no clock (the caller passes the time),
// so its decisions are tested deterministically.

// AcceptLimits bounds the incoming connections a router starts handshakes
// for. The zero value of each field selects its default.
type AcceptLimits struct {
	// Rate is how many incoming connections per second, in the long run,
	// get a handshake; 0 means DefaultAcceptRate.
	Rate float64
	// Burst is how many incoming connections may get a handshake at once
	// when none arrived for a while; 0 means DefaultAcceptBurst.
	Burst int
	// MaxPending bounds the handshakes in progress at once on incoming
	// connections; 0 means DefaultMaxPendingHandshakes.
	MaxPending int
	// MaxPendingPerIP bounds the handshakes in progress at once on
	// incoming connections from one IP address; 0 means
	// DefaultMaxPendingHandshakesPerIP. Connections over a transport
	// without IP addresses are counted by remote address.
	MaxPendingPerIP int
}

// Default accept limits.
const (
	// DefaultAcceptRate is the steady rate of incoming connections that
	// get a handshake, per second.
	DefaultAcceptRate = 64
	// DefaultAcceptBurst is how many incoming connections may get a
	// handshake at once, above the steady rate.
	DefaultAcceptBurst = 256
	// DefaultMaxPendingHandshakes bounds the handshakes in progress on
	// incoming connections.
	DefaultMaxPendingHandshakes = 256
	// DefaultMaxPendingHandshakesPerIP bounds the handshakes in progress
	// on incoming connections from one IP address.
	DefaultMaxPendingHandshakesPerIP = 64
)

// Why the guard refuses a connection.
var (
	errAcceptRate      = errors.New("mesh: incoming connection rate over the limit")
	errAcceptPending   = errors.New("mesh: too many handshakes in progress")
	errAcceptPendingIP = errors.New("mesh: too many handshakes in progress from this address")
)

// withDefaults returns l with defaults in place of zero fields.
func (l AcceptLimits) withDefaults() AcceptLimits {
	if l.Rate == 0 {
		l.Rate = DefaultAcceptRate
	}
	if l.Burst == 0 {
		l.Burst = DefaultAcceptBurst
	}
	if l.MaxPending == 0 {
		l.MaxPending = DefaultMaxPendingHandshakes
	}
	if l.MaxPendingPerIP == 0 {
		l.MaxPendingPerIP = DefaultMaxPendingHandshakesPerIP
	}
	return l
}

// validate reports a field out of range.
func (l AcceptLimits) validate() error {
	switch {
	case l.Rate < 0 || l.Rate != l.Rate: // negative or NaN
		return fmt.Errorf("mesh: accept rate %v is negative", l.Rate)
	case l.Burst < 0 || l.MaxPending < 0 || l.MaxPendingPerIP < 0:
		return errors.New("mesh: negative accept burst or pending handshake limit")
	}
	return nil
}

// acceptGuard admits or refuses incoming connections. It is safe for
// concurrent use: the accept loop admits, connection goroutines release.
type acceptGuard struct {
	limits AcceptLimits

	mu      sync.Mutex
	tokens  float64
	last    time.Time // when tokens was last brought up to date
	started bool      // last is set
	pending int
	perIP   map[string]int
	refused [3]uint64 // by reason: rate, pending, pending per address
}

func newAcceptGuard(l AcceptLimits) *acceptGuard {
	l = l.withDefaults()
	return &acceptGuard{limits: l, tokens: float64(l.Burst), perIP: make(map[string]int)}
}

// admit decides whether a connection from the address key (see
// remoteIPKey) gets a handshake at time now. When it does, the caller must
// call release once the handshake has ended, whatever its outcome; release
// may be called more than once. When it does not, the error says which
// limit was reached.
func (g *acceptGuard) admit(key string, now time.Time) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refill(now)
	switch {
	case g.perIP[key] >= g.limits.MaxPendingPerIP:
		g.refused[2]++
		return nil, errAcceptPendingIP
	case g.pending >= g.limits.MaxPending:
		g.refused[1]++
		return nil, errAcceptPending
	case g.tokens < 1:
		g.refused[0]++
		return nil, errAcceptRate
	}
	g.tokens--
	g.pending++
	g.perIP[key]++
	var once sync.Once
	return func() { once.Do(func() { g.release(key) }) }, nil
}

// refill adds the tokens earned since the last call. A clock that goes
// back earns nothing.
func (g *acceptGuard) refill(now time.Time) {
	if g.started {
		if d := now.Sub(g.last); d > 0 {
			g.tokens = min(float64(g.limits.Burst), g.tokens+d.Seconds()*g.limits.Rate)
		}
	}
	if !g.started || now.After(g.last) {
		g.last, g.started = now, true
	}
}

func (g *acceptGuard) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending--
	if n := g.perIP[key] - 1; n > 0 {
		g.perIP[key] = n
	} else {
		delete(g.perIP, key)
	}
}

// acceptGuardStats is a snapshot of the guard's counters.
type acceptGuardStats struct {
	Pending      int
	Addresses    int    // addresses with handshakes in progress
	RefusedRate  uint64 // refused because of the rate
	RefusedTotal uint64 // refused because of the cap on handshakes
	RefusedPerIP uint64 // refused because of the cap per address
}

func (g *acceptGuard) stats() acceptGuardStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return acceptGuardStats{
		Pending:      g.pending,
		Addresses:    len(g.perIP),
		RefusedRate:  g.refused[0],
		RefusedTotal: g.refused[1],
		RefusedPerIP: g.refused[2],
	}
}

// remoteIPKey returns the key under which connections from addr are
// counted: the IP address (IPv4-mapped IPv6 addresses as IPv4), or the
// host part or whole address for transports without IP addresses.
func remoteIPKey(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if a, ok := addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap().String()
		}
	}
	s := addr.String()
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().String()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// admitConnection runs an accepted connection past the guard. It returns a
// function to call when the connection's handshake ends, or false after
// resetting a connection it refuses.
func (router *Router) admitConnection(conn net.Conn) (release func(), ok bool) {
	key := remoteIPKey(conn.RemoteAddr())
	release, err := router.acceptGuard.admit(key, time.Now())
	if err != nil {
		abortConn(conn)
		router.logLimited(logKey{kind: "accept refused: " + err.Error()},
			fmt.Sprintf("->[%s] connection refused before the handshake: %v (further refusals for this reason are not logged for a minute)", conn.RemoteAddr(), err), conn.RemoteAddr(), err)
		return nil, false
	}
	return release, true
}
