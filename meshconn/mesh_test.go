package meshconn_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/meshconn"
	"github.com/stretchr/testify/require"
)

// deadline bounds every wait of these tests: generous, as the machines
// running them are shared and noisy.
const deadline = 60 * time.Second

// testLogger sends log lines to the test log.
type testLogger struct{ t testing.TB }

func (l testLogger) Printf(format string, args ...interface{}) {
	defer func() { _ = recover() }() // a line logged after the test ended
	l.t.Logf(format, args...)
}

// node is a router on 127.0.0.1, with a meshconn Peer on channel
// "packets" unless it only relays.
type node struct {
	router *mesh.Router
	conn   *meshconn.Peer
}

func startNode(t testing.TB, i int, withConn bool) *node {
	t.Helper()
	name := mesh.PeerName(0x020000000000 + uint64(i))
	r, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1", Port: 0}, name, fmt.Sprint("node", i), nil, testLogger{t})
	require.NoError(t, err)
	n := &node{router: r}
	if withConn {
		n.conn = meshconn.NewPeer(name, r.Ourself.UID, testLogger{t})
		g, err := r.NewGossip("packets", n.conn)
		require.NoError(t, err)
		n.conn.Register(g)
	}
	require.NoError(t, r.Start())
	t.Cleanup(func() {
		if n.conn != nil {
			n.conn.Close()
		}
		r.Stop()
	})
	return n
}

func (n *node) addr() meshconn.MeshAddr {
	return meshconn.MeshAddr{PeerName: n.router.Ourself.Name, PeerUID: n.router.Ourself.UID}
}

func (n *node) connectTo(o *node) {
	n.router.ConnectionMaker.InitiateConnections([]string{o.router.ListenAddr().String()}, false)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > deadline {
			t.Fatalf("%s: not within %v", what, deadline)
		}
	}
}

// checkNoGoroutineLeak records how many goroutines run now and, at
// cleanup (after the cleanups registered later, which stop the routers),
// waits until no more run.
func checkNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		start := time.Now()
		for runtime.NumGoroutine() > before {
			if time.Since(start) > 10*time.Second {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("%d goroutines before, %d after stopping every router:\n%s", before, runtime.NumGoroutine(), buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// serve answers every request "id:text" read from conn with
// "id:TEXT:sender" until conn is closed.
func serve(t *testing.T, conn *meshconn.Peer) {
	buf := make([]byte, 1024)
	for {
		n, from, err := conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			t.Errorf("server read: %v", err)
			return
		}
		id, text, ok := strings.Cut(string(buf[:n]), ":")
		if !ok {
			t.Errorf("server: malformed request %q", buf[:n])
			continue
		}
		reply := fmt.Sprintf("%s:%s:%s", id, strings.ToUpper(text), from)
		if _, err := conn.WriteTo([]byte(reply), from); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("server write: %v", err)
		}
	}
}

// client sends requests over conn and matches the replies read by its own
// reading goroutine.
type client struct {
	conn   *meshconn.Peer
	server net.Addr

	mu      sync.Mutex
	waiting map[string]chan string
}

// read dispatches replies until conn is closed.
func (c *client) read(t *testing.T) {
	buf := make([]byte, 1024)
	for {
		n, from, err := c.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			t.Errorf("client read: %v", err)
			return
		}
		if from.(meshconn.MeshAddr).PeerName != c.server.(meshconn.MeshAddr).PeerName {
			t.Errorf("reply from %v, not from the server %v", from, c.server)
		}
		id, reply, _ := strings.Cut(string(buf[:n]), ":")
		c.mu.Lock()
		ch := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- reply
		}
	}
}

// call sends a request and waits for its reply. Datagrams may be lost, so
// it sends the request again every second.
func (c *client) call(id, text string) (string, error) {
	ch := make(chan string, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	timeout := time.After(deadline)
	for {
		if _, err := c.conn.WriteTo([]byte(id+":"+text), c.server); err != nil {
			return "", err
		}
		select {
		case reply := <-ch:
			return reply, nil
		case <-resend.C:
		case <-timeout:
			return "", fmt.Errorf("request %s: no reply within %v", id, deadline)
		}
	}
}

// A request/response protocol over meshconn between two peers that are
// not connected, but both connected to a third that relays and has no
// meshconn Peer itself: A – B – C.
func TestRequestResponseTwoHops(t *testing.T) {
	checkNoGoroutineLeak(t)
	a, b, c := startNode(t, 1, true), startNode(t, 2, false), startNode(t, 3, true)
	// Should A ever connect to C, a route change tells.
	var direct atomic.Bool
	a.router.Routes.OnChange(func() {
		if _, ok := a.router.Ourself.ConnectionTo(c.router.Ourself.Name); ok {
			direct.Store(true)
		}
	})
	a.connectTo(b)
	c.connectTo(b)
	eventually(t, "routes A→C and C→A via B", func() bool {
		ab, okA := a.router.Routes.Unicast(c.router.Ourself.Name)
		cb, okC := c.router.Routes.Unicast(a.router.Ourself.Name)
		return okA && okC && ab == b.router.Ourself.Name && cb == b.router.Ourself.Name
	})

	var servers sync.WaitGroup
	servers.Go(func() { serve(t, c.conn) })
	cl := &client{conn: a.conn, server: c.addr(), waiting: make(map[string]chan string)}
	servers.Go(func() { cl.read(t) })

	const callers, calls = 8, 25
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for i := range calls {
				id := fmt.Sprintf("%d.%d", w, i)
				text := fmt.Sprintf("request %d of caller %d", i, w)
				reply, err := cl.call(id, text)
				if err != nil {
					t.Error(err)
					return
				}
				// The server saw the request come from A, with A's UID.
				want := strings.ToUpper(text) + ":" + a.addr().String()
				if reply != want {
					t.Errorf("request %s: reply %q, want %q", id, reply, want)
				}
			}
		})
	}
	wg.Wait()

	// The datagrams went through B: A and C never connected.
	_, now := a.router.Ourself.ConnectionTo(c.router.Ourself.Name)
	require.False(t, now || direct.Load(), "A connected to C")
	require.Zero(t, a.conn.Dropped())
	require.Zero(t, c.conn.Dropped())

	a.conn.Close()
	c.conn.Close()
	servers.Wait()
}

// A datagram to our own name comes back through the router.
func TestWriteToSelf(t *testing.T) {
	checkNoGoroutineLeak(t)
	a := startNode(t, 1, true)
	_, err := a.conn.WriteTo([]byte("me"), a.addr())
	require.NoError(t, err)
	require.NoError(t, a.conn.SetReadDeadline(time.Now().Add(deadline)))
	buf := make([]byte, 8)
	n, from, err := a.conn.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "me", string(buf[:n]))
	require.Equal(t, a.addr(), from)
}

// Without a route, WriteTo reports the router's error; a read deadline
// ends a read that nothing answers.
func TestNoRoute(t *testing.T) {
	checkNoGoroutineLeak(t)
	a := startNode(t, 1, true)
	_, err := a.conn.WriteTo([]byte("x"), meshconn.MeshAddr{PeerName: 0x020000000099})
	require.ErrorIs(t, err, mesh.ErrNoRoute)
	require.NoError(t, a.conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, _, err = a.conn.ReadFrom(make([]byte, 8))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// BenchmarkRouters measures one datagram written by a Peer and read by
// another, between two routers connected over the loopback interface.
func BenchmarkRouters(b *testing.B) {
	x, y := startNode(b, 1, true), startNode(b, 2, true)
	x.connectTo(y)
	eventually(b, "routes between the two routers", func() bool {
		_, xy := x.router.Routes.Unicast(y.router.Ourself.Name)
		_, yx := y.router.Routes.Unicast(x.router.Ourself.Name)
		return xy && yx
	})
	const size = 64
	payload := make([]byte, size)
	buf := make([]byte, size)
	to := y.addr()
	// A lost datagram fails the benchmark rather than hanging it.
	require.NoError(b, y.conn.SetReadDeadline(time.Now().Add(10*deadline)))
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.conn.WriteTo(payload, to); err != nil {
			b.Fatal(err)
		}
		if got, _, err := y.conn.ReadFrom(buf); err != nil || got != size {
			b.Fatalf("read %d bytes, %v", got, err)
		}
	}
}
