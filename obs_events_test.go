package mesh

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// The initial PeerJoined events do not count against the queue's bound:
// with more peers than the bound, events published before the subscriber
// took them are kept, up to the bound, and those beyond it are reported.
func TestEventsInitialSnapshotNotCounted(t *testing.T) {
	for _, extra := range []int{0, 10} {
		t.Run(fmt.Sprint("extra=", extra), func(t *testing.T) {
			obsCheckGoroutines(t)
			r, err := NewRouter(Config{}, testPeerName(1), "us", nil, nil)
			require.NoError(t, err)
			t.Cleanup(func() { r.Stop() })
			apply := func(first, n int) {
				var updates []peerUpdate
				for i := first; i < first+n; i++ {
					updates = append(updates, eventUpdate(i, PeerUID(i), 1, ""))
				}
				r.Peers.mu.Lock()
				r.Peers.topo.apply(updates)
				r.Peers.mu.Unlock()
				r.topologyPassDone(false, nil)
			}
			const initial = subscriberQueueLimit + 500
			apply(2, initial)

			// Subscribed, but not yet delivering: as if the subscriber's
			// goroutine had not run yet.
			var log eventLog
			s := r.events.add(r, log.add)
			require.NotNil(t, s)
			// Stop waits for the subscriber's goroutine: it must run even
			// if the test fails before starting it.
			var startOnce sync.Once
			start := func() { startOnce.Do(s.start) }
			t.Cleanup(start)
			apply(2+initial, subscriberQueueLimit+extra)
			require.EqualValues(t, extra, r.Metrics().Drops.Events)
			start()

			want := initial + subscriberQueueLimit
			if extra > 0 {
				want++ // EventsDropped
			}
			got := log.waitEvents(t, want)
			require.Len(t, got, want)
			for i, e := range got[:initial+subscriberQueueLimit] {
				require.Equal(t, PeerJoined, e.Type)
				require.Equal(t, testPeerName(2+i), e.Peer.Name)
			}
			if extra > 0 {
				require.Equal(t, Event{Type: EventsDropped, Dropped: uint64(extra)}, got[len(got)-1])
			}

			// Once delivered, the snapshot no longer counts: the bound is
			// the usual one again.
			s.mu.Lock()
			require.Zero(t, s.initial)
			s.mu.Unlock()
		})
	}
}

// routesGate blocks a router's topology loop in its route-change callback
// while it is closed, so that a test decides when the pass goes on (to
// removing unreachable peers, then publishing events).
type routesGate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newRoutesGate(r *Router) *routesGate {
	g := &routesGate{entered: make(chan struct{}), release: make(chan struct{})}
	r.Routes.OnChange(func() {
		if g.armed.Load() {
			g.once.Do(func() { close(g.entered) })
			<-g.release
		}
	})
	return g
}

func (g *routesGate) open() {
	g.armed.Store(false)
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

// A peer that restarts, and whose new incarnation arrives before the old
// one is removed as unreachable, is reported as one PeerChanged. The
// topology loop of the observer is held in the pass that finds the old
// incarnation gone until the new one is connected, so the restart always
// arrives within the grace, however slow the machine.
func TestEventsRestartWithinGrace(t *testing.T) {
	obsCheckGoroutines(t)
	a := startObsNode(t, 1, Config{})
	gate := newRoutesGate(a.router)
	t.Cleanup(gate.open) // before a stops
	var log eventLog
	cancel := a.router.Subscribe(log.add)
	defer cancel()

	b := startObsNode(t, 2, Config{})
	b.dial(t, a)
	bName, oldUID := b.router.Ourself.Name, b.router.Ourself.UID
	obsEventually(t, "b joined and reachable", func() (bool, string) {
		_, ok := a.router.Routes.Unicast(bName)
		return ok && slices.Contains(describe(log.all()), fmt.Sprintf("PeerJoined:%v:%d", bName, oldUID)), strings.Join(describe(log.all()), " ")
	})

	// b restarts: the pass that notices is held while the new incarnation
	// connects and its entry arrives.
	gate.armed.Store(true)
	require.NoError(t, b.router.Stop())
	<-gate.entered
	b2 := startObsNode(t, 2, Config{})
	newUID := b2.router.Ourself.UID
	require.NotEqual(t, oldUID, newUID)
	b2.dial(t, a)
	obsEventually(t, "a has the new incarnation's entry", func() (bool, string) {
		p := a.router.Peers.Fetch(bName)
		return p != nil && p.UID == newUID, fmt.Sprint(p)
	})
	gate.open()
	obsEventually(t, "routes to b again", func() (bool, string) {
		_, ok := a.router.Routes.Unicast(bName)
		return ok, ""
	})
	changed := fmt.Sprintf("PeerChanged:%v:%d<-%d", bName, newUID, oldUID)
	obsEventually(t, "the change reported", func() (bool, string) {
		return slices.Contains(describe(log.all()), changed), strings.Join(describe(log.all()), " ")
	})

	var aboutB []Event
	for _, e := range log.all() {
		require.NotEqual(t, EventsDropped, e.Type)
		if e.Peer != nil && e.Peer.Name == bName {
			aboutB = append(aboutB, e)
		}
	}
	require.Equal(t, []string{fmt.Sprintf("PeerJoined:%v:%d", bName, oldUID), changed}, describe(aboutB))
	require.Equal(t, oldUID, aboutB[1].Previous.UID)
	require.Zero(t, a.router.Metrics().PeersRemoved, "the old incarnation was never removed")
}
