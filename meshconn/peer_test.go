package meshconn

import (
	"bytes"
	"encoding/gob"
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
// routers. A send blocks while the net is held.
type fakeNet struct {
	mu      sync.Mutex
	peers   map[mesh.PeerName]*Peer
	held    chan struct{} // when non-nil, sends wait until it is closed
	calls   int           // sends begun
	waiting int           // sends waiting on held
}

func newFakeNet() *fakeNet { return &fakeNet{peers: make(map[mesh.PeerName]*Peer)} }

// join creates a Peer named name, registered with the net.
func (n *fakeNet) join(name mesh.PeerName, uid mesh.PeerUID) *Peer {
	p := NewPeer(name, uid, nil)
	n.mu.Lock()
	n.peers[name] = p
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
	msg, err := (&pkt{SrcName: src, SrcUID: 1, Buf: payload}).encode()
	require.NoError(t, err)
	return msg
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
	n := newFakeNet()
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
	n := newFakeNet()
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
	n := newFakeNet()
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
		n := newFakeNet()
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
		n := newFakeNet()
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

		// Once there is room, writing works again.
		n.release()
		require.NoError(t, a.SetDeadline(time.Time{}))
		_, err = a.WriteTo([]byte("after"), dst)
		require.NoError(t, err)
		buf := make([]byte, 16)
		var got []string
		for range 2 {
			m, _, err := b.ReadFrom(buf)
			require.NoError(t, err)
			got = append(got, string(buf[:m]))
		}
		// The datagram given up on was still sent once there was room.
		require.ElementsMatch(t, []string{"held", "after"}, got)
	})
}

func TestPendingWritesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet()
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
		n.release()
		synctest.Wait()
		_, waiting = n.counts()
		require.Zero(t, waiting)
	})
}

func TestCloseUnblocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet()
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

	// A datagram larger than the whole byte bound is accepted into an
	// empty queue.
	q := NewPeer(nameB, 2, nil)
	require.NoError(t, q.OnGossipUnicast(nameA, datagram(t, nameA, make([]byte, 2*ReceiveQueueBytes))))
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

// weavePkt has the shape of the datagrams of weave's meshconn: a struct
// gob-encoded on its own by a fresh encoder.
type weavePkt struct {
	SrcName mesh.PeerName
	SrcUID  mesh.PeerUID
	Buf     []byte
}

func TestWeaveWireFormat(t *testing.T) {
	var enc bytes.Buffer
	require.NoError(t, gob.NewEncoder(&enc).Encode(weavePkt{SrcName: nameA, SrcUID: 99, Buf: []byte("from weave")}))
	p := NewPeer(nameB, 2, nil)
	require.NoError(t, p.OnGossipUnicast(nameA, enc.Bytes()))
	buf := make([]byte, 32)
	n, from, err := p.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "from weave", string(buf[:n]))
	require.Equal(t, MeshAddr{PeerName: nameA, PeerUID: 99}, from)

	ours, err := (&pkt{SrcName: nameB, SrcUID: 2, Buf: []byte("to weave")}).encode()
	require.NoError(t, err)
	var w weavePkt
	require.NoError(t, gob.NewDecoder(bytes.NewReader(ours)).Decode(&w))
	require.Equal(t, weavePkt{SrcName: nameB, SrcUID: 2, Buf: []byte("to weave")}, w)
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	n := newFakeNet()
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
