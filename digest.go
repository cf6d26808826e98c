package mesh

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// Topology digests: an extension between mesh peers, wire-compatible with
// weave mesh because it is only used when both ends advertise it.
//
// weave sends the full topology down every new connection. When peer
// discovery connects peers that already know the same topology, that is
// almost all redundant, and in a dense mesh each full topology is large.
// Peers that both send the feature featureTopologyDigest instead exchange
// a digest (each peer's name, UID and version) under digestChannel, and
// each asks the other, with a pull (topology_pull.go), for the entries it
// lacks or has older. A pull is shared with the pulls asked of other
// neighbours: a new peer that connects to several peers at once fetches
// each entry once, not once per connection. The periodic anti-entropy uses
// a sync request (syncChannel): a digest whose receiver pulls what it
// lacks and answers with its own digest, so that the asker does the same.
// Digests are never relayed.

const (
	// featureTopologyDigest is the feature a peer sends to say it
	// understands topology digests.
	featureTopologyDigest = "TopologyDigest"
	// digestChannel is the gossip channel name digests travel under.
	digestChannel = "topology-digest"
	// syncChannel is the gossip channel name of sync requests: digests
	// that ask for the receiver's digest in return.
	syncChannel = "topology-sync"
	// featureTopologyNames is the feature that carries the hash of the
	// peers a mesh peer knows (topology.namesHash), in hexadecimal.
	featureTopologyNames = "TopologyNames"
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
	return appendParsedDigest(nil, b)
}

// appendParsedDigest decodes a digest message, appending its records to
// dst.
func appendParsedDigest(dst []digestEntry, b []byte) ([]digestEntry, error) {
	if len(b)%digestRecordSize != 0 || len(b)/digestRecordSize > maxDigestRecords {
		return dst, fmt.Errorf("%w: topology digest of %d bytes", ErrMalformed, len(b))
	}
	n := len(b) / digestRecordSize
	grown := slices.Grow(dst, n)[:len(dst)+n]
	out := grown[len(dst):]
	for i := range out {
		r := b[i*digestRecordSize:]
		out[i] = digestEntry{
			Name:    PeerNameFromBin(r[:NameSize]),
			UID:     PeerUID(binary.BigEndian.Uint64(r[NameSize:])),
			Version: binary.BigEndian.Uint64(r[NameSize+8:]),
		}
	}
	return grown, nil
}

// digest lists every known peer that is not a placeholder.
func (t *topology) digest() []digestEntry {
	return t.appendDigest(make([]digestEntry, 0, t.len()))
}

// appendDigest appends the records of every known peer that is not a
// placeholder.
func (t *topology) appendDigest(out []digestEntry) []digestEntry {
	t.ascend(func(p *Peer) bool {
		if !p.isPlaceholder() {
			out = append(out, digestEntry{Name: p.Name, UID: p.UID, Version: p.Version})
		}
		return true
	})
	return out
}

// handleDigest asks neighbour c for the entries of its digest that are
// newer than ours, unless another neighbour is already sending them.
func (router *Router) handleDigest(c *LocalConnection, payload []byte) error {
	d, err := c.rs.parseDigest(payload)
	if err != nil {
		return err
	}
	router.pullNewer(c, d, false)
	return nil
}

// handleSync answers a sync request from neighbour c: like a digest, and
// with a digest of our own, so that c asks us for what it lacks. As the
// request lists every entry c has, the answer lists only our entries that
// c lacks or has older (see topology.appendUnlisted), and is not sent when
// c lacks nothing: c acts on no other record of a digest, and a peer that
// expected our whole digest does the same with this part of it.
func (router *Router) handleSync(c *LocalConnection, payload []byte) error {
	d, err := c.rs.parseDigest(payload)
	if err != nil {
		return err
	}
	if !slices.IsSortedFunc(d, compareDigestNames) {
		slices.SortFunc(d, compareDigestNames)
	}
	answer := recordsPool.get()
	router.Peers.mu.RLock()
	answer = router.Peers.topo.appendUnlisted(answer, d)
	router.Peers.mu.RUnlock()
	router.pullNewer(c, d, false)
	if len(answer) > 0 {
		c.q.pushSyncAnswer(answer)
	}
	recordsPool.put(answer)
	return nil
}

func compareDigestNames(a, b digestEntry) int { return cmp.Compare(a.Name, b.Name) }

// appendUnlisted appends the records of our entries, placeholders left
// out, that the records d (sorted by name) do not list at the same
// version of the same incarnation or a later one: what their sender
// lacks or has older. An entry of another incarnation than the one listed
// is appended whatever its version, as the sender may be that peer
// itself, which raises its version above any other incarnation's.
func (t *topology) appendUnlisted(out []digestEntry, d []digestEntry) []digestEntry {
	i := 0
	t.ascend(func(p *Peer) bool {
		for i < len(d) && d[i].Name < p.Name {
			i++
		}
		if p.isPlaceholder() {
			return true
		}
		for j := i; j < len(d) && d[j].Name == p.Name; j++ {
			if d[j].UID == p.UID && d[j].Version >= p.Version {
				return true
			}
		}
		out = append(out, digestEntry{Name: p.Name, UID: p.UID, Version: p.Version})
		return true
	})
	return out
}
