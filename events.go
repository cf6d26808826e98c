package mesh

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// EventType says what an Event reports.
type EventType uint8

// Event types.
const (
	// PeerJoined: a peer became known. A peer only named in another
	// peer's connections does not count until its own entry arrives.
	PeerJoined EventType = iota + 1
	// PeerChanged: a known peer has a new UID (it restarted) or a new
	// nickname.
	PeerChanged
	// PeerLeft: a peer was removed because nothing reached it any more
	// (as Peers.OnGC reports).
	PeerLeft
	// RoutesChanged: the unicast routes changed; Router.Routes holds the
	// new ones.
	RoutesChanged
	// EventsDropped: the subscriber fell behind and Event.Dropped events
	// were lost. Read Router.Peers and Router.Routes again to catch up;
	// later events follow on from there.
	EventsDropped
)

func (t EventType) String() string {
	switch t {
	case PeerJoined:
		return "PeerJoined"
	case PeerChanged:
		return "PeerChanged"
	case PeerLeft:
		return "PeerLeft"
	case RoutesChanged:
		return "RoutesChanged"
	case EventsDropped:
		return "EventsDropped"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is a change of the mesh's membership or routes, as
// Router.Subscribe delivers it.
type Event struct {
	Type EventType
	// Peer is the peer's entry: the new one for PeerJoined and
	// PeerChanged, the last one known for PeerLeft; nil otherwise.
	Peer *Peer
	// Previous is the peer's entry before a PeerChanged.
	Previous *Peer
	// Dropped is the number of events lost, for EventsDropped.
	Dropped uint64
}

func (e Event) String() string {
	switch e.Type {
	case PeerJoined, PeerLeft:
		return fmt.Sprintf("%v %v uid=%d", e.Type, e.Peer, e.Peer.UID)
	case PeerChanged:
		return fmt.Sprintf("%v %v uid=%d (was %v uid=%d)", e.Type, e.Peer, e.Peer.UID, e.Previous, e.Previous.UID)
	case EventsDropped:
		return fmt.Sprintf("%v %d", e.Type, e.Dropped)
	}
	return e.Type.String()
}

// subscriberQueueLimit bounds the events waiting for one subscriber,
// besides those of the initial snapshot not yet delivered.
const subscriberQueueLimit = 1024

// Subscribe calls fn for every change of membership (peers joining,
// changing, leaving) and of routes, in the order they happen, until cancel
// is called or the router stops. The first events are a PeerJoined for
// every peer already known. This router itself is never reported.
//
// Events are derived once per pass of the router's topology loop, after
// each burst of topology changes: a peer that restarts and is relearnt
// within one pass shows as PeerChanged, one removed first as PeerLeft and
// then PeerJoined.
//
// fn runs on a goroutine of its own for each subscriber, one event at a
// time, and must not block: events wait for it in a queue of bounded
// length (1024, plus the initial PeerJoined events until fn has been given
// them), and when the queue is full further events are dropped (and
// counted in Metrics.Drops.Events). Once fn has caught up it gets an
// EventsDropped event, then the events that came after.
//
// After cancel returns no further call of fn starts; one in progress on
// another goroutine may still be running. cancel may be called from fn, and
// more than once. Router.Stop waits for every subscriber's fn to return, so
// fn must not call it.
func (router *Router) Subscribe(fn func(Event)) (cancel func()) {
	return router.events.subscribe(router, fn)
}

// eventHub turns the router's topology passes into events for the
// subscribers.
type eventHub struct {
	mu     sync.Mutex
	subs   []*subscription
	closed bool
	// view holds the entries of the peers the subscribers were told of, to
	// compare each pass's topology with; nil while nobody subscribes.
	view map[PeerName]*viewEntry
	gen  uint64
	// scratch slices, reused from pass to pass.
	peers  []*Peer
	events []Event

	// active is the number of subscribers: the topology loop reads it
	// without locking, so passes cost nothing while nobody subscribes.
	active atomic.Int32
	wg     sync.WaitGroup
}

type viewEntry struct {
	peer *Peer
	gen  uint64 // the pass that last saw the peer
}

// subscription is one subscriber: its queue and its goroutine.
type subscription struct {
	fn   func(Event)
	hub  *eventHub
	wake chan struct{}
	done chan struct{}
	once sync.Once
	// stopped is checked before every call of fn.
	stopped atomic.Bool

	mu    sync.Mutex
	queue []Event
	spare []Event
	lost  uint64
	// initial is the number of events of the initial snapshot still in
	// queue: they do not count against subscriberQueueLimit, so that
	// events published before the subscriber took them are not lost
	// however many peers the snapshot holds.
	initial int
}

func (h *eventHub) subscribe(router *Router, fn func(Event)) func() {
	if fn == nil {
		return func() {}
	}
	s := h.add(router, fn)
	if s == nil {
		return func() {}
	}
	s.start()
	return s.cancel
}

// add registers a subscriber, its queue holding the initial snapshot;
// start starts delivering. It returns nil after close.
func (h *eventHub) add(router *Router, fn func(Event)) *subscription {
	s := &subscription{fn: fn, hub: h, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	if h.view == nil {
		h.view = make(map[PeerName]*viewEntry)
		h.gen++
		for _, p := range h.snapshot(router) {
			h.view[p.Name] = &viewEntry{peer: p, gen: h.gen}
		}
		clear(h.peers)
	}
	for _, e := range h.view {
		s.queue = append(s.queue, Event{Type: PeerJoined, Peer: e.peer})
	}
	slices.SortFunc(s.queue, func(a, b Event) int { return cmp.Compare(a.Peer.Name, b.Peer.Name) })
	s.initial = len(s.queue)
	h.subs = append(h.subs, s)
	h.active.Add(1)
	h.wg.Add(1) // done by the goroutine start runs
	return s
}

// start runs the subscriber's goroutine.
func (s *subscription) start() {
	go func() {
		defer s.hub.wg.Done()
		s.run()
	}()
	s.signal()
}

// snapshot lists the peers that events are about: all but ourselves and
// placeholders, in name order. The result is h.peers, reused.
func (h *eventHub) snapshot(router *Router) []*Peer {
	peers := h.peers[:0]
	router.Peers.ForEach(func(p *Peer) {
		if p.Name != router.Ourself.Name && !p.isPlaceholder() {
			peers = append(peers, p)
		}
	})
	h.peers = peers
	return peers
}

// publish compares the topology with what subscribers were last told and
// queues the differences for each, then RoutesChanged if routesChanged. It
// runs on the topology loop.
func (h *eventHub) publish(router *Router, routesChanged bool) {
	if h.active.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.view == nil || len(h.subs) == 0 {
		return
	}
	h.gen++
	events := h.events[:0]
	for _, p := range h.snapshot(router) {
		e, ok := h.view[p.Name]
		switch {
		case !ok:
			events = append(events, Event{Type: PeerJoined, Peer: p})
			h.view[p.Name] = &viewEntry{peer: p, gen: h.gen}
			continue
		case e.peer.UID != p.UID || e.peer.NickName != p.NickName:
			events = append(events, Event{Type: PeerChanged, Peer: p, Previous: e.peer})
		}
		e.peer, e.gen = p, h.gen
	}
	clear(h.peers)
	left := len(events)
	for name, e := range h.view {
		if e.gen != h.gen {
			events = append(events, Event{Type: PeerLeft, Peer: e.peer})
			delete(h.view, name)
		}
	}
	slices.SortFunc(events[left:], func(a, b Event) int { return cmp.Compare(a.Peer.Name, b.Peer.Name) })
	if routesChanged {
		events = append(events, Event{Type: RoutesChanged})
	}
	if len(events) > 0 {
		for _, s := range h.subs {
			s.push(events, &router.metrics)
		}
	}
	clear(events)
	h.events = events[:0]
}

// remove forgets a subscriber that cancelled.
func (h *eventHub) remove(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.subs, s); i >= 0 {
		h.subs = slices.Delete(h.subs, i, i+1)
		h.active.Add(-1)
	}
	if len(h.subs) == 0 {
		h.view = nil
	}
}

// close ends every subscription and waits for the subscribers' goroutines;
// Router.Stop calls it once the topology loop has ended.
func (h *eventHub) close() {
	h.mu.Lock()
	h.closed = true
	subs := h.subs
	h.mu.Unlock()
	for _, s := range subs {
		s.cancel()
	}
	h.wg.Wait()
}

func (s *subscription) cancel() {
	s.once.Do(func() {
		s.stopped.Store(true)
		close(s.done)
		s.hub.remove(s)
	})
}

func (s *subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// push queues events; those that do not fit are counted as lost.
func (s *subscription) push(events []Event, m *routerMetrics) {
	s.mu.Lock()
	n := min(len(events), max(subscriberQueueLimit+s.initial-len(s.queue), 0))
	s.queue = append(s.queue, events[:n]...)
	if lost := uint64(len(events) - n); lost > 0 {
		s.lost += lost
		m.eventsDropped.Add(lost)
	}
	s.mu.Unlock()
	s.signal()
}

// run delivers the queued events until the subscription ends. Events lost
// while the queue was full were lost after those it held, so
// EventsDropped follows them.
func (s *subscription) run() {
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch, lost := s.queue, s.lost
		s.queue, s.lost, s.initial = s.spare[:0], 0, 0
		s.spare = nil
		s.mu.Unlock()
		for i := range batch {
			if s.stopped.Load() {
				return
			}
			s.fn(batch[i])
			batch[i] = Event{}
		}
		if lost > 0 && !s.stopped.Load() {
			s.fn(Event{Type: EventsDropped, Dropped: lost})
		}
		if cap(batch) <= 2*subscriberQueueLimit {
			s.mu.Lock()
			s.spare = batch[:0]
			s.mu.Unlock()
		}
	}
}
