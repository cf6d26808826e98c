package mesh

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var guardEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// admitN admits n connections from key at now and returns their releases;
// it fails the test if one is refused.
func admitN(t *testing.T, g *acceptGuard, key string, now time.Time, n int) []func() {
	t.Helper()
	var out []func()
	for i := range n {
		release, err := g.admit(key, now)
		require.NoError(t, err, "connection %d from %s", i, key)
		out = append(out, release)
	}
	return out
}

func TestAcceptGuardDefaults(t *testing.T) {
	g := newAcceptGuard(AcceptLimits{})
	require.Equal(t, AcceptLimits{
		Rate:            DefaultAcceptRate,
		Burst:           DefaultAcceptBurst,
		MaxPending:      DefaultMaxPendingHandshakes,
		MaxPendingPerIP: DefaultMaxPendingHandshakesPerIP,
	}, g.limits)
	require.Less(t, DefaultMaxPendingHandshakesPerIP, DefaultMaxPendingHandshakes,
		"one address alone cannot take every place")
	l := AcceptLimits{Rate: 1.5, Burst: 2, MaxPending: 3, MaxPendingPerIP: 4}
	require.Equal(t, l, newAcceptGuard(l).limits)
}

func TestAcceptLimitsValidate(t *testing.T) {
	require.NoError(t, AcceptLimits{}.validate())
	for _, l := range []AcceptLimits{{Rate: -1}, {Burst: -1}, {MaxPending: -1}, {MaxPendingPerIP: -1}} {
		require.Error(t, l.validate(), "%+v", l)
	}
	nan := 0.0
	nan /= nan
	require.Error(t, AcceptLimits{Rate: nan}.validate())
	_, err := NewRouter(Config{Accept: AcceptLimits{MaxPending: -1}}, testPeerName(1), "", nil, nil)
	require.Error(t, err)
}

// The token bucket lets a burst through, then the steady rate.
func TestAcceptGuardRate(t *testing.T) {
	g := newAcceptGuard(AcceptLimits{Rate: 10, Burst: 5, MaxPending: 1000, MaxPendingPerIP: 1000})
	now := guardEpoch
	for _, release := range admitN(t, g, "a", now, 5) {
		release()
	}
	_, err := g.admit("a", now)
	require.ErrorIs(t, err, errAcceptRate)
	// 10 per second: one more after 100 ms, not before.
	_, err = g.admit("a", now.Add(99*time.Millisecond))
	require.ErrorIs(t, err, errAcceptRate)
	now = now.Add(100 * time.Millisecond)
	admitN(t, g, "b", now, 1)
	_, err = g.admit("b", now)
	require.ErrorIs(t, err, errAcceptRate)
	// A long pause refills up to the burst only.
	now = now.Add(time.Hour)
	admitN(t, g, "c", now, 5)
	_, err = g.admit("c", now)
	require.ErrorIs(t, err, errAcceptRate)
	// A clock that goes back earns nothing and does not break the bucket.
	_, err = g.admit("c", now.Add(-time.Minute))
	require.ErrorIs(t, err, errAcceptRate)
	admitN(t, g, "c", now.Add(100*time.Millisecond), 1)
	s := g.stats()
	require.Equal(t, uint64(5), s.RefusedRate)
	require.Zero(t, s.RefusedTotal+s.RefusedPerIP)
}

// Handshakes in progress are capped overall and per address; places free
// up when handshakes end.
func TestAcceptGuardPending(t *testing.T) {
	g := newAcceptGuard(AcceptLimits{Rate: 1e6, Burst: 1e6, MaxPending: 5, MaxPendingPerIP: 2})
	now := guardEpoch
	a := admitN(t, g, "10.0.0.1", now, 2)
	_, err := g.admit("10.0.0.1", now)
	require.ErrorIs(t, err, errAcceptPendingIP)
	b := admitN(t, g, "10.0.0.2", now, 2)
	c := admitN(t, g, "10.0.0.3", now, 1)
	// Five in progress: everyone else waits, even a new address.
	_, err = g.admit("10.0.0.4", now)
	require.ErrorIs(t, err, errAcceptPending)
	s := g.stats()
	require.Equal(t, 5, s.Pending)
	require.Equal(t, 3, s.Addresses)

	// Releasing is idempotent and frees exactly one place.
	a[0]()
	a[0]()
	require.Equal(t, 4, g.stats().Pending)
	admitN(t, g, "10.0.0.4", now, 1)
	_, err = g.admit("10.0.0.1", now)
	require.ErrorIs(t, err, errAcceptPending)

	for _, r := range append(append(a[1:], b...), c...) {
		r()
	}
	s = g.stats()
	require.Equal(t, 1, s.Pending)
	require.Equal(t, 1, s.Addresses, "addresses with nothing in progress are forgotten")
	admitN(t, g, "10.0.0.1", now, 2)
	require.Equal(t, uint64(1), g.stats().RefusedPerIP)
	require.Equal(t, uint64(2), g.stats().RefusedTotal)
}

// A connection refused for a cap costs no token, so a flood held back by
// the per-address cap does not starve other peers of the rate.
func TestAcceptGuardRefusalCostsNoToken(t *testing.T) {
	g := newAcceptGuard(AcceptLimits{Rate: 1, Burst: 3, MaxPending: 100, MaxPendingPerIP: 1})
	now := guardEpoch
	admitN(t, g, "flood", now, 1)
	for range 1000 {
		_, err := g.admit("flood", now)
		require.ErrorIs(t, err, errAcceptPendingIP)
	}
	admitN(t, g, "peer1", now, 1)
	admitN(t, g, "peer2", now, 1)
}

func TestRemoteIPKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 4000}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, "2001:db8::1"},
		{fakeAddr("198.51.100.7:6783"), "198.51.100.7"},
		{fakeAddr("[2001:db8::2]:6783"), "2001:db8::2"},
		{fakeAddr("node-3:6783"), "node-3"},
		{fakeAddr("pipe"), "pipe"},
		{nil, ""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, remoteIPKey(tt.addr), "%v", tt.addr)
	}
}
