package mesh

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"golang.org/x/crypto/nacl/secretbox"
)

// The features map is the first thing each side sends after the
// encryption flag (protocol v2) or the header (protocol v1): a gob stream
// holding a map[string]string, that is a type definition followed by the
// map value.

// Feature keys.
const (
	featurePeerNameFlavour = "PeerNameFlavour"
	featureName            = "Name"
	featureNickName        = "NickName"
	featureShortID         = "ShortID"
	featureUID             = "UID"
	featureConnID          = "ConnID"
	featureTrusted         = "Trusted"
	featurePublicKey       = "PublicKey"
)

// featuresTypeDef is the definition weave sends for the features map: type
// id 64 is a map[string]string with no name.
const featuresTypeDef = "\x0d\x7f\x04\x01\x02\xff\x80\x00\x01\x0c\x01\x0c\x00\x00"

// featuresTypeID is the type id featuresTypeDef defines, as a gob int.
const featuresTypeID = "\xff\x80"

// Bounds on the two messages of a features stream read by readFeaturesV1.
const (
	maxFeaturesDefLen = 256
	// Type id, singleton delta and count, then each key and value with a
	// length of at most three bytes.
	maxFeaturesValueLen = 16 + maxFeatures*2*(3+maxFeatureLen)
	// maxFeaturesFrame bounds a version 2 features frame: the two gob
	// messages of the largest features map, with their byte counts, and
	// the seal.
	maxFeaturesFrame = 2*9 + maxFeaturesDefLen + maxFeaturesValueLen + secretbox.Overhead
)

// peerShortIDBits is the width of a ShortID in the features.
const peerShortIDBits = 12

// appendFeatures appends a self-contained gob stream holding the map m,
// with its entries in the order given by keys (which should be distinct
// keys of m). The type definition is the one weave sends.
func appendFeatures(dst []byte, keys []string, m map[string]string) []byte {
	size := len(featuresTypeID) + 1 + gobint.Len(uint64(len(keys)))
	for _, k := range keys {
		v := m[k]
		size += gobint.Len(uint64(len(k))) + len(k) + gobint.Len(uint64(len(v))) + len(v)
	}
	dst = append(dst, featuresTypeDef...)
	dst = gobint.AppendUint(dst, uint64(size))
	dst = append(dst, featuresTypeID...)
	dst = append(dst, 0)
	dst = gobint.AppendUint(dst, uint64(len(keys)))
	for _, k := range keys {
		v := m[k]
		dst = gobint.AppendUint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = gobint.AppendUint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// encodeFeatures appends a self-contained gob stream holding the map m,
// with its keys in sorted order.
func encodeFeatures(dst []byte, m map[string]string) []byte {
	return appendFeatures(dst, slices.Sorted(maps.Keys(m)), m)
}

// decodeFeatures decodes a features stream: exactly one definition of a
// map[string]string type (under any type id) followed by a value of that
// type, with at most maxFeatures entries whose keys and values are at most
// maxFeatureLen bytes, and nothing else. Duplicate keys are accepted, the
// last one wins (as with gob). Errors wrap both ErrBadFeatures and
// ErrMalformed.
func decodeFeatures(b []byte) (map[string]string, error) {
	r := newGobReader(b)
	def, err := r.next()
	if err != nil {
		return nil, badFeatures(err)
	}
	val, err := r.next()
	if err != nil {
		return nil, badFeatures(err)
	}
	if r.remaining() != 0 {
		return nil, badFeatures(errGobExtraData)
	}
	if len(def) > maxFeaturesDefLen || len(val) > maxFeaturesValueLen {
		return nil, badFeatures(fmt.Errorf("features of %d+%d bytes are too large", len(def), len(val)))
	}
	return featuresFromMessages(def, val)
}

// readFeaturesV1 reads the features stream of protocol v1, the two gob
// messages that open the raw stream after the header. Errors reading from
// r are returned as they are (io.EOF becomes io.ErrUnexpectedEOF); errors
// in the data wrap ErrBadFeatures.
func readFeaturesV1(r *bufio.Reader) (map[string]string, error) {
	def, err := readGobMessage(r, maxFeaturesDefLen, nil)
	if err != nil {
		return nil, featuresReadError(err)
	}
	val, err := readGobMessage(r, maxFeaturesValueLen, nil)
	if err != nil {
		return nil, featuresReadError(err)
	}
	return featuresFromMessages(def, val)
}

// featuresReadError classifies an error from readGobMessage.
func featuresReadError(err error) error {
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameTooLarge) {
		return badFeatures(err)
	}
	return fmt.Errorf("reading features: %w", unexpectedEOF(err))
}

// badFeatures wraps a decoding error so that it matches both ErrBadFeatures
// and ErrMalformed.
func badFeatures(err error) error {
	if errors.Is(err, ErrMalformed) {
		return fmt.Errorf("%w: %w", ErrBadFeatures, err)
	}
	return fmt.Errorf("%w: %w: %w", ErrBadFeatures, ErrMalformed, err)
}

// featuresFromMessages decodes the definition and value messages of a
// features stream.
func featuresFromMessages(def, val []byte) (map[string]string, error) {
	id, err := parseFeaturesDef(def)
	if err != nil {
		return nil, badFeatures(err)
	}
	m := make(map[string]string)
	err = parseFeaturesValue(val, id, func(k, v []byte) {
		m[string(k)] = string(v)
	})
	if err != nil {
		return nil, badFeatures(err)
	}
	return m, nil
}

// parseFeaturesDef parses a type definition message that must define a
// map[string]string, and returns the type id it defines.
func parseFeaturesDef(body []byte) (int64, error) {
	d := rawDecoder{b: body}
	id, isDef, err := parseDefinitionHeader(&d)
	if err != nil {
		return 0, err
	}
	if !isDef {
		return 0, fmt.Errorf("%w: features value without a type definition", ErrMalformed)
	}
	wt, _, err := parseWireType(&d, nil)
	if err != nil {
		return 0, err
	}
	if wt.Kind != gobKindMap || wt.Key != gobTypeString || wt.Elem != gobTypeString {
		return 0, fmt.Errorf("%w: features type is not map[string]string", ErrMalformed)
	}
	return id, nil
}

// parseFeaturesValue parses a map value message of type id and calls visit
// for each entry in wire order. The slices passed to visit alias body.
func parseFeaturesValue(body []byte, id int64, visit func(k, v []byte)) error {
	d, err := openSingleton(body, id)
	if err != nil {
		return err
	}
	n, err := d.uint()
	if err != nil {
		return err
	}
	if n > maxFeatures {
		return fmt.Errorf("%w: %d features, more than %d", ErrMalformed, n, maxFeatures)
	}
	// Each entry takes at least two bytes.
	if n > uint64(d.remaining()/2) {
		return errGobTruncated
	}
	for range n {
		k, err := d.bytes(maxFeatureLen)
		if err != nil {
			return err
		}
		v, err := d.bytes(maxFeatureLen)
		if err != nil {
			return err
		}
		visit(k, v)
	}
	return d.end()
}

// peerFeatures is what a peer tells about itself in the features map.
type peerFeatures struct {
	Name       PeerName
	NickName   string
	UID        PeerUID
	ConnID     uint64
	ShortID    PeerShortID
	HasShortID bool
	Trusted    bool
	PublicKey  []byte // v1 only: 32 bytes, from the "PublicKey" hex feature, nil when absent
}

// featuresMap builds the features map to send: the entries of extra
// (overlay features) overridden by PeerNameFlavour, Name, NickName, ShortID
// (only when HasShortID is set), UID, ConnID and Trusted. PublicKey is not
// included: for protocol v1 the caller removes ShortID and Trusted and adds
// PublicKey itself.
func (f *peerFeatures) featuresMap(extra map[string]string) map[string]string {
	m := make(map[string]string, len(extra)+7)
	maps.Copy(m, extra)
	m[featurePeerNameFlavour] = PeerNameFlavour
	m[featureName] = f.Name.String()
	m[featureNickName] = f.NickName
	if f.HasShortID {
		m[featureShortID] = strconv.FormatUint(uint64(f.ShortID), 10)
	} else {
		delete(m, featureShortID)
	}
	m[featureUID] = strconv.FormatUint(uint64(f.UID), 10)
	m[featureConnID] = strconv.FormatUint(f.ConnID, 10)
	m[featureTrusted] = strconv.FormatBool(f.Trusted)
	return m
}

// requiredFeatures are the keys a features map must hold, in the order
// weave checks them.
var requiredFeatures = [...]string{featurePeerNameFlavour, featureName, featureNickName, featureUID, featureConnID}

// parseFeatures validates a received features map and extracts the peer's
// identity. Unknown keys are ignored. Errors wrap ErrBadFeatures.
func parseFeatures(m map[string]string) (peerFeatures, error) {
	var f peerFeatures
	for _, k := range requiredFeatures {
		if _, ok := m[k]; !ok {
			return f, fmt.Errorf("%w: field %s is missing", ErrBadFeatures, k)
		}
	}
	if flavour := m[featurePeerNameFlavour]; flavour != PeerNameFlavour {
		return f, fmt.Errorf("%w: Peer name flavour mismatch (ours: '%s', theirs: '%s')",
			ErrBadFeatures, PeerNameFlavour, flavour)
	}
	name, err := PeerNameFromString(m[featureName])
	if err != nil {
		return f, fmt.Errorf("%w: %w", ErrBadFeatures, err)
	}
	f.Name = name
	f.NickName = m[featureNickName]
	if len(f.NickName) > maxNickNameLen {
		return f, fmt.Errorf("%w: NickName of %d bytes is longer than %d", ErrBadFeatures, len(f.NickName), maxNickNameLen)
	}
	if s, ok := m[featureShortID]; ok {
		v, err := strconv.ParseUint(s, 10, peerShortIDBits)
		if err != nil {
			return f, fmt.Errorf("%w: ShortID: %w", ErrBadFeatures, err)
		}
		f.ShortID, f.HasShortID = PeerShortID(v), true
	}
	if s, ok := m[featureTrusted]; ok {
		if f.Trusted, err = strconv.ParseBool(s); err != nil {
			return f, fmt.Errorf("%w: Trusted: %w", ErrBadFeatures, err)
		}
	}
	uid, err := strconv.ParseUint(m[featureUID], 10, 64)
	if err != nil {
		return f, fmt.Errorf("%w: UID: %w", ErrBadFeatures, err)
	}
	if uid == 0 {
		return f, fmt.Errorf("%w: UID is zero", ErrBadFeatures)
	}
	f.UID = PeerUID(uid)
	if f.ConnID, err = strconv.ParseUint(m[featureConnID], 10, 64); err != nil {
		return f, fmt.Errorf("%w: ConnID: %w", ErrBadFeatures, err)
	}
	// PublicKey only means something in protocol version 1, where the
	// handshake checks it; elsewhere a malformed one is ignored like any
	// unknown feature.
	if s, ok := m[featurePublicKey]; ok && len(s) == 64 {
		if key, err := hex.DecodeString(s); err == nil {
			f.PublicKey = key
		}
	}
	return f, nil
}
