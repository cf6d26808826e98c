package mesh

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNormaliseAddress(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.1:7000", "10.0.0.1:7000"},
		{"10.0.0.1", "10.0.0.1:6783"},
		{"host.example", "host.example:6783"},
		{"[::1]:80", "[::1]:80"},
		{"::1", "[::1]:6783"},
	} {
		got, err := normaliseAddress(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got)
	}
	for _, bad := range []string{"", ":80", "host:0", "host:99999", "host:x", "[::1"} {
		_, err := normaliseAddress(bad)
		require.Error(t, err, bad)
	}
}

func newTestRouter(t *testing.T) *Router {
	r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(1), "test", nil, nil)
	require.NoError(t, err)
	return r
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	cm := newTestRouter(t).ConnectionMaker
	prevMax := time.Duration(0)
	for n := 1; n < 30; n++ {
		for i := 0; i < 50; i++ {
			d := cm.backoff(n)
			base := min(initialRetryDelay<<min(n-1, 20), maxRetryDelay)
			require.GreaterOrEqual(t, d, base*3/4, "attempt %d", n)
			require.LessOrEqual(t, d, base*5/4, "attempt %d", n)
			prevMax = max(prevMax, d)
		}
	}
	require.LessOrEqual(t, prevMax, maxRetryDelay*5/4)
}

func TestTargetsLifecycle(t *testing.T) {
	cm := newTestRouter(t).ConnectionMaker
	errs := cm.InitiateConnections([]string{"a.example:1", "b.example", "bad:port:x"}, false)
	require.Len(t, errs, 1)
	require.Equal(t, []string{"a.example:1", "b.example:6783"}, cm.Targets(false))
	cm.InitiateConnections([]string{"c.example:3"}, true)
	require.Equal(t, []string{"c.example:3"}, cm.Targets(false))
	cm.ForgetConnections([]string{"c.example:3"})
	require.Empty(t, cm.Targets(false))
}

func TestAttemptEndedPolicy(t *testing.T) {
	cm := newTestRouter(t).ConnectionMaker
	cm.InitiateConnections([]string{"a.example:1"}, false)
	tg := cm.targets["a.example:1"]

	tg.state, tg.attempts = targetAttempting, 3
	cm.attemptEnded(tg, time.Time{}, errors.New("refused"))
	require.Equal(t, targetWaiting, tg.state)
	require.Equal(t, 3, tg.attempts)
	require.True(t, tg.tryAfter.After(time.Now()))

	// A long-lived connection resets the backoff.
	tg.state = targetConnected
	cm.attemptEnded(tg, time.Now().Add(-2*longLivedConnection), errors.New("reset"))
	require.Equal(t, 0, tg.attempts)

	// Ourselves and name collisions are never retried.
	for _, err := range []error{ErrConnectToSelf, ErrNameCollision} {
		tg.state = targetAttempting
		cm.attemptEnded(tg, time.Time{}, err)
		require.Equal(t, targetGivenUp, tg.state)
		require.True(t, cm.launchDue(time.Now().Add(time.Hour)).IsZero(), "nothing to dial")
	}
	// Asking again revives it.
	cm.InitiateConnections([]string{"a.example:1"}, false)
	require.Equal(t, targetWaiting, tg.state)
}

// A discovered connection that ends soon is backed off, not forgotten and
// redialled at once.
func TestShortDiscoveredConnectionBacksOff(t *testing.T) {
	cm := newTestRouter(t).ConnectionMaker
	tg := &target{addr: "b.example:1", state: targetConnected, attempts: 1}
	cm.targets[tg.addr] = tg
	cm.attemptEnded(tg, time.Now(), errors.New("reset by peer"))
	require.Same(t, tg, cm.targets[tg.addr], "kept")
	require.Equal(t, targetWaiting, tg.state)
	require.True(t, tg.tryAfter.After(time.Now()))
	// After a long-lived connection it is dropped; discovery adds it again.
	tg.state = targetConnected
	cm.attemptEnded(tg, time.Now().Add(-2*longLivedConnection), errors.New("reset by peer"))
	require.NotContains(t, cm.targets, tg.addr)
}

// Discovery holds back beyond two connections while the router learns
// peers, and dials up to its limit once it has learnt nothing new for a
// quiet period that grows with the mesh.
func TestDiscoveryPace(t *testing.T) {
	require.Equal(t, minDiscoveryQuiet, discoveryQuiet(10))
	require.Equal(t, 500*time.Millisecond, discoveryQuiet(500))
	require.Equal(t, maxDiscoveryQuiet, discoveryQuiet(5000))

	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var d discoveryPace
	allow, recheck := d.allowance(at(0), 3, false, 8)
	require.Equal(t, minConnsBeforeQuiet, allow, "nothing known of the mesh yet")
	require.Equal(t, at(minDiscoveryQuiet), recheck)

	// Peers keep being learnt: it keeps holding back.
	for i, ms := range []int{50, 120, 200, 290} {
		allow, recheck = d.allowance(at(time.Duration(ms)*time.Millisecond), 10+100*i, false, 8)
		require.Equal(t, minConnsBeforeQuiet, allow)
	}
	// At 290 ms it knew 310 peers: quiet for 310 ms from then.
	require.Equal(t, at(600*time.Millisecond), recheck)
	allow, _ = d.allowance(at(599*time.Millisecond), 310, false, 8)
	require.Equal(t, minConnsBeforeQuiet, allow)

	// Waiting for the entry of a peer known by name only counts as
	// learning, though no peer was added.
	allow, recheck = d.allowance(at(550*time.Millisecond), 310, true, 8)
	require.Equal(t, minConnsBeforeQuiet, allow)
	require.Equal(t, at(860*time.Millisecond), recheck)

	// Quiet: up to the limit, nothing to look at again.
	allow, recheck = d.allowance(at(860*time.Millisecond), 310, false, 8)
	require.Equal(t, 8, allow)
	require.True(t, recheck.IsZero())

	// Peers that go away are no news; a peer that joins is.
	allow, _ = d.allowance(at(2*time.Second), 300, false, 8)
	require.Equal(t, 8, allow)
	allow, recheck = d.allowance(at(3*time.Second), 301, false, 8)
	require.Equal(t, minConnsBeforeQuiet, allow)
	require.Equal(t, at(3*time.Second+301*time.Millisecond), recheck)

	// Learning that never ends holds discovery back for maxDiscoveryHold
	// at most, and not again until the router falls quiet.
	var busy discoveryPace
	allow, recheck = busy.allowance(at(0), 500, true, 8)
	require.Equal(t, minConnsBeforeQuiet, allow)
	require.Equal(t, at(500*time.Millisecond), recheck)
	for ts := time.Second; ts < maxDiscoveryHold; ts += time.Second {
		allow, _ = busy.allowance(at(ts), 500, true, 8)
		require.Equal(t, minConnsBeforeQuiet, allow)
	}
	allow, recheck = busy.allowance(at(maxDiscoveryHold-time.Second/2), 1000, true, 8)
	require.Equal(t, minConnsBeforeQuiet, allow)
	require.Equal(t, at(maxDiscoveryHold), recheck, "the hold ends before the quiet period")
	for ts := maxDiscoveryHold; ts < 2*maxDiscoveryHold; ts += time.Second {
		allow, _ = busy.allowance(at(ts), 500, true, 8)
		require.Equal(t, 8, allow)
	}
	allow, _ = busy.allowance(at(2*maxDiscoveryHold+time.Second), 500, false, 8)
	require.Equal(t, 8, allow, "quiet")
	allow, _ = busy.allowance(at(2*maxDiscoveryHold+2*time.Second), 501, false, 8)
	require.Equal(t, minConnsBeforeQuiet, allow, "held back again")

	// A limit at or below two connections is never held back.
	var small discoveryPace
	allow, recheck = small.allowance(at(0), 50, true, 1)
	require.Equal(t, 1, allow)
	require.True(t, recheck.IsZero())
}
