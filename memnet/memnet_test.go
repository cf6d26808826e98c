package memnet_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh/memnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// patience bounds every wait of these tests; they never need it unless
// something is broken.
const patience = 20 * time.Second

// noLeak fails the test if goroutines started during it are still running
// at its end.
func noLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		start := time.Now()
		for runtime.NumGoroutine() > before {
			if time.Since(start) > patience {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// pair returns both ends of a new connection from host a to host b.
func pair(t *testing.T, n *memnet.Network, a, b string) (net.Conn, net.Conn) {
	t.Helper()
	l, err := n.Host(b).Listen(b + ":0")
	require.NoError(t, err)
	defer l.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		accepted <- result{c, err}
	}()
	ca, err := n.Host(a).Dial(l.Addr().String())
	require.NoError(t, err)
	r := <-accepted
	require.NoError(t, r.err)
	t.Cleanup(func() { ca.Close(); r.c.Close() })
	return ca, r.c
}

// readN reads exactly n bytes from c, with a deadline.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	return buf
}

func requireTimeout(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "Timeout() of %v", err)
}

// stillRunning reports whether a call running in the background has not
// returned within a short while. It is used where the call must block, so
// it cannot fail by chance: a call that returned was not blocked.
func stillRunning(done <-chan struct{}) bool {
	select {
	case <-done:
		return false
	case <-time.After(50 * time.Millisecond):
		return true
	}
}

func TestListenAndDial(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	require.NotZero(t, n.Seed())
	require.Equal(t, uint64(42), memnet.New(memnet.Config{Seed: 42}).Seed())

	h := n.Host("10.0.0.1")
	l, err := h.Listen("10.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	require.NoError(t, err)
	require.NotEqual(t, "0", port)
	require.Equal(t, "memnet", l.Addr().Network())

	_, err = h.Listen(l.Addr().String())
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	_, err = h.Listen("10.0.0.2:1")
	require.ErrorIs(t, err, syscall.EADDRNOTAVAIL)
	l2, err := h.Listen(":6783")
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1:6783", l2.Addr().String())
	require.NoError(t, l2.Close())
	require.Error(t, l2.Close())

	a, b := pair(t, n, "10.0.0.2", "10.0.0.1")
	require.Equal(t, a.LocalAddr().String(), b.RemoteAddr().String())
	require.Equal(t, a.RemoteAddr().String(), b.LocalAddr().String())
	require.Equal(t, 1, n.Conns())
	require.Equal(t, uint64(1), n.Made())
	require.Equal(t, []string{"10.0.0.1", "10.0.0.2"}, n.Hosts())

	_, err = n.Host("10.0.0.2").Dial("10.0.0.1:1")
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "no listener")
	_, err = h.Dial("nonsense")
	require.Error(t, err)

	// Closed connections still count as made.
	a.Close()
	b.Close()
	pair(t, n, "10.0.0.1", "10.0.0.2")
	require.Equal(t, 1, n.Conns())
	require.Equal(t, uint64(2), n.Made())
}

func TestUnknownHostTimesOut(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{DialTimeout: 20 * time.Millisecond})
	_, err := n.Host("a").Dial("nowhere:1")
	requireTimeout(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	n = memnet.New(memnet.Config{DialTimeout: time.Hour})
	go cancel()
	_, err = n.Host("a").DialContext(ctx, "nowhere:1")
	require.ErrorIs(t, err, context.Canceled)
}

// The conformance tests follow what golang.org/x/net/nettest checks of
// every net.Conn.
func TestConnBasicIO(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 1000})
	a, b := pair(t, n, "a", "b")
	rnd := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 1<<18)
	for i := range want {
		want[i] = byte(rnd.Uint32())
	}
	// Both directions at once, with a buffer much smaller than the data.
	var wg sync.WaitGroup
	for _, c := range []net.Conn{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Write(want)
			require.NoError(t, err)
		}()
	}
	require.Equal(t, want, readN(t, a, len(want)))
	require.Equal(t, want, readN(t, b, len(want)))
	wg.Wait()

	// Close: the remote reads what was written, then EOF.
	_, err := a.Write([]byte("last words"))
	require.NoError(t, err)
	require.NoError(t, a.Close())
	got, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Equal(t, "last words", string(got))
	_, err = b.Read(make([]byte, 1))
	require.Equal(t, io.EOF, err)
	_, err = b.Write([]byte("x"))
	require.ErrorIs(t, err, syscall.EPIPE)
	require.ErrorIs(t, a.Close(), net.ErrClosed, "second Close")
	_, err = a.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = a.Read(make([]byte, 1))
	require.ErrorIs(t, err, net.ErrClosed)
	require.NoError(t, b.Close())
	require.Zero(t, n.Conns())
}

func TestConnPingPong(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	a, b := pair(t, n, "a", "b")
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 8)
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			if _, err := b.Write(buf); err != nil {
				return
			}
		}
	}()
	for i := range 1000 {
		msg := []byte{byte(i), 1, 2, 3, 4, 5, 6, byte(i >> 8)}
		_, err := a.Write(msg)
		require.NoError(t, err)
		require.Equal(t, msg, readN(t, a, 8))
	}
	a.Close()
	<-done
}

func TestConnPastDeadline(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	a, b := pair(t, n, "a", "b")
	_, err := b.Write([]byte("data"))
	require.NoError(t, err)
	require.NoError(t, a.SetDeadline(time.Now().Add(-time.Second)))
	// A deadline in the past fails at once, even with data waiting.
	_, err = a.Read(make([]byte, 4))
	requireTimeout(t, err)
	_, err = a.Write([]byte("x"))
	requireTimeout(t, err)
	// Clearing it makes the connection usable again.
	require.NoError(t, a.SetDeadline(time.Time{}))
	require.Equal(t, "data", string(readN(t, a, 4)))
	_, err = a.Write([]byte("x"))
	require.NoError(t, err)
}

func TestConnFutureDeadline(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 10})
	a, _ := pair(t, n, "a", "b")
	start := time.Now()
	require.NoError(t, a.SetReadDeadline(start.Add(30*time.Millisecond)))
	_, err := a.Read(make([]byte, 1))
	requireTimeout(t, err)
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)

	// A writer blocked by a full buffer is released by its deadline, and
	// says how much it wrote.
	start = time.Now()
	require.NoError(t, a.SetWriteDeadline(start.Add(30*time.Millisecond)))
	k, err := a.Write(make([]byte, 25))
	requireTimeout(t, err)
	require.Equal(t, 10, k)
}

// A deadline moved while a call is blocked applies to that call.
func TestConnDeadlineMovedWhileBlocked(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 1})
	a, b := pair(t, n, "a", "b")
	require.NoError(t, a.SetReadDeadline(time.Now().Add(time.Hour)))
	_, err := b.Write([]byte{1}) // fills b's buffer towards a
	require.NoError(t, err)
	require.Equal(t, []byte{1}, readN(t, a, 1))
	require.NoError(t, a.SetReadDeadline(time.Now().Add(time.Hour)))
	require.NoError(t, b.SetWriteDeadline(time.Now().Add(time.Hour)))
	_, err = a.Write([]byte{1}) // a's buffer towards b is full now
	require.NoError(t, err)

	errs := make(chan error, 2)
	go func() { _, err := a.Read(make([]byte, 1)); errs <- err }()
	go func() { _, err := a.Write([]byte{2}); errs <- err }()
	time.Sleep(10 * time.Millisecond) // let both block; not needed for correctness
	require.NoError(t, a.SetDeadline(time.Now()))
	requireTimeout(t, <-errs)
	requireTimeout(t, <-errs)

	// Cleared, a blocked read waits for data, not for the old deadline.
	require.NoError(t, a.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	require.NoError(t, a.SetReadDeadline(time.Time{}))
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 1)
		_, err := a.Read(buf)
		require.NoError(t, err)
		got <- buf
	}()
	time.Sleep(40 * time.Millisecond) // past the cleared deadline
	_, err = b.Write([]byte{7})
	require.NoError(t, err)
	require.Equal(t, []byte{7}, <-got)
}

// Close releases blocked reads and writes, at both ends.
func TestConnCloseUnblocks(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 4})
	a, b := pair(t, n, "a", "b")
	_, err := a.Write([]byte("full"))
	require.NoError(t, err)
	errs := make(chan error, 2)
	go func() { _, err := a.Read(make([]byte, 1)); errs <- err }()
	go func() { _, err := a.Write(make([]byte, 100)); errs <- err }()
	require.NoError(t, a.Close())
	for range 2 {
		require.ErrorIs(t, <-errs, net.ErrClosed)
	}
	// What a wrote before it closed still arrives, then the end.
	got, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Len(t, got, 4)
}

// Concurrent calls of every method, for the race detector.
func TestConnRacyUse(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 64})
	a, b := pair(t, n, "a", "b")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			buf := make([]byte, 10)
			for {
				if _, err := a.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for {
				if _, err := b.Write([]byte("0123456789")); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for j := range 200 {
				_ = a.SetDeadline(time.Now().Add(time.Duration(i+j) * time.Microsecond))
				_ = b.SetWriteDeadline(time.Now().Add(time.Duration(j) * time.Microsecond))
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	a.Close()
	b.Close()
	wg.Wait()
}

func TestBackpressure(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 1000})
	a, b := pair(t, n, "a", "b")
	done := make(chan struct{})
	var written int
	var werr error
	go func() {
		defer close(done)
		written, werr = a.Write(make([]byte, 3000))
	}()
	require.True(t, stillRunning(done), "a writer blocks on a full buffer")
	require.Len(t, readN(t, b, 3000), 3000)
	<-done
	require.NoError(t, werr)
	require.Equal(t, 3000, written)
}

// A cut link holds bytes back, as a broken path does to TCP: the
// connection stalls and carries on, intact, once healed.
func TestCutHoldsBytesUntilHealed(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 100, DialTimeout: 30 * time.Millisecond})
	a, b := pair(t, n, "a", "b")
	_, err := a.Write([]byte("before"))
	require.NoError(t, err)
	n.Cut("a", "b")
	require.False(t, n.Reachable("a", "b"))
	require.False(t, n.Reachable("b", "a"))
	// Sent before the cut: it had arrived.
	require.Equal(t, "before", string(readN(t, b, 6)))
	_, err = a.Write([]byte("during"))
	require.NoError(t, err)
	require.NoError(t, b.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
	_, err = b.Read(make([]byte, 10))
	requireTimeout(t, err)
	// The held bytes count against the buffer: the writer blocks.
	require.NoError(t, a.SetWriteDeadline(time.Now().Add(30*time.Millisecond)))
	k, err := a.Write(make([]byte, 200))
	requireTimeout(t, err)
	require.Equal(t, 94, k)
	// No new connection across the cut.
	_, err = n.Host("a").Dial(b.LocalAddr().String())
	requireTimeout(t, err)

	n.Heal("a", "b")
	require.True(t, n.Reachable("a", "b"))
	got := readN(t, b, 100)
	require.Equal(t, "during", string(got[:6]))
}

// A dial waiting on a cut goes through when the cut heals in time.
func TestDialWaitsForHeal(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{DialTimeout: time.Hour})
	l, err := n.Host("b").Listen("b:1")
	require.NoError(t, err)
	defer l.Close()
	n.Cut("a", "b")
	done := make(chan struct{})
	var dialErr error
	go func() {
		defer close(done)
		var c net.Conn
		if c, dialErr = n.Host("a").Dial("b:1"); dialErr == nil {
			c.Close()
		}
	}()
	require.True(t, stillRunning(done), "a dial across a cut waits")
	n.Heal("a", "b")
	<-done
	require.NoError(t, dialErr)
	c, err := l.Accept()
	require.NoError(t, err)
	c.Close()
}

func TestCutOneWay(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{DialTimeout: 20 * time.Millisecond})
	a, b := pair(t, n, "a", "b")
	n.CutOneWay("a", "b")
	require.False(t, n.Reachable("a", "b"))
	require.True(t, n.Reachable("b", "a"))
	_, err := b.Write([]byte("still flows"))
	require.NoError(t, err)
	require.Equal(t, "still flows", string(readN(t, a, 11)))
	_, err = a.Write([]byte("held"))
	require.NoError(t, err)
	require.NoError(t, b.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = b.Read(make([]byte, 4))
	requireTimeout(t, err)
	// A handshake needs both ways: dials fail in both directions.
	_, err = n.Host("b").Dial(a.LocalAddr().String())
	requireTimeout(t, err)
	l, err := n.Host("b").Listen("b:0")
	require.NoError(t, err)
	defer l.Close()
	_, err = n.Host("a").Dial(l.Addr().String())
	requireTimeout(t, err)
	n.HealOneWay("a", "b")
	require.Equal(t, "held", string(readN(t, b, 4)))
}

func TestPartition(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{DialTimeout: 20 * time.Millisecond})
	hosts := []string{"h1", "h2", "h3", "h4", "h5"}
	ls := make(map[string]net.Listener)
	for _, h := range hosts {
		l, err := n.Host(h).Listen(h + ":7")
		require.NoError(t, err)
		ls[h] = l
		defer l.Close()
	}
	n.Partition([]string{"h1", "h2"}, []string{"h3"}) // h4 and h5 together
	side := map[string]int{"h1": 1, "h2": 1, "h3": 2, "h4": 3, "h5": 3}
	check := func(partitioned bool) {
		for _, from := range hosts {
			for _, to := range hosts {
				want := !partitioned || side[from] == side[to]
				require.Equal(t, want, n.Reachable(from, to), "%s -> %s", from, to)
				if from == to {
					continue
				}
				c, err := n.Host(from).Dial(to + ":7")
				if want {
					require.NoError(t, err)
					c.Close()
					a, err := ls[to].Accept()
					require.NoError(t, err)
					a.Close()
				} else {
					requireTimeout(t, err)
				}
			}
		}
	}
	check(true)
	n.Cut("h1", "h2")
	require.False(t, n.Reachable("h1", "h2"))
	n.HealPartition()
	require.False(t, n.Reachable("h1", "h2"), "cuts outlive partitions")
	n.HealAll()
	check(false)
}

func TestReset(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 4})
	a, b := pair(t, n, "a", "b")
	c, d := pair(t, n, "a", "c")
	require.Equal(t, 2, n.Conns())
	_, err := a.Write([]byte("lost"))
	require.NoError(t, err)
	blocked := make(chan error, 2)
	go func() { _, err := a.Write([]byte("blocked")); blocked <- err }()
	go func() { _, err := b.Write([]byte("12345678")); blocked <- err }()
	require.Equal(t, 1, n.Reset("b", "a"))
	require.ErrorIs(t, <-blocked, syscall.ECONNRESET)
	require.ErrorIs(t, <-blocked, syscall.ECONNRESET)
	for _, e := range []net.Conn{a, b} {
		_, err := e.Read(make([]byte, 4))
		require.ErrorIs(t, err, syscall.ECONNRESET)
		_, err = e.Write([]byte("x"))
		require.ErrorIs(t, err, syscall.ECONNRESET)
	}
	require.Equal(t, 1, n.Conns())
	// The other connection of a is untouched, until its host is reset.
	_, err = c.Write([]byte("ok"))
	require.NoError(t, err)
	require.Equal(t, "ok", string(readN(t, d, 2)))
	require.Equal(t, 1, n.ResetHost("c"))
	_, err = d.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.Zero(t, n.Conns())
}

func TestStall(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{BufferSize: 100})
	a, b := pair(t, n, "a", "b")
	n.Stall("b")
	// b still accepts connections and writes.
	c, d := pair(t, n, "c", "b")
	_, err := d.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(readN(t, c, 5)))
	// Writers towards b fill its buffer and block until their deadline.
	require.NoError(t, a.SetWriteDeadline(time.Now().Add(30*time.Millisecond)))
	k, err := a.Write(make([]byte, 150))
	requireTimeout(t, err)
	require.Equal(t, 100, k)
	// b's reads block, whatever their deadline.
	require.NoError(t, b.SetReadDeadline(time.Now().Add(-time.Second)))
	done := make(chan struct{})
	var got int
	var rerr error
	go func() {
		defer close(done)
		got, rerr = b.Read(make([]byte, 1000))
	}()
	require.True(t, stillRunning(done), "a stalled host does not read")
	require.NoError(t, b.SetReadDeadline(time.Time{}))
	n.Unstall("b")
	<-done
	require.NoError(t, rerr)
	require.Equal(t, 100, got)

	// Close releases a stalled read.
	n.Stall("b")
	done = make(chan struct{})
	go func() {
		defer close(done)
		_, rerr = b.Read(make([]byte, 1))
	}()
	require.True(t, stillRunning(done))
	b.Close()
	<-done
	require.ErrorIs(t, rerr, net.ErrClosed)
}

func TestLatency(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{Seed: 7})
	n.SetLatency(20*time.Millisecond, 10*time.Millisecond)
	start := time.Now()
	a, b := pair(t, n, "a", "b")
	require.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond, "a dial takes a round trip")
	// Bytes stay in order despite the jitter.
	var want bytes.Buffer
	start = time.Now()
	for i := range 50 {
		msg := []byte{byte(i)}
		want.Write(msg)
		_, err := a.Write(msg)
		require.NoError(t, err)
	}
	require.Equal(t, want.Bytes(), readN(t, b, 50))
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	// A link of its own overrides the global latency.
	n.SetLinkLatency("a", "b", 80*time.Millisecond)
	start = time.Now()
	_, err := b.Write([]byte("x"))
	require.NoError(t, err)
	readN(t, a, 1)
	require.GreaterOrEqual(t, time.Since(start), 80*time.Millisecond)
	n.SetLinkLatency("a", "b", -1)
	n.SetLatency(0, 0)
	_, err = b.Write([]byte("y"))
	require.NoError(t, err)
	require.Equal(t, "y", string(readN(t, a, 1)))
}

func TestListenerClose(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	l, err := n.Host("b").Listen("b:5")
	require.NoError(t, err)
	c, err := n.Host("a").Dial("b:5") // never accepted
	require.NoError(t, err)
	defer c.Close()
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	// The pending connection is handed out, then Accept blocks until Close.
	require.NoError(t, <-accepted)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	require.NoError(t, l.Close())
	require.ErrorIs(t, <-accepted, net.ErrClosed)

	l, err = n.Host("b").Listen("b:5")
	require.NoError(t, err, "the port is free again")
	c2, err := n.Host("a").Dial("b:5")
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, l.Close())
	_, err = c2.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET, "connections never accepted are reset")
}

func TestNetworkClose(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	a, _ := pair(t, n, "a", "b")
	l, err := n.Host("c").Listen("c:1")
	require.NoError(t, err)
	n.Close()
	_, err = a.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	_, err = l.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = n.Host("a").Dial("c:1")
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = n.Host("a").Listen("a:1")
	require.ErrorIs(t, err, net.ErrClosed)
}

// Many hosts dial, accept, exchange a byte and close at once, while faults
// that touch every connection come and go: every connection is made and
// counted once, and once every end is closed none is counted open. The
// race detector checks the locking of connections, listeners and ports.
func TestConcurrentDialsAndCloses(t *testing.T) {
	noLeak(t)
	n := memnet.New(memnet.Config{})
	const hosts, dialsEach = 50, 6
	names := make([]string, hosts)
	var accepted sync.WaitGroup
	for i := range names {
		names[i] = "10.9.0." + strconv.Itoa(i+1)
		l, err := n.Host(names[i]).Listen(":7")
		require.NoError(t, err)
		accepted.Add(1)
		go func() {
			defer accepted.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					b := make([]byte, 1)
					if _, err := io.ReadFull(c, b); err == nil {
						_, _ = c.Write(b)
					}
				}()
			}
		}()
	}
	stop := make(chan struct{})
	var faults sync.WaitGroup
	faults.Add(1)
	go func() { // faults that touch every connection, racing with dials
		defer faults.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n.Stall(names[0])
			n.Unstall(names[0])
			n.SetLatency(0, 0)
		}
	}()
	var dials sync.WaitGroup
	for i := range names {
		for k := 1; k <= dialsEach; k++ {
			dials.Add(1)
			go func() {
				defer dials.Done()
				c, err := n.Host(names[i]).Dial(names[(i+k)%hosts] + ":7")
				if !assert.NoError(t, err) {
					return
				}
				defer c.Close()
				_, err = c.Write([]byte{byte(k)})
				assert.NoError(t, err)
				b := make([]byte, 1)
				_, err = io.ReadFull(c, b)
				assert.NoError(t, err)
				assert.Equal(t, byte(k), b[0])
			}()
		}
	}
	dials.Wait()
	close(stop)
	faults.Wait()
	require.Equal(t, uint64(hosts*dialsEach), n.Made())
	require.Eventually(t, func() bool { return n.Conns() == 0 }, patience, time.Millisecond,
		"every connection was closed at both ends")
	c, err := n.Host(names[1]).Dial(names[2] + ":7")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	n.Close()
	accepted.Wait()
}
