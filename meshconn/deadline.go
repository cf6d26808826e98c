package meshconn

import (
	"sync"
	"time"
)

// deadline is a point in time that can be set and moved at any moment,
// with a channel that is closed once it has passed. Operations select on
// the channel returned by expired; moving the deadline while they wait
// keeps the same channel unless it was already closed, so a deadline set
// during a blocked operation applies to it.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	// done is closed when the deadline has passed; replaced by a fresh
	// channel, under mu, only once closed.
	done chan struct{}
}

func newDeadline() *deadline {
	return &deadline{done: make(chan struct{})}
}

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired: wait until its function has closed done, so
		// that the state below is settled.
		<-d.done
	}
	d.timer = nil
	passed := isClosed(d.done)
	if t.IsZero() {
		if passed {
			d.done = make(chan struct{})
		}
		return
	}
	if wait := time.Until(t); wait > 0 {
		if passed {
			d.done = make(chan struct{})
		}
		done := d.done
		d.timer = time.AfterFunc(wait, func() { close(done) })
		return
	}
	if !passed {
		close(d.done)
	}
}

// expired returns a channel closed when the deadline passes.
func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done
}

// stop cancels the timer, if any; the deadline no longer passes.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.done
	}
	d.timer = nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
