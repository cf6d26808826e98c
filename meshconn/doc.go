// Package meshconn provides a net.PacketConn whose datagrams travel as mesh
// unicast messages, addressed by peer name.
//
// A Peer is both the Gossiper of a gossip channel and the PacketConn:
//
//	peer := meshconn.NewPeer(router.Ourself.Name, router.Ourself.UID, logger)
//	gossip, err := router.NewGossip("packets", peer)
//	if err != nil {
//		return err
//	}
//	peer.Register(gossip)
//	n, err := peer.WriteTo(payload, meshconn.MeshAddr{PeerName: other})
//
// Every peer that reads or writes datagrams registers a Peer on the same
// channel name; peers in between need not, as they pass unicast messages
// on whether or not they know the channel.
//
// # Datagram semantics
//
// Like UDP, delivery is best effort:
//
//   - A datagram is delivered whole, once, or not at all. It is lost when no
//     route to the destination is known (WriteTo then returns the error of
//     mesh.Gossip.GossipUnicast), when a connection on the way ends, when a
//     relaying router's send queue or the receiving channel's queue is full,
//     or when the receiving Peer's queue is full (see below).
//   - There is no ordering guarantee beyond the mesh's: datagrams between
//     two peers follow the current route and usually arrive in the order
//     they were written, but a change of route can reorder them.
//   - A datagram holds at most MaxDatagramSize bytes, and must also fit,
//     with about 150 bytes of headers plus the channel name, in the
//     Config.MaxFrameSize of every router on the way (10 MiB by default);
//     a router drops a message too large for a frame. A Peer discards a
//     received message that is malformed or holds a larger datagram.
//
// The destination's PeerUID is not checked: a datagram goes to whichever
// incarnation of the named peer is running. ReadFrom returns the sender's
// name and UID, so a receiver can tell a restarted sender apart.
//
// # Receive queue
//
// Datagrams wait for ReadFrom in a queue of at most ReceiveQueueLen
// datagrams and ReceiveQueueBytes bytes of payload. A datagram that arrives
// when the queue is full is dropped (the newest is dropped, as a full UDP
// socket buffer does; those waiting are kept) and counted by Dropped. The
// queue never blocks the gossip channel, so a reader that falls behind
// loses datagrams but never delays other traffic.
//
// # Deadlines
//
// SetReadDeadline, SetWriteDeadline and SetDeadline work as for any
// net.Conn: an operation still blocked when its deadline passes returns
// an error for which errors.Is(err, os.ErrDeadlineExceeded) holds and which
// is a net.Error whose Timeout method reports true; a deadline set or moved
// while an operation is blocked applies to it. A write that times out while
// the send queue towards the next hop is full may still be sent later. Close
// unblocks every blocked ReadFrom and WriteTo, which then return an error
// satisfying errors.Is(err, net.ErrClosed).
//
// # Goroutines
//
// As mesh.Gossip.GossipUnicast cannot be interrupted, WriteTo hands each
// datagram to a sender goroutine that makes the call, and waits for it,
// its deadline or Close. A Peer keeps the sender goroutines it starts for
// the datagrams that follow, so that a steady flow of datagrams starts
// none; a sender that has had no datagram for a second or two ends, and
// all end at Close, once any call under way has returned.
//
// # Compatibility
//
// The API and the wire format (a gob-encoded struct of the sender's name,
// UID and the payload, one per unicast message) are those of the meshconn
// package of weaveworks/mesh, so peers of both can exchange datagrams.
package meshconn
