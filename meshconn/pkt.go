package meshconn

import (
	"bytes"
	"encoding/gob"
	"fmt"

	"github.com/gossip-mesh/mesh"
)

// pkt is one datagram as it travels in a unicast message: gob-encoded,
// with the same field names as weave's meshconn, so that the two decode
// each other's datagrams.
type pkt struct {
	SrcName mesh.PeerName
	SrcUID  mesh.PeerUID
	Buf     []byte
}

func (p *pkt) encode() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(p.Buf) + 128)
	if err := gob.NewEncoder(&buf).Encode(p); err != nil {
		return nil, fmt.Errorf("meshconn: encoding a datagram: %w", err)
	}
	return buf.Bytes(), nil
}

// decodePkt decodes a message received from the network. It never panics:
// encoding/gob reports malformed input as an error.
func decodePkt(msg []byte) (pkt, error) {
	var p pkt
	if err := gob.NewDecoder(bytes.NewReader(msg)).Decode(&p); err != nil {
		return pkt{}, fmt.Errorf("meshconn: decoding a datagram: %w", err)
	}
	return p, nil
}
