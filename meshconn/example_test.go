package meshconn_test

import (
	"fmt"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/meshconn"
)

// Two routers on the loopback interface, each with a meshconn Peer on the
// channel "packets": the second sends the first a datagram, which
// answers.
func Example() {
	start := func(name string) (*mesh.Router, *meshconn.Peer) {
		peerName, _ := mesh.PeerNameFromString(name)
		router, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1", Port: 0}, peerName, name, nil, nil)
		if err != nil {
			panic(err)
		}
		conn := meshconn.NewPeer(peerName, router.Ourself.UID, nil)
		gossip, err := router.NewGossip("packets", conn)
		if err != nil {
			panic(err)
		}
		conn.Register(gossip)
		if err := router.Start(); err != nil {
			panic(err)
		}
		return router, conn
	}
	a, connA := start("02:00:00:00:00:01")
	defer a.Stop()
	b, connB := start("02:00:00:00:00:02")
	defer b.Stop()
	b.ConnectionMaker.InitiateConnections([]string{a.ListenAddr().String()}, true)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, ab := a.Routes.Unicast(b.Ourself.Name)
		_, ba := b.Routes.Unicast(a.Ourself.Name)
		if ab && ba {
			break
		}
	}

	if _, err := connB.WriteTo([]byte("ping"), meshconn.MeshAddr{PeerName: a.Ourself.Name}); err != nil {
		panic(err)
	}
	buf := make([]byte, 1500)
	connA.SetReadDeadline(time.Now().Add(time.Minute))
	n, from, err := connA.ReadFrom(buf)
	if err != nil {
		panic(err)
	}
	fmt.Printf("a got %q from %s\n", buf[:n], from)
	if _, err := connA.WriteTo([]byte("pong"), from); err != nil {
		panic(err)
	}
	connB.SetReadDeadline(time.Now().Add(time.Minute))
	n, from, err = connB.ReadFrom(buf)
	if err != nil {
		panic(err)
	}
	fmt.Printf("b got %q from %s\n", buf[:n], from)
	// Output:
	// a got "ping" from weavemesh://02:00:00:00:00:02
	// b got "pong" from weavemesh://02:00:00:00:00:01
}
