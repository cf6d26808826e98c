package meshconn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

const (
	nameA = mesh.PeerName(0x020000000001)
	nameB = mesh.PeerName(0x020000000002)
)

// fakeNet delivers unicasts between Peers directly, standing in for the
// routers. A send blocks while the net is held. When the test ends, the net
// is released and the Peers are closed, which ends their sender
// goroutines. The Peers are closed when
// the test ends, which ends their sender goroutines.
type fakeNet struct {
	mu      sync.Mutex
	peers   map[mesh.PeerName]*Peer
	all     []*Peer       // every Peer joined
	held    chan struct{} // when non-nil, sends wait until it is closed
	calls   int           // sends begun
	waiting int           // sends waiting on held
}

func newFakeNet(t testing.TB) *fakeNet {
	n := &fakeNet{peers: make(map[mesh.PeerName]*Peer)}
	t.Cleanup(func() {
		n.mu.Lock()
		all := n.all
		if n.held != nil {
			close(n.held)
			n.held = nil
		}
		n.mu.Unlock()
		for _, p := range all {
			p.Close()
		}
	})
	return n
}

// join creates a Peer named name, registered with the net.
func (n *fakeNet) join(name mesh.PeerName, uid mesh.PeerUID) *Peer {
	p := NewPeer(name, uid, nil)
	n.mu.Lock()
	n.peers[name] = p
	n.all = append(n.all, p)
	n.mu.Unlock()
	p.Register(&fakeGossip{net: n, src: name})
	return p
}

// hold makes sends block until release.
func (n *fakeNet) hold() {
	n.mu.Lock()
	n.held = make(chan struct{})
	n.mu.Unlock()
}

func (n *fakeNet) release() {
	n.mu.Lock()
	close(n.held)
	n.held = nil
	n.mu.Unlock()
}

func (n *fakeNet) counts() (calls, waiting int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls, n.waiting
}

type fakeGossip struct {
	net *fakeNet
	src mesh.PeerName
}

func (g *fakeGossip) GossipUnicast(dst mesh.PeerName, msg []byte) error {
	n := g.net
	n.mu.Lock()
	n.calls++
	held := n.held
	if held != nil {
		n.waiting++
	}
	p := n.peers[dst]
	n.mu.Unlock()
	if held != nil {
		<-held
		n.mu.Lock()
		n.waiting--
		n.mu.Unlock()
	}
	if p == nil {
		return fmt.Errorf("%w %s", mesh.ErrNoRoute, dst)
	}
	return p.OnGossipUnicast(g.src, msg)
}

func (g *fakeGossip) GossipBroadcast(mesh.GossipData)       {}
func (g *fakeGossip) GossipNeighbourSubset(mesh.GossipData) {}

// datagram encodes a datagram as a peer named src would send it.
func datagram(t testing.TB, src mesh.PeerName, payload []byte) []byte {
	t.Helper()
	return (&pkt{SrcName: src, SrcUID: 1, Buf: payload}).encode()
}

// requireTimeout checks that err is a deadline error as net.Conn reports
// them.
func requireTimeout(t testing.TB, err error) {
	t.Helper()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "Timeout() of %v", err)
}

// result is what a ReadFrom or WriteTo run in the background returned.
type result struct {
	n    int
	addr net.Addr
	err  error
}

func readAsync(p *Peer, buf []byte) <-chan result {
	out := make(chan result, 1)
	go func() {
		n, addr, err := p.ReadFrom(buf)
		out <- result{n, addr, err}
	}()
	return out
}

func writeAsync(p *Peer, b []byte, dst net.Addr) <-chan result {
	out := make(chan result, 1)
	go func() {
		n, err := p.WriteTo(b, dst)
		out <- result{n: n, err: err}
	}()
	return out
}

// requireBlocked checks, once every goroutine of the bubble is blocked,
// that the operation has not returned.
func requireBlocked(t *testing.T, c <-chan result) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-c:
		t.Fatalf("returned (%d, %v, %v) while it should block", r.n, r.addr, r.err)
	default:
	}
}

func TestMeshAddr(t *testing.T) {
	a := MeshAddr{PeerName: nameA, PeerUID: 7}
	require.Equal(t, "weavemesh", a.Network())
	require.Equal(t, "weavemesh://02:00:00:00:00:01", a.String())
	p := NewPeer(nameA, 7, nil)
	require.Equal(t, a, p.LocalAddr())
	got, ok := meshAddrOf(&a)
	require.True(t, ok)
	require.Equal(t, a, got)
	_, ok = meshAddrOf((*MeshAddr)(nil))
	require.False(t, ok)
	_, ok = meshAddrOf(&net.UDPAddr{})
	require.False(t, ok)
}

func TestExchange(t *testing.T) {
	n := newFakeNet(t)
	a, b := n.join(nameA, 11), n.join(nameB, 22)
	written, err := a.WriteTo([]byte("ping"), MeshAddr{PeerName: nameB})
	require.NoError(t, err)
	require.Equal(t, 4, written)
	buf := make([]byte, 64)
	got, from, err := b.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf[:got]))
	require.Equal(t, MeshAddr{PeerName: nameA, PeerUID: 11}, from)

	// The address ReadFrom returned is good for the answer, as is a
	// pointer to a MeshAddr.
	_, err = b.WriteTo([]byte("pong"), from)
	require.NoError(t, err)
	_, err = b.WriteTo([]byte("pong again"), &MeshAddr{PeerName: nameA})
	require.NoError(t, err)
	for _, want := range []string{"pong", "pong again"} {
		got, from, err = a.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, want, string(buf[:got]))
		require.Equal(t, MeshAddr{PeerName: nameB, PeerUID: 22}, from)
	}

	// Empty datagrams are datagrams too.
	_, err = a.WriteTo(nil, MeshAddr{PeerName: nameB})
	require.NoError(t, err)
	got, _, err = b.ReadFrom(buf)
	require.NoError(t, err)
	require.Zero(t, got)
}

func TestShortRead(t *testing.T) {
	n := newFakeNet(t)
	a, b := n.join(nameA, 1), n.join(nameB, 2)
	_, err := a.WriteTo([]byte("0123456789"), MeshAddr{PeerName: nameB})
	require.NoError(t, err)
	buf := make([]byte, 4)
	got, from, err := b.ReadFrom(buf)
	require.ErrorIs(t, err, ErrShortRead)
	require.Equal(t, 4, got)
	require.Equal(t, "0123", string(buf))
	require.Equal(t, MeshAddr{PeerName: nameA, PeerUID: 1}, from)
	// The rest of the datagram is gone.
	require.NoError(t, b.SetReadDeadline(time.Now()))
	_, _, err = b.ReadFrom(buf)
	requireTimeout(t, err)
}

func TestWriteToErrors(t *testing.T) {
	n := newFakeNet(t)
	a := n.join(nameA, 1)
	n.join(nameB, 2)
	unregistered := NewPeer(nameA, 1, nil)
	closed := n.join(nameB, 2)
	require.NoError(t, closed.Close())
	for _, tc := range []struct {
		name string
		p    *Peer
		b    []byte
		dst  net.Addr
		want error
	}{
		{"not registered", unregistered, []byte("x"), MeshAddr{PeerName: nameB}, ErrGossipNotRegistered},
		{"UDP address", a, []byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, ErrNotMeshAddr},
		{"nil address", a, []byte("x"), nil, ErrNotMeshAddr},
		{"nil *MeshAddr", a, []byte("x"), (*MeshAddr)(nil), ErrNotMeshAddr},
		{"too large", a, make([]byte, MaxDatagramSize+1), MeshAddr{PeerName: nameB}, ErrDatagramTooLarge},
		{"no route", a, []byte("x"), MeshAddr{PeerName: 0x020000000099}, mesh.ErrNoRoute},
		{"closed", closed, []byte("x"), MeshAddr{PeerName: nameA}, net.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.WriteTo(tc.b, tc.dst)
			require.ErrorIs(t, err, tc.want)
			require.Zero(t, got)
		})
	}
	// The largest datagram allowed goes through.
	got, err := a.WriteTo(make([]byte, MaxDatagramSize), MeshAddr{PeerName: nameB})
	require.NoError(t, err)
	require.Equal(t, MaxDatagramSize, got)
}

func TestReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, b := n.join(nameA, 1), n.join(nameB, 2)
		buf := make([]byte, 16)

		// A deadline in the past fails at once.
		require.NoError(t, b.SetReadDeadline(time.Now().Add(-time.Second)))
		_, _, err := b.ReadFrom(buf)
		requireTimeout(t, err)

		// A deadline set while ReadFrom blocks applies to it.
		require.NoError(t, b.SetReadDeadline(time.Time{}))
		r := readAsync(b, buf)
		requireBlocked(t, r)
		start := time.Now()
		require.NoError(t, b.SetReadDeadline(start.Add(time.Second)))
		requireBlocked(t, r)
		// Moved later while blocked: it holds until the new time.
		require.NoError(t, b.SetReadDeadline(start.Add(3*time.Second)))
		time.Sleep(2 * time.Second)
		requireBlocked(t, r)
		requireTimeout(t, (<-r).err)
		require.Equal(t, 3*time.Second, time.Since(start))

		// Cleared while blocked: the read waits for a datagram.
		require.NoError(t, b.SetReadDeadline(time.Now().Add(time.Second)))
		r = readAsync(b, buf)
		requireBlocked(t, r)
		require.NoError(t, b.SetReadDeadline(time.Time{}))
		time.Sleep(time.Hour)
		requireBlocked(t, r)
		_, err = a.WriteTo([]byte("late"), MeshAddr{PeerName: nameB})
		require.NoError(t, err)
		got := <-r
		require.NoError(t, got.err)
		require.Equal(t, "late", string(buf[:got.n]))

		// SetDeadline sets the read deadline too.
		require.NoError(t, b.SetDeadline(time.Now().Add(time.Second)))
		r = readAsync(b, buf)
		requireBlocked(t, r)
		requireTimeout(t, (<-r).err)
	})
}

func TestWriteDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, b := n.join(nameA, 1), n.join(nameB, 2)
		dst := MeshAddr{PeerName: nameB}

		require.NoError(t, a.SetWriteDeadline(time.Now().Add(-time.Second)))
		_, err := a.WriteTo([]byte("x"), dst)
		requireTimeout(t, err)
		calls, _ := n.counts()
		require.Zero(t, calls, "a write past its deadline must not be sent")

		// The send queue is full: the write blocks until a deadline set
		// meanwhile passes.
		require.NoError(t, a.SetWriteDeadline(time.Time{}))
		n.hold()
		w := writeAsync(a, []byte("held"), dst)
		requireBlocked(t, w)
		require.NoError(t, a.SetWriteDeadline(time.Now().Add(time.Second)))
		requireBlocked(t, w)
		r := <-w
		requireTimeout(t, r.err)
		require.Zero(t, r.n)

		// Moved later while blocked: it holds until the new time.
		require.NoError(t, a.SetWriteDeadline(time.Time{}))
		w = writeAsync(a, []byte("held 2"), dst)
		requireBlocked(t, w)
		start := time.Now()
		require.NoError(t, a.SetWriteDeadline(start.Add(time.Second)))
		requireBlocked(t, w)
		require.NoError(t, a.SetWriteDeadline(start.Add(3*time.Second)))
		time.Sleep(2 * time.Second)
		requireBlocked(t, w)
		requireTimeout(t, (<-w).err)
		require.Equal(t, 3*time.Second, time.Since(start))

		// Cleared while blocked: the write waits for room.
		require.NoError(t, a.SetWriteDeadline(time.Now().Add(time.Second)))
		w = writeAsync(a, []byte("held 3"), dst)
		requireBlocked(t, w)
		require.NoError(t, a.SetWriteDeadline(time.Time{}))
		time.Sleep(time.Hour)
		requireBlocked(t, w)
		n.release()
		r = <-w
		require.NoError(t, r.err)
		require.Equal(t, len("held 3"), r.n)

		// Once there is room, writing works again.
		_, err = a.WriteTo([]byte("after"), dst)
		require.NoError(t, err)
		buf := make([]byte, 16)
		var got []string
		for range 4 {
			m, _, err := b.ReadFrom(buf)
			require.NoError(t, err)
			got = append(got, string(buf[:m]))
		}
		// The datagrams given up on were still sent once there was room.
		require.ElementsMatch(t, []string{"held", "held 2", "held 3", "after"}, got)
	})
}

// TestSendersReused checks that WriteTo hands datagrams to sender
// goroutines that stay, rather than starting one per datagram, and that
// the senders end once idle or at Close.
func TestSendersReused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, b := n.join(nameA, 1), n.join(nameB, 2)
		dst := MeshAddr{PeerName: nameB}
		buf := make([]byte, 16)
		exchange := func(count int) {
			t.Helper()
			for i := range count {
				_, err := a.WriteTo(fmt.Appendf(nil, "%d", i), dst)
				require.NoError(t, err)
				m, _, err := b.ReadFrom(buf)
				require.NoError(t, err)
				require.Equal(t, fmt.Sprint(i), string(buf[:m]))
			}
		}
		exchange(1000)
		// One sender serves a writer that waits for each datagram; a
		// second may start when a datagram comes before the first sender
		// is back waiting. Senders that stay are counted, and none ended:
		// time does not pass while the writer works.
		require.LessOrEqual(t, a.senders.Load(), int32(4))
		require.Positive(t, a.senders.Load())

		// Senders end after at most two senderIdle without datagrams.
		time.Sleep(2 * senderIdle)
		synctest.Wait()
		require.Zero(t, a.senders.Load())

		// They start again when needed, and end at Close.
		exchange(10)
		require.Positive(t, a.senders.Load())
		require.NoError(t, a.Close())
		synctest.Wait()
		require.Zero(t, a.senders.Load())

		// A sender busy at Close ends once its call returns.
		n.hold()
		w := writeAsync(b, []byte("x"), MeshAddr{PeerName: nameA})
		requireBlocked(t, w)
		require.Equal(t, int32(1), b.senders.Load())
		require.NoError(t, b.Close())
		require.ErrorIs(t, (<-w).err, ErrPeerClosed)
		synctest.Wait()
		require.Equal(t, int32(1), b.senders.Load())
		n.release()
		synctest.Wait()
		require.Zero(t, b.senders.Load())
	})
}

// TestSendersBeyondMax checks that a sender started while maxSenders stay
// makes its call and ends.
func TestSendersBeyondMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, b := n.join(nameA, 1), n.join(nameB, 2)
		// As if maxSenders senders were all busy.
		a.senders.Store(maxSenders)
		_, err := a.WriteTo([]byte("x"), MeshAddr{PeerName: nameB})
		require.NoError(t, err)
		m, _, err := b.ReadFrom(make([]byte, 8))
		require.NoError(t, err)
		require.Equal(t, 1, m)
		synctest.Wait()
		require.Equal(t, int32(maxSenders), a.senders.Load())
		select {
		case a.sendq <- nil:
			t.Fatal("a sender started beyond maxSenders stayed")
		default:
		}
		a.senders.Store(0)
	})
}

func TestPendingWritesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, _ := n.join(nameA, 1), n.join(nameB, 2)
		n.hold()
		for range maxPendingWrites + 10 {
			require.NoError(t, a.SetWriteDeadline(time.Now().Add(time.Second)))
			_, err := a.WriteTo([]byte("x"), MeshAddr{PeerName: nameB})
			requireTimeout(t, err)
		}
		synctest.Wait()
		calls, waiting := n.counts()
		require.Equal(t, maxPendingWrites, calls)
		require.Equal(t, maxPendingWrites, waiting)
		require.LessOrEqual(t, a.senders.Load(), int32(maxSenders))
		n.release()
		synctest.Wait()
		_, waiting = n.counts()
		require.Zero(t, waiting)
	})
}

func TestCloseUnblocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t)
		a, b := n.join(nameA, 1), n.join(nameB, 2)
		readers := []<-chan result{readAsync(a, make([]byte, 8)), readAsync(a, make([]byte, 8))}
		n.hold()
		w := writeAsync(a, []byte("x"), MeshAddr{PeerName: nameB})
		for _, r := range append(readers, w) {
			requireBlocked(t, r)
		}
		require.NoError(t, a.Close())
		for _, r := range append(readers, w) {
			err := (<-r).err
			require.ErrorIs(t, err, net.ErrClosed)
			require.ErrorIs(t, err, ErrPeerClosed)
		}
		require.NoError(t, a.Close(), "a second Close")
		_, _, err := a.ReadFrom(make([]byte, 8))
		require.ErrorIs(t, err, net.ErrClosed)
		_, err = a.WriteTo([]byte("x"), MeshAddr{PeerName: nameB})
		require.ErrorIs(t, err, net.ErrClosed)
		n.release()

		// Datagrams for a closed Peer are discarded, not queued.
		_, err = b.WriteTo([]byte("to closed"), MeshAddr{PeerName: nameA})
		require.NoError(t, err)
		require.Zero(t, len(a.recv))
		require.Zero(t, a.queuedBytes.Load())
	})
}

// captureLogger records log lines.
type captureLogger struct {
	mu    sync.Mutex
	lines []string
}

func (l *captureLogger) Printf(format string, args ...interface{}) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *captureLogger) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func TestReceiveQueueCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &captureLogger{}
		p := NewPeer(nameB, 2, log)
		const extra = 5
		for i := range ReceiveQueueLen + extra {
			require.NoError(t, p.OnGossipUnicast(nameA, datagram(t, nameA, fmt.Appendf(nil, "%d", i))))
		}
		require.Equal(t, uint64(extra), p.Dropped())
		// Drops are logged once, not once each.
		require.Len(t, log.get(), 1)
		require.Contains(t, log.get()[0], "receive queue full")

		// The oldest datagrams were kept, in order; the newest dropped.
		buf := make([]byte, 16)
		for i := range ReceiveQueueLen {
			n, _, err := p.ReadFrom(buf)
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(i), string(buf[:n]))
		}
		require.NoError(t, p.SetReadDeadline(time.Now()))
		_, _, err := p.ReadFrom(buf)
		requireTimeout(t, err)

		// Once read, there is room again. A minute later, drops are logged
		// again.
		require.NoError(t, p.OnGossipUnicast(nameA, datagram(t, nameA, []byte("again"))))
		require.Equal(t, uint64(extra), p.Dropped())
		time.Sleep(dropLogInterval)
		for range ReceiveQueueLen {
			require.NoError(t, p.OnGossipUnicast(nameA, datagram(t, nameA, nil)))
		}
		require.Equal(t, uint64(extra+1), p.Dropped())
		require.Len(t, log.get(), 2)
	})
}

func TestReceiveQueueBytes(t *testing.T) {
	p := NewPeer(nameB, 2, nil)
	const size = 1 << 20
	big := datagram(t, nameA, make([]byte, size))
	for range ReceiveQueueBytes / size {
		require.NoError(t, p.OnGossipUnicast(nameA, big))
	}
	require.Zero(t, p.Dropped())
	require.NoError(t, p.OnGossipUnicast(nameA, big))
	require.Equal(t, uint64(1), p.Dropped(), "over ReceiveQueueBytes")
	// Small datagrams do not fit either while the bytes are used up.
	require.NoError(t, p.OnGossipUnicast(nameA, datagram(t, nameA, []byte("x"))))
	require.Equal(t, uint64(2), p.Dropped())

	buf := make([]byte, size)
	_, _, err := p.ReadFrom(buf)
	require.NoError(t, err)
	require.NoError(t, p.OnGossipUnicast(nameA, big))
	require.Equal(t, uint64(2), p.Dropped(), "room after a read")
	require.Equal(t, int64(ReceiveQueueBytes), p.queuedBytes.Load())

	// A datagram larger than MaxDatagramSize is refused, not queued; the
	// largest allowed is accepted.
	q := NewPeer(nameB, 2, nil)
	err = q.OnGossipUnicast(nameA, datagram(t, nameA, make([]byte, MaxDatagramSize+1)))
	require.ErrorIs(t, err, ErrDatagramTooLarge)
	require.ErrorIs(t, err, mesh.ErrMalformed)
	require.Zero(t, len(q.recv))
	require.NoError(t, q.OnGossipUnicast(nameA, datagram(t, nameA, make([]byte, MaxDatagramSize))))
	require.Equal(t, 1, len(q.recv))
	require.Zero(t, q.Dropped())
}

func TestMalformedDatagrams(t *testing.T) {
	p := NewPeer(nameB, 2, nil)
	for _, msg := range [][]byte{nil, []byte("garbage"), datagram(t, nameA, []byte("x"))[:10]} {
		require.Error(t, p.OnGossipUnicast(nameA, msg))
	}
	// The name inside the datagram must be the unicast's source.
	err := p.OnGossipUnicast(nameB, datagram(t, nameA, []byte("x")))
	require.ErrorContains(t, err, "claims to come from")
	require.Zero(t, len(p.recv))

	// Broadcasts and gossip on the channel are ignored.
	d, err := p.OnGossipBroadcast(nameA, datagram(t, nameA, []byte("x")))
	require.NoError(t, err)
	require.Nil(t, d)
	d, err = p.OnGossip(datagram(t, nameA, []byte("x")))
	require.NoError(t, err)
	require.Nil(t, d)
	require.Nil(t, p.Gossip())
	require.Zero(t, len(p.recv))
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	n := newFakeNet(t)
	a, b := n.join(nameA, 1), n.join(nameB, 2)
	const writers, each = 4, 200
	want := make(map[string]bool)
	var writing sync.WaitGroup
	for w := range writers {
		for i := range each {
			want[fmt.Sprintf("%d/%d", w, i)] = true
		}
		writing.Go(func() {
			for i := range each {
				if _, err := a.WriteTo(fmt.Appendf(nil, "%d/%d", w, i), MeshAddr{PeerName: nameB}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var (
		reading sync.WaitGroup
		mu      sync.Mutex
		seen    = make(map[string]bool)
	)
	for range 3 {
		reading.Go(func() {
			buf := make([]byte, 32)
			for {
				m, _, err := b.ReadFrom(buf)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				seen[string(buf[:m])] = true
				done := len(seen) == len(want)
				mu.Unlock()
				if done {
					b.Close()
				}
			}
		})
	}
	writing.Wait()
	// Everything has been delivered to b's queue by now; should some be
	// missing, the readers time out instead of waiting for ever.
	require.NoError(t, b.SetReadDeadline(time.Now().Add(time.Minute)))
	reading.Wait()
	require.Equal(t, want, seen)
	require.Zero(t, b.Dropped())
}
