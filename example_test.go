package mesh_test

import (
	"fmt"
	"time"

	"github.com/gossip-mesh/mesh"
)

// greeter is a minimal Gossiper: it prints the unicasts it receives.
type greeter struct {
	got chan string
}

func (g *greeter) OnGossipUnicast(src mesh.PeerName, msg []byte) error {
	g.got <- fmt.Sprintf("%s says %s", src, msg)
	return nil
}
func (g *greeter) OnGossipBroadcast(mesh.PeerName, []byte) (mesh.GossipData, error) {
	return nil, nil
}
func (g *greeter) Gossip() mesh.GossipData                  { return nil }
func (g *greeter) OnGossip([]byte) (mesh.GossipData, error) { return nil, nil }

// Two routers on the loopback interface: the second joins the first and
// sends it a message.
func Example() {
	start := func(name string) (*mesh.Router, mesh.Gossip, *greeter) {
		peerName, _ := mesh.PeerNameFromString(name)
		router, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1", Port: 0}, peerName, name, nil, nil)
		if err != nil {
			panic(err)
		}
		g := &greeter{got: make(chan string, 1)}
		gossip, err := router.NewGossip("greetings", g)
		if err != nil {
			panic(err)
		}
		if err := router.Start(); err != nil {
			panic(err)
		}
		return router, gossip, g
	}
	a, _, ga := start("02:00:00:00:00:01")
	defer a.Stop()
	b, gb, _ := start("02:00:00:00:00:02")
	defer b.Stop()
	b.ConnectionMaker.InitiateConnections([]string{a.ListenAddr().String()}, true)

	// Wait until b has a route to a, then send.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, ok := b.Routes.Unicast(a.Ourself.Name); ok {
			break
		}
	}
	if err := gb.GossipUnicast(a.Ourself.Name, []byte("hello")); err != nil {
		panic(err)
	}
	fmt.Println(<-ga.got)
	// Output: 02:00:00:00:00:02 says hello
}
