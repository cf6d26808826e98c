package mesh

import "net"

// Overlay is a data plane that runs alongside the mesh's connections (weave
// Net's packet forwarding, for instance). Programs that only gossip use
// NullOverlay.
type Overlay interface {
	// AddFeaturesTo adds the overlay's entries to the features sent in
	// every handshake.
	AddFeaturesTo(features map[string]string)
	// PrepareConnection is called for each new connection, after the
	// handshake.
	PrepareConnection(params OverlayConnectionParams) (OverlayConnection, error)
	// Diagnostics returns something JSON-encodable for Status.
	Diagnostics() interface{}
	// Stop is called when the router stops.
	Stop()
}

// OverlayConnectionParams describes a new connection to an Overlay.
type OverlayConnectionParams struct {
	RemotePeer *Peer
	// LocalAddr and RemoteAddr are the UDP addresses an overlay may use;
	// this router leaves them nil.
	LocalAddr  *net.UDPAddr
	RemoteAddr *net.UDPAddr
	Outbound   bool
	// ConnUID identifies the connection; both ends see the same value.
	ConnUID uint64
	// SessionKey is nil: the connection's key is not exposed.
	SessionKey *[32]byte
	// SendControlMessage sends an overlay control message to the remote
	// peer (tags 1, 2, 3 and 7 are reserved for overlays).
	SendControlMessage func(tag byte, msg []byte) error
	// Features are the features the remote peer sent.
	Features map[string]string
}

// OverlayConnection is an overlay's side of one connection.
type OverlayConnection interface {
	// Confirm is called once the connection is registered.
	Confirm()
	// EstablishedChannel is closed when the overlay is ready; the
	// connection is reported as established from then on.
	EstablishedChannel() <-chan struct{}
	// ErrorChannel delivers an error that ends the connection.
	ErrorChannel() <-chan error
	// Stop is called when the connection ends.
	Stop()
	// ControlMessage receives an overlay control message.
	ControlMessage(tag byte, msg []byte)
	// Attrs returns attributes shown in Status.
	Attrs() map[string]interface{}
}

// NullOverlay is an Overlay that does nothing: connections are established
// as soon as the handshake completes.
type NullOverlay struct{}

var _ Overlay = NullOverlay{}

// closedChannel is always closed: a NullOverlay connection is established
// at once.
var closedChannel = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// AddFeaturesTo implements Overlay.
func (NullOverlay) AddFeaturesTo(map[string]string) {}

// PrepareConnection implements Overlay.
func (NullOverlay) PrepareConnection(OverlayConnectionParams) (OverlayConnection, error) {
	return NullOverlay{}, nil
}

// Diagnostics implements Overlay.
func (NullOverlay) Diagnostics() interface{} { return nil }

// Confirm implements OverlayConnection.
func (NullOverlay) Confirm() {}

// EstablishedChannel implements OverlayConnection: always closed.
func (NullOverlay) EstablishedChannel() <-chan struct{} { return closedChannel }

// ErrorChannel implements OverlayConnection: never delivers.
func (NullOverlay) ErrorChannel() <-chan error { return nil }

// Stop implements Overlay and OverlayConnection.
func (NullOverlay) Stop() {}

// ControlMessage implements OverlayConnection.
func (NullOverlay) ControlMessage(byte, []byte) {}

// Attrs implements OverlayConnection.
func (NullOverlay) Attrs() map[string]interface{} { return nil }
