package mesh

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// eventLog collects the events of a subscription.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// describe renders events as "type:name:uid" (uid of the previous entry
// too for PeerChanged), comparable in tests.
func describe(events []Event) []string {
	var out []string
	for _, e := range events {
		switch e.Type {
		case PeerJoined, PeerLeft:
			out = append(out, fmt.Sprintf("%v:%v:%d", e.Type, e.Peer.Name, e.Peer.UID))
		case PeerChanged:
			out = append(out, fmt.Sprintf("%v:%v:%d<-%d", e.Type, e.Peer.Name, e.Peer.UID, e.Previous.UID))
		case EventsDropped:
			out = append(out, fmt.Sprintf("%v:%d", e.Type, e.Dropped))
		default:
			out = append(out, e.Type.String())
		}
	}
	return out
}

// waitEvents waits until the log holds n events and returns them.
func (l *eventLog) waitEvents(t *testing.T, n int) []Event {
	t.Helper()
	obsEventually(t, fmt.Sprintf("%d events", n), func() (bool, string) {
		got := l.all()
		return len(got) >= n, strings.Join(describe(got), " ")
	})
	return l.all()
}

func eventUpdate(i int, uid PeerUID, version uint64, nick string, conns ...PeerName) peerUpdate {
	u := peerUpdate{peerSummary: peerSummary{Name: testPeerName(i), NickName: nick, UID: uid, Version: version}}
	for _, c := range conns {
		u.Connections = append(u.Connections, connectionSummary{Name: c, Established: true})
	}
	return u
}

// TestEventsFromTopology drives the topology of a router that is not
// started, and the passes of its topology loop, by hand.
func TestEventsFromTopology(t *testing.T) {
	obsCheckGoroutines(t)
	r, err := NewRouter(Config{}, testPeerName(1), "us", nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { r.Stop() })
	apply := func(updates ...peerUpdate) {
		r.Peers.mu.Lock()
		r.Peers.topo.apply(updates)
		r.Peers.mu.Unlock()
	}
	pass := func(routesChanged bool) { r.topologyPassDone(routesChanged, nil) }
	gc := func() {
		removed, _ := r.Peers.garbageCollect(0, 0)
		r.topologyPassDone(false, removed)
	}

	// Peer 2 is known before the subscription: it comes first.
	apply(eventUpdate(2, 20, 1, "two"))
	var log eventLog
	cancel := r.Subscribe(log.add)
	require.Equal(t, []string{"PeerJoined:" + testPeerName(2).String() + ":20"}, describe(log.waitEvents(t, 1)))

	// Peer 3 names peer 4, which stays a placeholder until its own entry
	// arrives; peer 2 restarts.
	apply(eventUpdate(3, 30, 1, "three", testPeerName(4)), eventUpdate(2, 21, 5, "two"))
	pass(true)
	name := func(i int) string { return testPeerName(i).String() }
	want := []string{
		"PeerJoined:" + name(2) + ":20",
		"PeerChanged:" + name(2) + ":21<-20",
		"PeerJoined:" + name(3) + ":30",
		"RoutesChanged",
	}
	require.Equal(t, want, describe(log.waitEvents(t, len(want))))
	require.Equal(t, "two", log.all()[1].Peer.NickName)

	// A new version with new connections is no event; a new nickname is.
	apply(eventUpdate(3, 30, 2, "three", testPeerName(2)), eventUpdate(4, 40, 1, "four"))
	pass(false)
	apply(eventUpdate(3, 30, 3, "drei"))
	pass(false)
	want = append(want, "PeerJoined:"+name(4)+":40", "PeerChanged:"+name(3)+":30<-30")
	got := log.waitEvents(t, len(want))
	require.Equal(t, want, describe(got))
	require.Equal(t, "drei", got[len(got)-1].Peer.NickName)
	require.Equal(t, "three", got[len(got)-1].Previous.NickName)

	// Nothing reaches the peers: removed, in name order.
	gc()
	want = append(want, "PeerLeft:"+name(2)+":21", "PeerLeft:"+name(3)+":30", "PeerLeft:"+name(4)+":40")
	require.Equal(t, want, describe(log.waitEvents(t, len(want))))

	// A second subscriber starts from the membership of now: nobody.
	var log2 eventLog
	cancel2 := r.Subscribe(log2.add)
	apply(eventUpdate(5, 50, 1, "five"))
	pass(false)
	require.Equal(t, []string{"PeerJoined:" + name(5) + ":50"}, describe(log2.waitEvents(t, 1)))
	want = append(want, "PeerJoined:"+name(5)+":50")
	require.Equal(t, want, describe(log.waitEvents(t, len(want))))

	// After cancel, nothing more is delivered to that subscriber.
	cancel()
	cancel()
	apply(eventUpdate(6, 60, 1, "six"))
	pass(true)
	require.Equal(t, []string{"PeerJoined:" + name(5) + ":50", "PeerJoined:" + name(6) + ":60", "RoutesChanged"}, describe(log2.waitEvents(t, 3)))
	cancel2()
	require.NoError(t, r.Stop()) // waits for the subscribers' goroutines
	require.Equal(t, want, describe(log.all()))

	// Subscribing after Stop starts nothing.
	cancel3 := r.Subscribe(log.add)
	r.events.mu.Lock()
	require.Empty(t, r.events.subs)
	r.events.mu.Unlock()
	require.Zero(t, r.events.active.Load())
	cancel3()
}

// TestEventsSubscriberFallsBehind blocks a subscriber while more events
// come than its queue holds: those that do not fit are dropped, counted and
// reported once the subscriber catches up, before the events after them.
func TestEventsSubscriberFallsBehind(t *testing.T) {
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
	apply(2, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var log eventLog
	r.Subscribe(func(e Event) {
		if len(log.all()) == 0 {
			close(entered)
			<-release
		}
		log.add(e)
	})
	<-entered // blocked in the first event
	const extra = 100
	apply(3, subscriberQueueLimit+extra)
	require.EqualValues(t, extra, r.Metrics().Drops.Events)
	close(release)
	got := log.waitEvents(t, 1+subscriberQueueLimit+1)
	require.Len(t, got, 1+subscriberQueueLimit+1)
	for i, e := range got[:1+subscriberQueueLimit] {
		require.Equal(t, PeerJoined, e.Type)
		require.Equal(t, testPeerName(2+i), e.Peer.Name)
	}
	require.Equal(t, Event{Type: EventsDropped, Dropped: extra}, got[len(got)-1])

	// Later events follow as usual.
	apply(5000, 1)
	got = log.waitEvents(t, len(got)+1)
	require.Equal(t, testPeerName(5000), got[len(got)-1].Peer.Name)
}

// TestEventsMembership runs real routers: peers join an observer, one
// restarts with a new UID, one stops and is removed.
func TestEventsMembership(t *testing.T) {
	obsCheckGoroutines(t)
	a := startObsNode(t, 1, Config{})
	var log eventLog
	cancel := a.router.Subscribe(log.add)
	defer cancel()

	b := startObsNode(t, 2, Config{})
	b.dial(t, a)
	obsEventually(t, "b joined and routes changed", func() (bool, string) {
		d := describe(log.all())
		return slices.Contains(d, "RoutesChanged") && slices.ContainsFunc(d, func(s string) bool { return strings.HasPrefix(s, "PeerJoined:"+b.router.Ourself.Name.String()) }), strings.Join(d, " ")
	})
	c := startObsNode(t, 3, Config{})
	c.dial(t, a)
	obsEventually(t, "c known", func() (bool, string) { _, ok := a.router.Routes.Unicast(c.router.Ourself.Name); return ok, "" })

	// b restarts: a new router with the same name and a new UID.
	oldUID := b.router.Ourself.UID
	require.NoError(t, b.router.Stop())
	b2 := startObsNode(t, 2, Config{})
	require.NotEqual(t, oldUID, b2.router.Ourself.UID)
	b2.dial(t, a)
	// c stops and is removed.
	require.NoError(t, c.router.Stop())

	bName, cName := b.router.Ourself.Name, c.router.Ourself.Name
	peerEvents := func(name PeerName) []string {
		var out []Event
		for _, e := range log.all() {
			if e.Peer != nil && e.Peer.Name == name {
				out = append(out, e)
			}
		}
		return describe(out)
	}
	joined := func(name PeerName, uid PeerUID) string { return fmt.Sprintf("PeerJoined:%v:%d", name, uid) }
	left := func(name PeerName, uid PeerUID) string { return fmt.Sprintf("PeerLeft:%v:%d", name, uid) }
	obsEventually(t, "c left", func() (bool, string) {
		got := peerEvents(cName)
		want := []string{joined(cName, c.router.Ourself.UID), left(cName, c.router.Ourself.UID)}
		return slices.Equal(got, want), strings.Join(got, " ")
	})
	// b's restart shows as a change when the new incarnation arrived
	// before the old one was removed, as a leave and a join otherwise.
	obsEventually(t, "b's restart", func() (bool, string) {
		got := peerEvents(bName)
		changed := []string{joined(bName, oldUID), fmt.Sprintf("PeerChanged:%v:%d<-%d", bName, b2.router.Ourself.UID, oldUID)}
		relearnt := []string{joined(bName, oldUID), left(bName, oldUID), joined(bName, b2.router.Ourself.UID)}
		return slices.Equal(got, changed) || slices.Equal(got, relearnt), strings.Join(got, " ")
	})
	for _, e := range log.all() {
		require.NotEqual(t, EventsDropped, e.Type)
		if e.Peer != nil {
			require.NotEqual(t, a.router.Ourself.Name, e.Peer.Name, "events are never about ourselves")
		}
	}
}
