package mesh_test

import (
	"encoding/json"
	"log"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
)

// The API that programs written against weaveworks/mesh v0.4 use: if a
// name or a signature here stops compiling, such programs break.
var (
	_ string        = mesh.Protocol
	_ byte          = mesh.ProtocolMinVersion
	_ byte          = mesh.ProtocolMaxVersion
	_ string        = mesh.PeerNameFlavour
	_ int           = mesh.Port
	_ mesh.PeerName = mesh.UnknownPeerName

	_ func(string) (mesh.PeerName, error) = mesh.PeerNameFromString
	_ func(string) (mesh.PeerName, error) = mesh.PeerNameFromUserInput
	_ func([]byte) mesh.PeerName          = mesh.PeerNameFromBin
	_ func(mesh.PeerName) string          = mesh.PeerName.String

	_ func(mesh.Config, mesh.PeerName, string, mesh.Overlay, mesh.Logger) (*mesh.Router, error) = mesh.NewRouter
	_ func(*mesh.Router) error                                                                  = (*mesh.Router).Stop
	_ func(*mesh.Router, string, mesh.Gossiper) (mesh.Gossip, error)                            = (*mesh.Router).NewGossip
	_ mesh.Gossiper                                                                             = (*mesh.Router)(nil)

	_ func(*mesh.ConnectionMaker, []string, bool) []error = (*mesh.ConnectionMaker).InitiateConnections
	_ func(*mesh.ConnectionMaker, []string)               = (*mesh.ConnectionMaker).ForgetConnections
	_ func(*mesh.ConnectionMaker, bool) []string          = (*mesh.ConnectionMaker).Targets

	_ func(*mesh.Peers) []mesh.PeerDescription    = (*mesh.Peers).Descriptions
	_ func(*mesh.Peers, mesh.PeerName) *mesh.Peer = (*mesh.Peers).Fetch
	_ func(*mesh.Peers, func(*mesh.Peer))         = (*mesh.Peers).OnGC
	_ func(*mesh.Peers)                           = (*mesh.Peers).GarbageCollect

	_ func(*mesh.Routes, mesh.PeerName) (mesh.PeerName, bool) = (*mesh.Routes).Unicast
	_ func(*mesh.Routes, mesh.PeerName) (mesh.PeerName, bool) = (*mesh.Routes).UnicastAll
	_ func(*mesh.Routes, mesh.PeerName) []mesh.PeerName       = (*mesh.Routes).Broadcast
	_ func(*mesh.Routes, mesh.PeerName) []mesh.PeerName       = (*mesh.Routes).BroadcastAll
	_ func(*mesh.Routes, func())                              = (*mesh.Routes).OnChange

	_ func(*mesh.Router) *mesh.Status = mesh.NewStatus
	_ mesh.Logger                     = (*log.Logger)(nil)
	_ mesh.Overlay                    = mesh.NullOverlay{}
	_ mesh.OverlayConnection          = mesh.NullOverlay{}
)

// weaveProgram is shaped like a typical weave mesh program: it uses the
// fields and methods such programs use.
func weaveProgram(t *testing.T) {
	name, err := mesh.PeerNameFromString("00:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	gossipInterval := 10 * time.Second
	router, err := mesh.NewRouter(mesh.Config{
		Host:               "127.0.0.1",
		Port:               0,
		ProtocolMinVersion: mesh.ProtocolMinVersion,
		Password:           nil,
		ConnLimit:          64,
		PeerDiscovery:      true,
		TrustedSubnets:     []*net.IPNet{},
		GossipInterval:     &gossipInterval,
	}, name, "nick", mesh.NullOverlay{}, log.New(os.Stderr, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	router.Start()
	defer router.Stop()
	_ = router.Config.ConnLimit
	_ = router.Overlay
	router.ConnectionMaker.InitiateConnections([]string{}, true)
	var peer *mesh.Peer = router.Peers.Fetch(router.Ourself.Name)
	_, _, _, _ = peer.Name, peer.NickName, peer.UID, peer.Version
	_ = peer.String()
	for _, d := range router.Peers.Descriptions() {
		var (
			_ mesh.PeerName = d.Name
			_ string        = d.NickName
			_ mesh.PeerUID  = d.UID
			_ bool          = d.Self
			_ int           = d.NumConnections
		)
	}
	if c, ok := router.Ourself.ConnectionTo(name); ok {
		_ = c.Remote()
	}
	_ = router.Ourself.ConnectionsTo([]mesh.PeerName{name})
	var st *mesh.Status = mesh.NewStatus(router)
	_, _, _ = st.Protocol, st.ProtocolMinVersion, st.ProtocolMaxVersion
	_, _, _, _, _ = st.Encryption, st.PeerDiscovery, st.Name, st.NickName, st.Port
	_, _, _, _ = st.Peers, st.UnicastRoutes, st.BroadcastRoutes, st.Connections
	_, _, _, _ = st.TerminationCount, st.Targets, st.OverlayDiagnostics, st.TrustedSubnets
	for _, p := range st.Peers {
		_, _, _, _, _, _ = p.Name, p.NickName, p.UID, p.ShortID, p.Version, p.Connections
	}
	for _, c := range st.Connections {
		var (
			_ string                 = c.Address
			_ bool                   = c.Outbound
			_ string                 = c.State
			_ string                 = c.Info
			_ map[string]interface{} = c.Attrs
		)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Fatal(err)
	}
}

func TestWeaveStyleProgram(t *testing.T) { weaveProgram(t) }
