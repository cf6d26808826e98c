package mesh

import (
	"cmp"
	"fmt"
	"slices"
)

// Peer is one peer of the mesh as this router knows it. A *Peer is an
// immutable snapshot: when the peer changes, the router replaces it with a
// new value, so a *Peer may be read from any goroutine without locking.
type Peer struct {
	// Name is the peer's name; it never changes.
	Name PeerName
	// NickName is a human-readable name the peer chose for itself.
	NickName string
	// UID identifies the incarnation of the peer: it changes when the peer
	// restarts. Zero means a placeholder: a peer named in another peer's
	// connection list that this router has not heard from yet.
	UID PeerUID
	// Version increases whenever the peer's connections change.
	Version uint64
	// ShortID is the peer's 12-bit short identifier, when HasShortID.
	ShortID PeerShortID
	// HasShortID says whether ShortID is set.
	HasShortID bool

	// conns lists the peer's connections, sorted by remote name, without
	// duplicates. Never modified once the Peer is published.
	conns []connectionSummary
	// prev is the entry this one replaced, of the same incarnation, kept
	// (with at most deltaBases-1 of its own prevs) for entries of at least
	// deltaMinConns connections: a neighbour a few versions behind is then
	// sent the difference rather than the whole entry (see
	// topoEncoder.answers).
	prev *Peer
}

// String returns "name(nickname)".
func (peer *Peer) String() string {
	return fmt.Sprint(peer.Name, "(", peer.NickName, ")")
}

// PeerConnection describes one connection of a peer, as that peer reports it.
type PeerConnection struct {
	// Name is the peer at the other end.
	Name PeerName
	// RemoteTCPAddr is the address of the other end: the dialled address for
	// an outbound connection, the address it came from for an inbound one.
	RemoteTCPAddr string
	// Outbound is true when this peer dialled the connection.
	Outbound bool
	// Established is true when the connection is fully up.
	Established bool
}

// Connections returns the peer's connections as it last reported them,
// sorted by remote name.
func (peer *Peer) Connections() []PeerConnection {
	out := make([]PeerConnection, len(peer.conns))
	for i, c := range peer.conns {
		out[i] = PeerConnection(c)
	}
	return out
}

// NumConnections returns how many connections the peer reports.
func (peer *Peer) NumConnections() int { return len(peer.conns) }

// connectionTo returns the peer's reported connection to name.
func (peer *Peer) connectionTo(name PeerName) (connectionSummary, bool) {
	lo, hi := 0, len(peer.conns)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if peer.conns[mid].Name < name {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(peer.conns) && peer.conns[lo].Name == name {
		return peer.conns[lo], true
	}
	return connectionSummary{}, false
}

func (peer *Peer) summary() peerSummary {
	return peerSummary{
		Name:       peer.Name,
		NickName:   peer.NickName,
		UID:        peer.UID,
		Version:    peer.Version,
		ShortID:    peer.ShortID,
		HasShortID: peer.HasShortID,
	}
}

// withPrevs returns the peer's entry with at most n of the entries it
// replaced (the chain of prev). Entries are immutable, so the part of the
// chain that is kept is shared, and the part that is cut copied.
func (peer *Peer) withPrevs(n int) *Peer {
	depth := 0
	for b := peer.prev; b != nil && depth <= n; b = b.prev {
		depth++
	}
	if depth <= n {
		return peer
	}
	p := *peer
	p.prev = nil
	if n > 0 {
		p.prev = peer.prev.withPrevs(n - 1)
	}
	return &p
}

// base returns the entry of the given UID and version among those this
// one replaced and kept, or nil.
func (peer *Peer) base(uid PeerUID, version uint64) *Peer {
	if uid != peer.UID {
		return nil
	}
	for b := peer.prev; b != nil; b = b.prev {
		if b.Version == version {
			return b
		}
	}
	return nil
}

// isPlaceholder reports whether the peer is only known by name, from
// another peer's connection list.
func (peer *Peer) isPlaceholder() bool { return peer.UID == 0 }

// newerThan reports whether s should replace the peer's current entry:
// higher Version wins; on equal Version the higher UID; then the one that
// has a short ID.
func (s *peerSummary) newerThan(peer *Peer) bool {
	switch {
	case s.Version != peer.Version:
		return s.Version > peer.Version
	case s.UID != peer.UID:
		return s.UID > peer.UID
	}
	return s.HasShortID && !peer.HasShortID
}

// PeerDescription is a summary of a peer, as Peers.Descriptions returns it.
type PeerDescription struct {
	Name           PeerName
	NickName       string
	UID            PeerUID
	Self           bool
	NumConnections int
}

// Connection is a connection between two peers, as seen from one of them.
type Connection interface {
	// Remote returns the peer at the other end.
	Remote() *Peer
}

// sortConnections sorts a connection list by name and drops duplicates
// (keeping the first of each name).
func sortConnections(conns []connectionSummary) []connectionSummary {
	slices.SortStableFunc(conns, func(a, b connectionSummary) int { return cmp.Compare(a.Name, b.Name) })
	return slices.CompactFunc(conns, func(a, b connectionSummary) bool { return a.Name == b.Name })
}
