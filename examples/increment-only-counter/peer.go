package main

import (
	"sync"

	"github.com/gossip-mesh/mesh"
)

// peer is the counter as one member of the mesh sees it. It implements
// mesh.Gossiper, so that the router hands it what other peers send on the
// counter's gossip channel, and uses the mesh.Gossip it is registered with
// to tell them about its own increments.
type peer struct {
	st     *state
	logger mesh.Logger // may be nil

	mu   sync.Mutex
	send mesh.Gossip // nil until register is called
}

// The peer receives the messages of the counter's channel.
var _ mesh.Gossiper = (*peer)(nil)

// newPeer returns a peer whose own increments are counted under self.
// logger may be nil.
func newPeer(self mesh.PeerName, logger mesh.Logger) *peer {
	return &peer{st: newState(self), logger: logger}
}

// register gives the peer the channel returned by Router.NewGossip, on
// which it broadcasts its increments.
func (p *peer) register(send mesh.Gossip) {
	p.mu.Lock()
	p.send = send
	p.mu.Unlock()
}

func (p *peer) logf(format string, args ...interface{}) {
	if p.logger != nil {
		p.logger.Printf(format, args...)
	}
}

// get returns the value of the counter as this peer knows it.
func (p *peer) get() int {
	return p.st.get()
}

// incr adds one to the counter, broadcasts the change to the other peers
// and returns the new value as this peer knows it.
func (p *peer) incr() int {
	delta := p.st.incr()
	p.mu.Lock()
	send := p.send
	p.mu.Unlock()
	if send == nil {
		p.logf("incr: not registered on a gossip channel, the increment stays local")
	} else {
		send.GossipBroadcast(delta)
	}
	return p.st.get()
}

// Gossip implements mesh.Gossiper: it returns a copy of the complete state,
// which the router sends to a few neighbours every gossip interval.
func (p *peer) Gossip() mesh.GossipData {
	return p.st.copyState()
}

// OnGossip implements mesh.Gossiper: it merges state gossiped by a
// neighbour and returns what was new to us, to be gossiped on, or nil.
func (p *peer) OnGossip(msg []byte) (mesh.GossipData, error) {
	counts, err := decodeCounts(msg)
	if err != nil {
		return nil, err
	}
	delta := p.st.mergeDelta(counts)
	if delta == nil {
		return nil, nil // not a nil *state in a non-nil interface
	}
	p.logf("gossip: %v was new", delta)
	return delta, nil
}

// OnGossipBroadcast implements mesh.Gossiper: it merges an increment
// broadcast by src and returns what was new to us, to be relayed to the
// rest of the broadcast tree, or nil.
func (p *peer) OnGossipBroadcast(src mesh.PeerName, update []byte) (mesh.GossipData, error) {
	counts, err := decodeCounts(update)
	if err != nil {
		return nil, err
	}
	received := p.st.mergeReceived(counts)
	if received == nil {
		return nil, nil
	}
	p.logf("broadcast from %s: %v was new", src, received)
	return received, nil
}

// OnGossipUnicast implements mesh.Gossiper: it merges a complete state that
// src sent to us alone.
func (p *peer) OnGossipUnicast(src mesh.PeerName, msg []byte) error {
	counts, err := decodeCounts(msg)
	if err != nil {
		return err
	}
	if delta := p.st.mergeComplete(counts); delta != nil {
		p.logf("unicast from %s: %v was new", src, delta)
	}
	return nil
}
