package harness

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/hashicorp/memberlist"
)

// countingConn counts the bytes written on a connection.
type countingConn struct {
	net.Conn
	sent *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

// SetLinger passes SetLinger on to the wrapped connection, so that code
// aborting a connection with SetLinger(0) behaves as without the wrapper.
func (c *countingConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// countingListener wraps the connections it accepts in countingConns.
type countingListener struct {
	net.Listener
	sent *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: l.sent}, nil
}

// meshTransport is a mesh.Transport over TCP that counts the bytes written
// on every connection, inbound and outbound.
type meshTransport struct {
	inner mesh.TCPTransport
	sent  atomic.Int64
}

var _ mesh.Transport = (*meshTransport)(nil)

// Listen implements mesh.Transport.
func (t *meshTransport) Listen(address string) (net.Listener, error) {
	ln, err := t.inner.Listen(address)
	if err != nil {
		return nil, err
	}
	return &countingListener{Listener: ln, sent: &t.sent}, nil
}

// DialContext implements mesh.Transport.
func (t *meshTransport) DialContext(ctx context.Context, address string) (net.Conn, error) {
	c, err := t.inner.DialContext(ctx, address)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: &t.sent}, nil
}

// Sent returns the bytes written so far.
func (t *meshTransport) Sent() int64 { return t.sent.Load() }

// mlTransport wraps a memberlist.NetTransport and counts the bytes of every
// UDP packet it sends and every byte written on its TCP streams, inbound
// (handed over through StreamCh) and outbound (DialTimeout).
type mlTransport struct {
	inner *memberlist.NetTransport
	sent  atomic.Int64

	streams  chan net.Conn
	done     chan struct{}
	fwdDone  chan struct{}
	shutOnce sync.Once
	shutErr  error
}

var _ memberlist.NodeAwareTransport = (*mlTransport)(nil)

// newMLTransport starts a NetTransport bound to 127.0.0.1 on a free port
// (the same number for TCP and UDP; it retries when the UDP port is taken).
func newMLTransport() (*mlTransport, error) {
	var inner *memberlist.NetTransport
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		inner, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			BindPort:  0,
			Logger:    discardLogger,
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	t := &mlTransport{
		inner:   inner,
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
		fwdDone: make(chan struct{}),
	}
	go t.forward()
	return t, nil
}

// forward wraps the inbound streams of the inner transport.
func (t *mlTransport) forward() {
	defer close(t.fwdDone)
	for {
		select {
		case <-t.done:
			return
		case c := <-t.inner.StreamCh():
			w := &countingConn{Conn: c, sent: &t.sent}
			select {
			case t.streams <- w:
			case <-t.done:
				_ = c.Close()
				return
			}
		}
	}
}

// Port returns the port the transport listens on (TCP and UDP).
func (t *mlTransport) Port() int { return t.inner.GetAutoBindPort() }

// Sent returns the bytes sent so far.
func (t *mlTransport) Sent() int64 { return t.sent.Load() }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *mlTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *mlTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.inner.WriteTo(b, addr)
	if err == nil {
		t.sent.Add(int64(len(b)))
	}
	return ts, err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *mlTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ts, err := t.inner.WriteToAddress(b, a)
	if err == nil {
		t.sent.Add(int64(len(b)))
	}
	return ts, err
}

// PacketCh implements memberlist.Transport.
func (t *mlTransport) PacketCh() <-chan *memberlist.Packet { return t.inner.PacketCh() }

// DialTimeout implements memberlist.Transport.
func (t *mlTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: &t.sent}, nil
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *mlTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, sent: &t.sent}, nil
}

// StreamCh implements memberlist.Transport.
func (t *mlTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport. Streams the inner transport
// accepts while it shuts down are closed, so that its listener goroutine,
// which hands them over on an unbuffered channel, cannot block Shutdown.
func (t *mlTransport) Shutdown() error {
	t.shutOnce.Do(func() {
		close(t.done)
		<-t.fwdDone
		stopDrain := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case c := <-t.inner.StreamCh():
					_ = c.Close()
				case <-stopDrain:
					return
				}
			}
		}()
		t.shutErr = t.inner.Shutdown()
		close(stopDrain)
		<-drained
	})
	return t.shutErr
}
