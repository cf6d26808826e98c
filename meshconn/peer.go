package meshconn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gossip-mesh/mesh"
)

// Limits of a Peer.
const (
	// MaxDatagramSize is the largest payload WriteTo sends: 8 MiB, which
	// leaves room for headers in a frame of the default size. Larger
	// datagrams are refused with ErrDatagramTooLarge, and discarded when
	// received.
	MaxDatagramSize = 8 << 20
	// ReceiveQueueLen is how many received datagrams wait for ReadFrom at
	// most. Further datagrams are dropped until a reader makes room.
	ReceiveQueueLen = 1024
	// ReceiveQueueBytes bounds the payload bytes waiting for ReadFrom. A
	// datagram that arrives when the queue is empty is always accepted.
	ReceiveQueueBytes = 16 << 20
)

// maxPendingWrites bounds the writes under way at once, counting those
// that a deadline or Close gave up on but that still wait for room in a
// send queue, so that a writer retrying after timeouts cannot pile up
// goroutines and buffers.
const maxPendingWrites = 64

// maxSenders bounds the sender goroutines that wait for more datagrams to
// send after one; a sender that waits in vain ends within two senderIdle.
const (
	maxSenders = maxPendingWrites
	senderIdle = time.Second
)

// dropLogInterval is how often, at most, dropped datagrams are logged.
const dropLogInterval = time.Minute

// Errors returned by a Peer. Besides these, ReadFrom and WriteTo return
// os.ErrDeadlineExceeded when a deadline passes, and WriteTo returns the
// errors of mesh.Gossip.GossipUnicast, such as mesh.ErrNoRoute.
var (
	// ErrShortRead is returned by ReadFrom, with the first len(b) bytes of
	// the datagram, when b is too small for it. The rest is discarded.
	ErrShortRead = errors.New("meshconn: short read")
	// ErrPeerClosed is returned by ReadFrom and WriteTo once the Peer is
	// closed. errors.Is(ErrPeerClosed, net.ErrClosed) holds.
	ErrPeerClosed = fmt.Errorf("meshconn: peer closed: %w", net.ErrClosed)
	// ErrGossipNotRegistered is returned by WriteTo before Register.
	ErrGossipNotRegistered = errors.New("meshconn: gossip not registered")
	// ErrNotMeshAddr is returned by WriteTo when the destination is neither
	// a MeshAddr nor a *MeshAddr.
	ErrNotMeshAddr = errors.New("meshconn: not a mesh address")
	// ErrDatagramTooLarge is returned by WriteTo for a datagram larger than
	// MaxDatagramSize.
	ErrDatagramTooLarge = errors.New("meshconn: datagram larger than MaxDatagramSize")
	// ErrNotSupported is kept for programs written against weave's
	// meshconn, whose deadline methods returned it. Nothing returns it
	// here: deadlines are supported.
	ErrNotSupported = errors.New("meshconn: not supported")
)

// Peer is a net.PacketConn over the unicast messages of one gossip
// channel, and the mesh.Gossiper of that channel. Create it with NewPeer,
// register it with Router.NewGossip and pass the returned mesh.Gossip to
// Register. All methods are safe for concurrent use.
type Peer struct {
	name   mesh.PeerName
	uid    mesh.PeerUID
	logger mesh.Logger

	gossip atomic.Pointer[gossipBox]

	// recv is the receive queue; queuedBytes counts the payload bytes in
	// it. Datagrams are added under pushMu, taken by readers without it.
	recv        chan pkt
	queuedBytes atomic.Int64
	pushMu      sync.Mutex
	lastDropLog time.Time // guarded by pushMu
	dropped     atomic.Uint64

	// writeSlots bounds the GossipUnicast calls under way. sendq hands
	// datagrams to idle senders; senders counts those that stay.
	writeSlots    chan struct{}
	sendq         chan *writeReq
	senders       atomic.Int32
	reqs          sync.Pool // of *writeReq
	reapMu        sync.Mutex
	reaper        *time.Timer // ends idle senders; guarded by reapMu
	reaping       bool        // reaper is set; guarded by reapMu
	readDeadline  *deadline
	writeDeadline *deadline
	closed        chan struct{}
	closeOnce     sync.Once
}

// gossipBox holds the registered mesh.Gossip, so it can be swapped
// atomically.
type gossipBox struct{ g mesh.Gossip }

var (
	_ net.PacketConn = (*Peer)(nil)
	_ mesh.Gossiper  = (*Peer)(nil)
)

// NewPeer returns a Peer whose datagrams come from name, which should be
// the name of the router it is registered with, and uid, usually that
// router's Ourself.UID. logger may be nil, which means silent.
func NewPeer(name mesh.PeerName, uid mesh.PeerUID, logger mesh.Logger) *Peer {
	return &Peer{
		name:          name,
		uid:           uid,
		logger:        logger,
		recv:          make(chan pkt, ReceiveQueueLen),
		writeSlots:    make(chan struct{}, maxPendingWrites),
		sendq:         make(chan *writeReq),
		readDeadline:  newDeadline(),
		writeDeadline: newDeadline(),
		closed:        make(chan struct{}),
	}
}

// Register gives the Peer the mesh.Gossip returned by Router.NewGossip, on
// which WriteTo sends.
func (p *Peer) Register(gossip mesh.Gossip) {
	p.gossip.Store(&gossipBox{g: gossip})
}

func (p *Peer) registered() mesh.Gossip {
	if b := p.gossip.Load(); b != nil {
		return b.g
	}
	return nil
}

// ReadFrom waits for a datagram, copies it into b and returns the number
// of bytes copied and the sender's address, a MeshAddr. When b is too
// small, the datagram is truncated and ErrShortRead is returned with the
// address. It returns os.ErrDeadlineExceeded once the read deadline has
// passed and ErrPeerClosed once the Peer is closed.
func (p *Peer) ReadFrom(b []byte) (int, net.Addr, error) {
	expired := p.readDeadline.expired()
	if isClosed(p.closed) {
		return 0, nil, ErrPeerClosed
	}
	if isClosed(expired) {
		return 0, nil, os.ErrDeadlineExceeded
	}
	select {
	case d := <-p.recv:
		p.queuedBytes.Add(-int64(len(d.Buf)))
		n := copy(b, d.Buf)
		addr := MeshAddr{PeerName: d.SrcName, PeerUID: d.SrcUID}
		if n < len(d.Buf) {
			return n, addr, ErrShortRead
		}
		return n, addr, nil
	case <-p.closed:
		return 0, nil, ErrPeerClosed
	case <-expired:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo sends b as one datagram to the peer named by dst, a MeshAddr or
// *MeshAddr, and returns len(b) once the datagram is queued for sending.
// It blocks while the send queue towards the next hop is full, until the
// write deadline passes or the Peer is closed; a datagram given up on that
// way may still be sent later. A datagram to our own name is delivered to
// our own ReadFrom.
func (p *Peer) WriteTo(b []byte, dst net.Addr) (int, error) {
	if isClosed(p.closed) {
		return 0, ErrPeerClosed
	}
	addr, ok := meshAddrOf(dst)
	if !ok {
		return 0, ErrNotMeshAddr
	}
	if len(b) > MaxDatagramSize {
		return 0, ErrDatagramTooLarge
	}
	g := p.registered()
	if g == nil {
		return 0, ErrGossipNotRegistered
	}
	expired := p.writeDeadline.expired()
	if isClosed(expired) {
		return 0, os.ErrDeadlineExceeded
	}
	msg := (&pkt{SrcName: p.name, SrcUID: p.uid, Buf: b}).encode()
	select {
	case p.writeSlots <- struct{}{}:
	default:
		select {
		case p.writeSlots <- struct{}{}:
		case <-p.closed:
			return 0, ErrPeerClosed
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
	// GossipUnicast cannot be interrupted, so a sender goroutine makes
	// the call, keeping the slot until it returns, while we wait for it,
	// the deadline or Close.
	req := p.newWriteReq()
	req.gossip, req.dst, req.msg = g, addr.PeerName, msg
	p.handOff(req)
	var gaveUp error
	select {
	case err := <-req.done:
		p.recycle(req)
		return sent(len(b), err)
	case <-p.closed:
		gaveUp = ErrPeerClosed
	case <-expired:
		gaveUp = os.ErrDeadlineExceeded
	}
	select {
	case err := <-req.done: // finished at the same moment: report it
		p.recycle(req)
		return sent(len(b), err)
	default:
		// The sender still holds req and sends its result to no one;
		// req is not reused.
		return 0, gaveUp
	}
}

// writeReq is one datagram handed to a sender goroutine. The writer
// reuses it once it has received the result; done has room for the
// result, so that a sender never waits for a writer that gave up.
type writeReq struct {
	gossip mesh.Gossip
	dst    mesh.PeerName
	msg    []byte
	done   chan error
}

// newWriteReq returns a writeReq from the Peer's pool. Each Peer has a pool
// of its own, so that the channels in it are used only by the goroutines
// of the Peer's user (and of one synctest bubble, in tests).
func (p *Peer) newWriteReq() *writeReq {
	if r, ok := p.reqs.Get().(*writeReq); ok {
		return r
	}
	return &writeReq{done: make(chan error, 1)}
}

// recycle returns req, whose result has been received, to the pool.
func (p *Peer) recycle(req *writeReq) {
	req.gossip, req.msg = nil, nil
	p.reqs.Put(req)
}

// handOff gives req, whose writer holds a slot, to an idle sender, or else
// to a new one. Up to maxSenders senders stay after their call, waiting
// for more; those started beyond make one call only. Since a sender takes
// only requests holding a slot, and the slots are at most
// maxPendingWrites, there are at most maxSenders+maxPendingWrites senders.
func (p *Peer) handOff(req *writeReq) {
	select {
	case p.sendq <- req:
		return
	default:
	}
	stay := p.senders.Add(1) <= maxSenders
	if stay {
		p.startReaper()
	} else {
		p.senders.Add(-1)
	}
	go p.sender(req, stay)
}

// sender makes the GossipUnicast call of req and, if it is to stay, those
// of the requests it receives next, until the Peer is closed or it
// receives a nil request, which the reaper sends to waiting senders every
// senderIdle, without a datagram since the one before. A request belongs
// to its writer again once the result is sent.
func (p *Peer) sender(req *writeReq, stay bool) {
	if stay {
		defer p.senders.Add(-1)
	}
	busy := true // a datagram came since the last nil request
	for {
		if req == nil {
			if !busy {
				return
			}
			busy = false
		} else {
			err := req.gossip.GossipUnicast(req.dst, req.msg)
			<-p.writeSlots
			req.done <- err
			if !stay {
				return
			}
			busy = true
		}
		select {
		case req = <-p.sendq:
		case <-p.closed:
			return
		}
	}
}

// startReaper starts the reaper unless it runs: a timer that, every
// senderIdle, sends a nil request to each sender that waits for one, for
// as long as senders stay.
func (p *Peer) startReaper() {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	if p.reaping {
		return
	}
	p.reaping = true
	if p.reaper == nil {
		p.reaper = time.AfterFunc(senderIdle, p.reap)
	} else {
		p.reaper.Reset(senderIdle)
	}
}

// reap is the reaper's function.
func (p *Peer) reap() {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	if !p.reaping {
		return
	}
	for range p.senders.Load() {
		select {
		case p.sendq <- nil:
		default:
		}
	}
	if p.senders.Load() > 0 && !isClosed(p.closed) {
		p.reaper.Reset(senderIdle)
	} else {
		p.reaping = false
	}
}

func sent(n int, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Close closes the Peer: blocked and later ReadFrom and WriteTo calls
// return ErrPeerClosed, and datagrams still queued or arriving later are
// discarded. The Peer stays registered with the router, which goes on
// passing it messages to discard. Close may be called more than once.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.pushMu.Lock()
		close(p.closed)
		p.pushMu.Unlock()
		p.readDeadline.stop()
		p.writeDeadline.stop()
		// The senders end on their own; the reaper is no longer needed.
		p.reapMu.Lock()
		if p.reaping {
			p.reaper.Stop()
			p.reaping = false
		}
		p.reapMu.Unlock()
		for {
			select {
			case d := <-p.recv:
				p.queuedBytes.Add(-int64(len(d.Buf)))
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr returns our MeshAddr: the name and UID given to NewPeer.
func (p *Peer) LocalAddr() net.Addr {
	return MeshAddr{PeerName: p.name, PeerUID: p.uid}
}

// SetDeadline sets both the read and the write deadline.
func (p *Peer) SetDeadline(t time.Time) error {
	p.readDeadline.set(t)
	p.writeDeadline.set(t)
	return nil
}

// SetReadDeadline sets the time after which ReadFrom returns
// os.ErrDeadlineExceeded, including calls already blocked. The zero time
// means no deadline.
func (p *Peer) SetReadDeadline(t time.Time) error {
	p.readDeadline.set(t)
	return nil
}

// SetWriteDeadline sets the time after which WriteTo returns
// os.ErrDeadlineExceeded, including calls already blocked. The zero time
// means no deadline.
func (p *Peer) SetWriteDeadline(t time.Time) error {
	p.writeDeadline.set(t)
	return nil
}

// Dropped returns how many received datagrams were dropped because the
// receive queue was full.
func (p *Peer) Dropped() uint64 { return p.dropped.Load() }

// push adds a received datagram to the receive queue, or drops it when the
// queue is full. It never blocks.
func (p *Peer) push(d pkt) {
	size := int64(len(d.Buf))
	p.pushMu.Lock()
	defer p.pushMu.Unlock()
	if isClosed(p.closed) {
		return
	}
	if len(p.recv) > 0 && p.queuedBytes.Load()+size > ReceiveQueueBytes {
		p.drop(d)
		return
	}
	p.queuedBytes.Add(size)
	select {
	case p.recv <- d:
	default:
		p.queuedBytes.Add(-size)
		p.drop(d)
	}
}

// drop counts a dropped datagram and logs it, at most once per
// dropLogInterval. The caller holds pushMu.
func (p *Peer) drop(d pkt) {
	n := p.dropped.Add(1)
	if now := time.Now(); p.logger != nil && now.Sub(p.lastDropLog) >= dropLogInterval {
		p.lastDropLog = now
		p.logger.Printf("meshconn: receive queue full, dropped a datagram from %s (%d dropped in all)", d.SrcName, n)
	}
}

// OnGossipUnicast implements mesh.Gossiper: msg is one datagram, which
// joins the receive queue.
func (p *Peer) OnGossipUnicast(src mesh.PeerName, msg []byte) error {
	d, err := decodePkt(msg)
	if err != nil {
		return err
	}
	if d.SrcName != src {
		return fmt.Errorf("meshconn: datagram from %s claims to come from %s", src, d.SrcName)
	}
	p.push(d)
	return nil
}

// OnGossipBroadcast implements mesh.Gossiper. Datagrams travel by unicast
// only, so broadcasts on the channel are ignored.
func (p *Peer) OnGossipBroadcast(mesh.PeerName, []byte) (mesh.GossipData, error) {
	return nil, nil
}

// Gossip implements mesh.Gossiper: a Peer has no state to gossip.
func (p *Peer) Gossip() mesh.GossipData { return nil }

// OnGossip implements mesh.Gossiper. Datagrams travel by unicast only, so
// gossip on the channel is ignored.
func (p *Peer) OnGossip([]byte) (mesh.GossipData, error) { return nil, nil }
