package memnet

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connPair is one connection: the dialling end a on hostA, the accepted
// end b on hostB, and a pipe for each direction.
type connPair struct {
	hostA, hostB string
	a, b         *Conn
	ab, ba       *pipe
	closedEnds   atomic.Int32
}

func (p *connPair) pipes() [2]*pipe { return [2]*pipe{p.ab, p.ba} }

// Conn is one end of a connection. It implements net.Conn.
type Conn struct {
	pair      *connPair
	host      *Host
	localPort int // the port this end holds on its host, released on Close; 0 when shared with a listener
	local     Addr
	remote    Addr
	rd        *pipe // what we read
	wr        *pipe // what we write
	rdl, wdl  deadline
	closed    atomic.Bool
}

var _ net.Conn = (*Conn)(nil)

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: networkName, Source: c.local, Addr: c.remote, Err: err}
}

// Read reads what the remote end wrote. It returns io.EOF once the remote
// closed and everything before was read.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.rd.read(b, &c.rdl)
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// Write writes b, blocking while the remote's buffer is full.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.wr.write(b, &c.wdl)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// Close closes this end: its blocked reads and writes fail with
// net.ErrClosed; the remote reads what was written, then io.EOF, and its
// writes fail with EPIPE.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opError("close", net.ErrClosed)
	}
	c.rd.closeReader()
	c.wr.closeWriter()
	c.rdl.set(time.Time{})
	c.wdl.set(time.Time{})
	if c.localPort != 0 {
		c.host.releasePort(c.localPort)
	}
	if c.pair.closedEnds.Add(1) == 2 {
		c.host.net.retire(c.pair)
	}
	return nil
}

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the remote end's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of current and future reads; the zero
// time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline of current and future writes; the
// zero time means none.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.wdl.set(t)
	return nil
}

// pipe is one direction of a connection: the bytes written by the end on
// host from and not yet read by the end on host to.
type pipe struct {
	from, to string
	cap      int
	// seed and stream seed rnd, the source of the pipe's jitter, made
	// when first needed (see jitterStream).
	seed, stream uint64

	mu     sync.Mutex
	chunks []chunk
	off    int // bytes of chunks[0] already read
	queued int // bytes in chunks not yet read, at most cap
	// readerClosed and writerClosed are set when the reading or writing
	// end closed; isReset when the connection was reset.
	readerClosed bool
	writerClosed bool
	isReset      bool
	// While cut, chunks due after cutAt are held back.
	cut     bool
	cutAt   time.Time
	stalled bool // the reading host does not read
	latency time.Duration
	jitter  time.Duration
	rnd     *rand.Rand
	lastAt  time.Time // when the last chunk is due, so bytes stay in order
	// notify is closed and replaced at every change while waiters > 0, to
	// wake the reader and the writers waiting on the pipe.
	notify  chan struct{}
	waiters int
}

// chunk is the bytes of one write, readable from at; or, with eof, the
// end of the stream.
type chunk struct {
	data []byte
	at   time.Time
	eof  bool
}

func (p *pipe) signalLocked() {
	if p.waiters > 0 {
		close(p.notify)
		p.notify = make(chan struct{})
	}
}

// waitLocked releases p.mu until the pipe changes or one of the other
// channels is ready, then takes it again.
func (p *pipe) waitLocked(a <-chan struct{}, b <-chan time.Time) {
	ch := p.notify
	p.waiters++
	p.mu.Unlock()
	select {
	case <-ch:
	case <-a:
	case <-b:
	}
	p.mu.Lock()
	p.waiters--
}

// deliverable reports whether c has arrived at the reader by now.
func (p *pipe) deliverable(c *chunk, now time.Time) bool {
	if p.cut {
		return !c.at.After(p.cutAt)
	}
	return !c.at.After(now)
}

func (p *pipe) read(b []byte, dl *deadline) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if p.readerClosed {
			return 0, net.ErrClosed
		}
		var wake time.Duration
		if !p.stalled {
			if p.isReset {
				return 0, syscall.ECONNRESET
			}
			if dl.expired() {
				return 0, os.ErrDeadlineExceeded
			}
			if len(b) == 0 {
				return 0, nil
			}
			now := time.Now()
			n := 0
			for n < len(b) && len(p.chunks) > 0 && !p.chunks[0].eof && p.deliverable(&p.chunks[0], now) {
				c := &p.chunks[0]
				k := copy(b[n:], c.data[p.off:])
				n += k
				p.off += k
				p.queued -= k
				if p.off == len(c.data) {
					p.chunks[0] = chunk{}
					p.chunks = p.chunks[1:]
					p.off = 0
				}
			}
			if n > 0 {
				p.signalLocked()
				return n, nil
			}
			if len(p.chunks) > 0 {
				c := &p.chunks[0]
				switch {
				case p.deliverable(c, now):
					return 0, io.EOF // only an end of stream is left
				case !p.cut:
					wake = c.at.Sub(now)
				}
			}
		}
		var expired <-chan struct{}
		if !p.stalled {
			expired = dl.wait()
		}
		var due <-chan time.Time
		if wake > 0 {
			if timer == nil {
				timer = time.NewTimer(wake)
			} else {
				timer.Reset(wake)
			}
			due = timer.C
		}
		p.waitLocked(expired, due)
	}
}

func (p *pipe) write(b []byte, dl *deadline) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for {
		switch {
		case p.writerClosed:
			return n, net.ErrClosed
		case p.isReset:
			return n, syscall.ECONNRESET
		case p.readerClosed:
			return n, syscall.EPIPE
		case dl.expired():
			return n, os.ErrDeadlineExceeded
		case n == len(b):
			return n, nil
		}
		if room := p.cap - p.queued; room > 0 {
			k := min(room, len(b)-n)
			at := time.Now().Add(p.latency + p.jitterDelayLocked())
			if at.Before(p.lastAt) {
				at = p.lastAt
			}
			p.lastAt = at
			p.chunks = append(p.chunks, chunk{data: bytes.Clone(b[n : n+k]), at: at})
			p.queued += k
			n += k
			p.signalLocked()
			continue
		}
		p.waitLocked(dl.wait(), nil)
	}
}

// jitterDelayLocked draws the jitter of one write: a delay in
// [0, p.jitter) from the pipe's own source.
func (p *pipe) jitterDelayLocked() time.Duration {
	if p.jitter <= 0 {
		return 0
	}
	if p.rnd == nil {
		p.rnd = rand.New(rand.NewPCG(p.seed, p.stream))
	}
	return time.Duration(p.rnd.Int64N(int64(p.jitter)))
}

// closeReader is called when the reading end closes: what it did not
// read is dropped and the writer's next writes fail.
func (p *pipe) closeReader() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.readerClosed = true
	p.chunks, p.off, p.queued = nil, 0, 0
	p.signalLocked()
}

// closeWriter is called when the writing end closes: the reader gets
// io.EOF after the bytes in flight.
func (p *pipe) closeWriter() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writerClosed = true
	if !p.isReset && !p.readerClosed {
		at := laterOf(time.Now().Add(p.latency), p.lastAt)
		p.lastAt = at
		p.chunks = append(p.chunks, chunk{at: at, eof: true})
	}
	p.signalLocked()
}

// reset fails both ends at once; bytes in flight are lost.
func (p *pipe) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isReset = true
	p.chunks, p.off, p.queued = nil, 0, 0
	p.signalLocked()
}

// setLink applies the state of the link the pipe runs over. When a cut
// heals, the bytes held back are delivered one latency later, as a TCP
// retransmission would.
func (p *pipe) setLink(cut bool, latency, jitter time.Duration, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency, p.jitter = latency, jitter
	switch {
	case cut && !p.cut:
		p.cut, p.cutAt = true, now
	case !cut && p.cut:
		p.cut = false
		resent := now.Add(latency)
		for i := range p.chunks {
			if c := &p.chunks[i]; c.at.After(p.cutAt) && c.at.Before(resent) {
				c.at = resent
				p.lastAt = laterOf(p.lastAt, resent)
			}
		}
	}
	p.signalLocked()
}

func (p *pipe) setStalled(stalled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = stalled
	p.signalLocked()
}

// deadline is a read or write deadline: a channel closed when it passes.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expires chan struct{} // closed once the deadline has passed
}

func newDeadline() deadline { return deadline{expires: make(chan struct{})} }

// set sets the deadline; the zero time means none. Waiters on the current
// channel see the new deadline: the channel is only replaced once closed.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expires // the timer fired: wait until it closed the channel
	}
	d.timer = nil
	closed := isClosed(d.expires)
	if t.IsZero() {
		if closed {
			d.expires = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.expires = make(chan struct{})
		}
		ch := d.expires
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.expires)
	}
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expires
}

func (d *deadline) expired() bool { return isClosed(d.wait()) }

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
