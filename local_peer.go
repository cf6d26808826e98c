package mesh

import "fmt"

// LocalPeer is this router's own peer.
type LocalPeer struct {
	// Name, NickName and UID identify this peer.
	Name     PeerName
	NickName string
	UID      PeerUID

	router *Router
}

// String returns "name(nickname)".
func (p *LocalPeer) String() string { return fmt.Sprint(p.Name, "(", p.NickName, ")") }

// Peer returns our current entry in the topology.
func (p *LocalPeer) Peer() *Peer { return p.router.Peers.current(p.Name) }

// ConnectionTo returns our connection to the named peer, if there is one.
func (p *LocalPeer) ConnectionTo(name PeerName) (Connection, bool) {
	c := p.router.connectionTo(name)
	if c == nil {
		return nil, false
	}
	return c, true
}

// ConnectionsTo returns our connections to those of the named peers we are
// connected to.
func (p *LocalPeer) ConnectionsTo(names []PeerName) []Connection {
	out := make([]Connection, 0, len(names))
	for _, n := range names {
		if c := p.router.connectionTo(n); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Connections returns all our current connections.
func (p *LocalPeer) Connections() []Connection {
	cs := p.router.connections()
	out := make([]Connection, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out
}
