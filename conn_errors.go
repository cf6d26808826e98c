package mesh

import (
	"errors"
	"fmt"
)

// Connections that fail the same way again and again (a peer with another
// password, one without encryption, one speaking only a protocol version we
// do not, a name collision, a connection to ourselves, anyone who connects
// and says nothing, or a peer refused after its handshake because another
// connection to it won or because of the connection limit) are logged once
// a minute per remote address and kind of failure, so that a misconfigured
// or hostile peer cannot fill the log. The connection maker backs off from
// such addresses on its own.

// peerErrorClasses are the failures logged at most once a minute per
// remote address, with the name each is logged under.
var peerErrorClasses = []struct {
	err  error
	name string
}{
	{ErrDecrypt, "decrypt"},
	{ErrEncryptionMismatch, "encryption"},
	{ErrBadEncryptionFlag, "encryption-flag"},
	{ErrVersionMismatch, "version"},
	{ErrBadHeader, "header"},
	{ErrBadFeatures, "features"},
	{ErrNameCollision, "name-collision"},
	{ErrConnectToSelf, "self"},
	{ErrFrameTooLarge, "frame-size"},
	{ErrMalformed, "malformed"},
	{ErrDuplicateConnection, "duplicate"},
	{ErrConnLimit, "limit"},
}

// peerErrorClass returns the name of the class err belongs to, or "".
func peerErrorClass(err error) string {
	for _, c := range peerErrorClasses {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return ""
}

// remoteKey identifies the remote for rate-limited logging: the address
// dialled for an outbound connection, the remote IP address for an inbound
// one (its port changes with every connection).
func (c *LocalConnection) remoteKey() string {
	if c.outbound {
		return c.remoteTCPAddr
	}
	return remoteIPKey(c.conn.RemoteAddr())
}

// logConnectionEnd logs why a connection ended. Failures of the handshake,
// and of the classes above afterwards (refusals after the handshake
// included), are logged at most once a minute per remote address and
// class; other ends of established connections always.
func (router *Router) logConnectionEnd(c *LocalConnection, err error) {
	inHandshake := c.remoteName == UnknownPeerName
	var line string
	if inHandshake {
		line = fmt.Sprintf("%s connection shutting down due to error during handshake: %v", c, err)
	} else {
		line = fmt.Sprintf("%s: connection shutting down due to error: %v", c, err)
	}
	class := peerErrorClass(err)
	if class == "" && !inHandshake {
		router.logMsg(line, c, err)
		return
	}
	if class == "" {
		class = "handshake"
	}
	router.logLimited(logKey{kind: "connection " + class, addr: c.remoteKey()}, line, c, err)
}
