package mesh

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// flooder opens connections to a router that never complete a handshake:
// idle ones that send nothing, and slow ones that trickle bytes. A
// connection the router closes is opened again after a pause, for as long
// as the flood lasts.
type flooder struct {
	target  string
	stop    chan struct{}
	wg      sync.WaitGroup
	running atomic.Int64 // goroutines of the flooder
	opened  atomic.Int64 // connections opened
}

// flood starts n connection loops from the loopback address from, each
// trickling a byte every trickle (never, when trickle is 0).
func (f *flooder) flood(n int, from net.IP, trickle time.Duration) {
	for range n {
		f.wg.Add(1)
		f.running.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.running.Add(-1)
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
			for {
				if conn, err := d.Dial("tcp", f.target); err == nil {
					f.opened.Add(1)
					f.hold(conn, trickle)
				}
				select {
				case <-f.stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
}

// hold keeps conn open until the router closes it or the flood stops.
func (f *flooder) hold(conn net.Conn, trickle time.Duration) {
	defer conn.Close()
	closed := make(chan struct{})
	f.running.Add(1)
	go func() {
		defer f.running.Add(-1)
		defer close(closed)
		var b [1]byte
		_, _ = conn.Read(b[:]) // the router sends its header, then resets
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	var tick <-chan time.Time
	if trickle > 0 {
		t := time.NewTicker(trickle)
		defer t.Stop()
		tick = t.C
	}
	hello := []byte("weave\x01\x02\x01")
	for i := 0; ; i++ {
		select {
		case <-f.stop:
			conn.Close()
			<-closed
			return
		case <-closed:
			return
		case <-tick:
			_, _ = conn.Write(hello[i%len(hello) : i%len(hello)+1])
		}
	}
}

// TestConnectionFloodLegitimatePeerJoins floods a router with 500
// connections that never complete a handshake, from four addresses, plus
// 50 that trickle bytes from a fifth, all of them reopened as soon as the
// router closes them. The router runs only as many handshakes as its caps
// allow, so its goroutines stay bounded, and a legitimate peer joins and
// gossips in the middle of the flood.
func TestConnectionFloodLegitimatePeerJoins(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	requireLoopbackRange(t)
	checkGoroutines(t)
	limits := AcceptLimits{Rate: 200, Burst: 200, MaxPending: 64, MaxPendingPerIP: 8}
	pw := []byte("a password long enough to be fine")
	r := startSecRouter(t, Config{Password: pw, Accept: limits}, 1)
	base := runtime.NumGoroutine()

	f := &flooder{target: r.addr(), stop: make(chan struct{})}
	t.Cleanup(func() {
		close(f.stop)
		f.wg.Wait()
	})
	for i := range 4 {
		f.flood(125, net.IPv4(127, 2, 0, byte(i+1)), 0)
	}
	f.flood(50, net.IPv4(127, 2, 0, 5), 200*time.Millisecond)

	// Sample the router's goroutines and handshakes in progress while the
	// flood goes on.
	var maxRouterG, maxPending atomic.Int64
	sampleStop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			g := int64(runtime.NumGoroutine()-base) - f.running.Load()
			if g > maxRouterG.Load() {
				maxRouterG.Store(g)
			}
			if p := int64(r.acceptGuard.stats().Pending); p > maxPending.Load() {
				maxPending.Store(p)
			}
			select {
			case <-sampleStop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	waitFor(t, "the flood to fill the caps", func() bool {
		s := r.acceptGuard.stats()
		return f.opened.Load() >= 550 && s.Pending >= 5*limits.MaxPendingPerIP
	})

	// A legitimate peer joins and gossips.
	began := time.Now()
	peer := startSecRouter(t, Config{Password: pw}, 2)
	peer.ConnectionMaker.InitiateConnections([]string{r.addr()}, false)
	waitFor(t, "the peer's unicast", func() bool {
		if r.received("through the flood") > 0 {
			return true
		}
		if _, ok := peer.Routes.Unicast(r.Ourself.Name); ok {
			_ = peer.sendUnicast("vec", r.Ourself.Name, []byte("through the flood"))
		}
		return false
	})
	joined := time.Since(began)
	close(sampleStop)
	<-sampled

	s := r.acceptGuard.stats()
	t.Logf("peer joined and gossiped in %v; %d flood connections opened, %d refused (%d by rate, %d by total, %d by address); at most %d handshakes in progress, router goroutines at most about %d",
		joined, f.opened.Load(), s.RefusedRate+s.RefusedTotal+s.RefusedPerIP, s.RefusedRate, s.RefusedTotal, s.RefusedPerIP,
		maxPending.Load(), maxRouterG.Load())
	require.NotZero(t, s.RefusedPerIP)
	require.LessOrEqual(t, maxPending.Load(), int64(5*limits.MaxPendingPerIP+1), "per-address caps held")
	// Two goroutines per handshake (reader and a short-lived writer), the
	// new peer's and a margin.
	require.LessOrEqual(t, maxRouterG.Load(), int64(2*limits.MaxPending+64), "goroutines stay bounded")
	require.Len(t, r.log.matching("connection refused before the handshake", "from this address"), 1,
		"refusals are logged once a minute")
}
