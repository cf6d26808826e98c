package mesh

import (
	"fmt"
)

// gossipMessage is a decoded gossip frame body: one of the tags
// tagGossip, tagGossipUnicast or tagGossipBroadcast followed by a gob
// stream holding the channel name, one or two peer names and the message.
type gossipMessage struct {
	Tag     byte
	Channel string
	Src     PeerName // sender (tag 4), source (tag 5), originator (tag 6)
	Dst     PeerName // tag 5 only
	Payload []byte   // aliases the body it was parsed from
}

// appendGossipMessage appends the frame body for m: the tag byte, then the
// channel name, Src, Dst (unicast only) and Payload, each as its own gob
// message. It allocates nothing when dst has enough capacity.
func appendGossipMessage(dst []byte, m *gossipMessage) []byte {
	dst = append(dst, m.Tag)
	dst = appendGobString(dst, m.Channel)
	dst = appendGobUint(dst, uint64(m.Src))
	if m.Tag == tagGossipUnicast {
		dst = appendGobUint(dst, uint64(m.Dst))
	}
	return appendGobBytes(dst, m.Payload)
}

// parseGossipMessage decodes a gossip frame body. The channel name is at
// most maxChannelNameLen bytes, peer names must fit NameSize bytes, and
// nothing may follow the message. Payload aliases body; body is not
// modified, so a relaying peer can forward it as it is.
func parseGossipMessage(body []byte) (gossipMessage, error) {
	var m gossipMessage
	if len(body) == 0 {
		return m, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	m.Tag = body[0]
	switch m.Tag {
	case tagGossip, tagGossipUnicast, tagGossipBroadcast:
	default:
		return m, fmt.Errorf("%w: tag %d is not a gossip message", ErrMalformed, m.Tag)
	}
	r := newGobReader(body[1:])
	var err error
	if m.Channel, err = r.readString(maxChannelNameLen); err != nil {
		return m, err
	}
	if m.Src, err = readPeerName(&r); err != nil {
		return m, err
	}
	if m.Tag == tagGossipUnicast {
		if m.Dst, err = readPeerName(&r); err != nil {
			return m, err
		}
	}
	if m.Payload, err = r.readBytes(len(body)); err != nil {
		return m, err
	}
	if r.remaining() != 0 {
		return m, fmt.Errorf("%w: %d bytes after the gossip message", ErrMalformed, r.remaining())
	}
	return m, nil
}

// readPeerName reads a peer name sent as a gob unsigned integer.
func readPeerName(r *gobReader) (PeerName, error) {
	v, err := r.readUint()
	if err != nil {
		return 0, err
	}
	if v > maxPeerName {
		return 0, fmt.Errorf("%w: peer name %#x is wider than %d bytes", ErrMalformed, v, NameSize)
	}
	return PeerName(v), nil
}
