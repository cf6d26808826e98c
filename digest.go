package mesh

import (
	"encoding/binary"
	"fmt"
)

// Topology digests: an extension between mesh peers, wire-compatible with
// weave mesh because it is only used when both ends advertise it.
//
// weave sends the full topology down every new connection. When peer
// discovery connects peers that already know the same topology, that is
// almost all redundant, and in a dense mesh each full topology is large.
// Peers that both send the feature featureTopologyDigest instead exchange
// a digest (each peer's name, UID and version) on the "topology" gossip
// carried under digestChannel, and each then sends the other only the
// entries the other lacks or has older. The periodic anti-entropy gossip
// uses digests the same way. Digests are never relayed.

const (
	// featureTopologyDigest is the feature a peer sends to say it
	// understands topology digests.
	featureTopologyDigest = "TopologyDigest"
	// digestChannel is the gossip channel name digests travel under.
	digestChannel = "topology-digest"
	// digestRecordSize is the size of one digest record: name (6 bytes),
	// UID (8) and version (8), big-endian.
	digestRecordSize = NameSize + 8 + 8
	// maxDigestRecords bounds the records of one digest message.
	maxDigestRecords = 1 << 16
)

// digestEntry is one record of a digest.
type digestEntry struct {
	Name    PeerName
	UID     PeerUID
	Version uint64
}

// appendDigest appends the records of entries.
func appendDigest(dst []byte, entries []digestEntry) []byte {
	for _, e := range entries {
		dst = e.Name.appendBin(dst)
		dst = binary.BigEndian.AppendUint64(dst, uint64(e.UID))
		dst = binary.BigEndian.AppendUint64(dst, e.Version)
	}
	return dst
}

// parseDigest decodes a digest message.
func parseDigest(b []byte) ([]digestEntry, error) {
	if len(b)%digestRecordSize != 0 || len(b)/digestRecordSize > maxDigestRecords {
		return nil, fmt.Errorf("%w: topology digest of %d bytes", ErrMalformed, len(b))
	}
	out := make([]digestEntry, len(b)/digestRecordSize)
	for i := range out {
		r := b[i*digestRecordSize:]
		out[i] = digestEntry{
			Name:    PeerNameFromBin(r[:NameSize]),
			UID:     PeerUID(binary.BigEndian.Uint64(r[NameSize:])),
			Version: binary.BigEndian.Uint64(r[NameSize+8:]),
		}
	}
	return out, nil
}

// digest lists every known peer that is not a placeholder.
func (t *topology) digest() []digestEntry {
	out := make([]digestEntry, 0, t.len())
	t.ascend(func(p *Peer) bool {
		if !p.isPlaceholder() {
			out = append(out, digestEntry{Name: p.Name, UID: p.UID, Version: p.Version})
		}
		return true
	})
	return out
}

// newerThanDigest returns the peers whose entries here are newer than
// those of the digest, or missing from it: what the digest's sender lacks.
func (t *topology) newerThanDigest(d []digestEntry) []PeerName {
	theirs := make(map[PeerName]digestEntry, len(d))
	for _, e := range d {
		theirs[e.Name] = e
	}
	var out []PeerName
	t.ascend(func(p *Peer) bool {
		if p.isPlaceholder() {
			return true
		}
		e, ok := theirs[p.Name]
		if !ok {
			out = append(out, p.Name)
			return true
		}
		s := peerSummary{Name: e.Name, UID: e.UID, Version: e.Version}
		if s.Version < p.Version || (s.Version == p.Version && s.UID < p.UID) {
			out = append(out, p.Name)
		}
		return true
	})
	return out
}

// encodeDigest encodes our current digest as one or more messages.
func (peers *Peers) encodeDigest() [][]byte {
	peers.mu.RLock()
	entries := peers.topo.digest()
	peers.mu.RUnlock()
	return digestMessages(entries)
}

// digestMessages encodes digest records as one or more messages.
func digestMessages(entries []digestEntry) [][]byte {
	var out [][]byte
	for len(entries) > 0 {
		n := min(len(entries), maxDigestRecords)
		out = append(out, appendDigest(make([]byte, 0, n*digestRecordSize), entries[:n]))
		entries = entries[n:]
	}
	return out
}

// handleDigest answers a digest from neighbour c with the entries it lacks.
func (router *Router) handleDigest(c *LocalConnection, payload []byte) error {
	d, err := parseDigest(payload)
	if err != nil {
		return err
	}
	router.Peers.mu.RLock()
	missing := router.Peers.topo.newerThanDigest(d)
	router.Peers.mu.RUnlock()
	if len(missing) > 0 {
		c.q.pushTopology(missing, false)
	}
	return nil
}
