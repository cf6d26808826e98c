package meshconn

import (
	"fmt"
	"net"

	"github.com/gossip-mesh/mesh"
)

// MeshAddr is the net.Addr of a Peer: a peer name, and the UID of the
// peer's incarnation. WriteTo uses the name only; ReadFrom returns both.
type MeshAddr struct {
	mesh.PeerName // stable across restarts
	mesh.PeerUID  // new with each incarnation of the peer
}

var _ net.Addr = MeshAddr{}

// Network returns "weavemesh", as weave's meshconn did.
func (a MeshAddr) Network() string { return "weavemesh" }

// String returns "weavemesh://" followed by the peer name.
func (a MeshAddr) String() string { return fmt.Sprintf("%s://%s", a.Network(), a.PeerName) }

// meshAddrOf returns the MeshAddr that addr is or points to.
func meshAddrOf(addr net.Addr) (MeshAddr, bool) {
	switch a := addr.(type) {
	case MeshAddr:
		return a, true
	case *MeshAddr:
		if a != nil {
			return *a, true
		}
	}
	return MeshAddr{}, false
}
