package mesh

import (
	"context"
	"net"
	"time"
)

// Transport is how a router listens and dials. The default is TCP; tests
// substitute an in-memory network to run many peers in one process and
// inject faults.
type Transport interface {
	// Listen listens on address ("host:port"; port 0 picks a free one).
	Listen(address string) (net.Listener, error)
	// DialContext connects to address, resolving host names each time.
	DialContext(ctx context.Context, address string) (net.Conn, error)
}

// TCPTransport is the default Transport.
type TCPTransport struct {
	// DialTimeout bounds each dial; 0 means 10 seconds.
	DialTimeout time.Duration
}

var _ Transport = (*TCPTransport)(nil)

// Listen implements Transport.
func (t *TCPTransport) Listen(address string) (net.Listener, error) {
	return net.Listen("tcp", address)
}

// DialContext implements Transport.
func (t *TCPTransport) DialContext(ctx context.Context, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: orDuration(t.DialTimeout, 10*time.Second)}
	return d.DialContext(ctx, "tcp", address)
}
