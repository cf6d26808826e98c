package memnet

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dialPair connects from host a to port of host b, listening there first
// if need be, and returns the two pipes of the connection: a to b, and b
// to a. The connection is left in the listener's queue.
func dialPair(t *testing.T, n *Network, a, b string, port int) (ab, ba *pipe) {
	t.Helper()
	addr := net.JoinHostPort(b, strconv.Itoa(port))
	h := n.Host(b)
	n.mu.Lock()
	_, listening := h.listeners[port]
	n.mu.Unlock()
	if !listening {
		l, err := h.Listen(addr)
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
	}
	c, err := n.Host(a).Dial(addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	mc := c.(*Conn)
	return mc.wr, mc.rd
}

// draws returns the next count jitter delays of p.
func draws(p *pipe, count int) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]time.Duration, count)
	for i := range out {
		out[i] = p.jitterDelayLocked()
	}
	return out
}

// Each direction of each connection draws its jitter from a source of its
// own, fixed by the seed, the hosts, the port and the number of the
// connection: what other connections draw, and when, changes nothing.
func TestJitterPerPipe(t *testing.T) {
	const seed = 42
	newNet := func(seed uint64) *Network {
		n := New(Config{Seed: seed})
		n.SetLatency(0, time.Second)
		return n
	}
	quiet := newNet(seed)
	qab, qba := dialPair(t, quiet, "a", "b", 1)
	qab2, _ := dialPair(t, quiet, "a", "b", 1)

	// The same connections, with others made before, between and after,
	// on which bytes are written and jitter drawn.
	busy := newNet(seed)
	xab, xba := dialPair(t, busy, "c", "d", 1)
	xac, _ := dialPair(t, busy, "a", "c", 1)
	draws(xab, 10)
	none := newDeadline()
	_, err := xac.write([]byte("some bytes"), &none)
	require.NoError(t, err)
	bab, bba := dialPair(t, busy, "a", "b", 1)
	draws(xba, 7)
	dialPair(t, busy, "b", "a", 1)
	dialPair(t, busy, "a", "b", 2)
	bab2, _ := dialPair(t, busy, "a", "b", 1)

	want := draws(qab, 50)
	require.Equal(t, want, draws(bab, 50), "a to b, first connection")
	require.Equal(t, draws(qba, 50), draws(bba, 50), "b to a, first connection")
	require.Equal(t, draws(qab2, 50), draws(bab2, 50), "a to b, second connection")

	// Another direction, connection, port or seed draws another sequence.
	fresh := func(seed uint64, a, b string, port int) *pipe {
		p, _ := dialPair(t, newNet(seed), a, b, port)
		return p
	}
	_, back := dialPair(t, newNet(seed), "a", "b", 1)
	twice := newNet(seed)
	dialPair(t, twice, "a", "b", 1)
	second, _ := dialPair(t, twice, "a", "b", 1)
	for what, p := range map[string]*pipe{
		"b to a":            back,
		"b dialling a":      fresh(seed, "b", "a", 1),
		"second connection": second,
		"another port":      fresh(seed, "a", "b", 2),
		"another seed":      fresh(seed+1, "a", "b", 1),
	} {
		require.NotEqual(t, want, draws(p, 50), what)
	}
}
