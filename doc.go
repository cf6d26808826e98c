// Package mesh is an embeddable gossip mesh: a library that joins a program
// to a mesh of peers, each keeping TCP connections to a few neighbours.
//
// A program creates a Router with NewRouter, registers named gossip channels
// with NewGossip, starts the router and gives it the address of at least one
// existing peer through its ConnectionMaker. Routers gossip the topology (who
// is connected to whom) and compute routes from it, so that
//
//   - GossipUnicast delivers a message to any reachable peer, over several
//     hops when there is no direct connection;
//   - GossipBroadcast delivers an update to every reachable peer, once each,
//     along a spanning tree rooted at the sender;
//   - GossipNeighbourSubset sends an update to a few random neighbours, who
//     pass on what was new to them; and every GossipInterval each channel's
//     complete state (Gossiper.Gossip) goes to a random subset of
//     neighbours, so that all peers converge even after partitions.
//
// State sent this way is GossipData: values that can be merged, such as the
// CRDTs of examples/increment-only-counter.
//
// With a password, every connection is encrypted and authenticated: the two
// ends exchange fresh Curve25519 keys, derive a session key from the shared
// key and the password, and seal every frame with NaCl secretbox.
//
// The package speaks weave mesh protocol versions 1 and 2 and keeps the API
// of weaveworks/mesh, so that existing clusters and programs can move to it
// one peer at a time.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. A Router runs a fixed set
// of goroutines (accepting, topology, connection maker, one per registered
// channel) plus two per connection (reading and writing); Stop ends all of
// them before it returns. The methods of a Gossiper are called from its
// channel's goroutine, one at a time.
package mesh
