package mesh

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"io"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"github.com/stretchr/testify/require"
)

// wireFeatures is a features stream found in the vectors.
type wireFeatures struct {
	scenario, name, sender string
	v1                     bool
	stream                 []byte // v2: the frame body; v1: the two gob messages
	want                   map[string]string
}

// String names the stream by scenario and vector.
func (w *wireFeatures) String() string { return w.scenario + "/" + w.name }

// toStringMap converts a JSON object of strings.
func toStringMap(t testing.TB, v any) map[string]string {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "not an object: %v", v)
	out := make(map[string]string, len(m))
	for k, x := range m {
		s, ok := x.(string)
		require.True(t, ok, "%s is not a string", k)
		out[k] = s
	}
	return out
}

// vectorFeatures returns every features stream in the vectors that can be
// read (the ones sealed with a wrong password cannot).
func vectorFeatures(t testing.TB) []wireFeatures {
	t.Helper()
	vs := loadVectors(t)
	var out []wireFeatures
	for si := range vs.Scenarios {
		s := &vs.Scenarios[si]
		for vi := range s.Vectors {
			v := &s.Vectors[vi]
			w := wireFeatures{scenario: s.Name, name: v.Name, sender: v.Sender}
			switch {
			case strings.HasSuffix(v.Name, "-v1-features"):
				w.v1, w.stream = true, v.bytes(t)
			case strings.HasSuffix(v.Name, "-features-frame"):
				if v.Decoded["decrypt"] != nil {
					continue
				}
				raw := v.bytes(t)
				w.stream = raw[4:]
				if v.PlaintextHex != "" {
					w.stream = v.plaintext(t)
				}
			default:
				continue
			}
			d := v.Decoded
			switch {
			case d["map_in_wire_order"] != nil:
				w.want = toStringMap(t, d["map_in_wire_order"])
			case d["map"] != nil:
				if ref, ok := d["map"].(string); ok {
					// A reference to the probe's fixed features.
					require.Contains(t, ref, "features_sent_v2")
					w.want = vs.Probe.FeaturesSent
					break
				}
				w.want = toStringMap(t, d["map"])
			case d["map_sorted"] != nil:
				w.want = toStringMap(t, d["map_sorted"])
			default:
				msgs := d["gob_messages"].([]any)
				w.want = toStringMap(t, msgs[1].(map[string]any)["value"])
			}
			out = append(out, w)
		}
	}
	require.Greater(t, len(out), 40)
	return out
}

// featureKeysInWireOrder returns the keys of a features stream in the order
// they were sent.
func featureKeysInWireOrder(t testing.TB, stream []byte) []string {
	t.Helper()
	r := newGobReader(stream)
	def, err := r.next()
	require.NoError(t, err)
	val, err := r.next()
	require.NoError(t, err)
	id, err := parseFeaturesDef(def)
	require.NoError(t, err)
	var keys []string
	require.NoError(t, parseFeaturesValue(val, id, func(k, _ []byte) { keys = append(keys, string(k)) }))
	return keys
}

func TestFeaturesVectors(t *testing.T) {
	probe := loadVectors(t).Probe
	for _, w := range vectorFeatures(t) {
		t.Run(w.String(), func(t *testing.T) {
			m, err := decodeFeatures(w.stream)
			require.NoError(t, err)
			require.Equal(t, w.want, m)
			if w.v1 {
				r := bufio.NewReader(bytes.NewReader(w.stream))
				m1, err := readFeaturesV1(r)
				require.NoError(t, err)
				require.Equal(t, w.want, m1)
				_, err = r.ReadByte()
				require.ErrorIs(t, err, io.EOF, "exactly the features are consumed")
			} else if w.sender == "probe" && !strings.HasPrefix(w.scenario, "features-") && !strings.HasPrefix(w.scenario, "duplicate-") {
				require.Equal(t, probe.FeaturesSent, m)
			}
			// Sending the map with the keys in the order they arrived
			// reproduces the sender's bytes exactly.
			keys := featureKeysInWireOrder(t, w.stream)
			require.Len(t, keys, len(m))
			require.Equal(t, w.stream, appendFeatures(nil, keys, m))
			// The sorted encoding decodes to the same map.
			back, err := decodeFeatures(encodeFeatures(nil, m))
			require.NoError(t, err)
			require.Equal(t, m, back)
		})
	}
}

func TestAppendFeaturesProbe(t *testing.T) {
	vs := loadVectors(t)
	want := vs.scenario(t, "v2-plain-probe-dials").vector(t, "probe-features-frame").bytes(t)[4:]
	keys := []string{"PeerNameFlavour", "Name", "NickName", "ShortID", "UID", "ConnID", "Trusted"}
	require.Equal(t, want, appendFeatures(nil, keys, vs.Probe.FeaturesSent))

	// The probe's identity through featuresMap gives the same frame.
	f := peerFeatures{Name: 0x020000000099, NickName: "probe", UID: 1234605616436508552,
		ConnID: 72623859790382856, ShortID: 153, HasShortID: true}
	m := f.featuresMap(nil)
	require.Equal(t, vs.Probe.FeaturesSent, m)
	require.Equal(t, want, appendFeatures(nil, keys, m))

	// v1: the caller drops ShortID and Trusted and adds PublicKey.
	v1 := vs.scenario(t, "v1-pw").vector(t, "probe-v1-features").bytes(t)
	delete(m, featureShortID)
	delete(m, featureTrusted)
	m[featurePublicKey] = vs.Probe.PublicKey
	require.Equal(t, v1, appendFeatures(nil, []string{"ConnID", "Name", "NickName", "PeerNameFlavour", "UID", "PublicKey"}, m))
}

func TestFeaturesWithEncodingGob(t *testing.T) {
	m := map[string]string{"Name": "02:00:00:00:00:99", "NickName": strings.Repeat("n", 200), "": "", "K": "v"}
	// Our encoding decodes with encoding/gob.
	var got map[string]string
	require.NoError(t, gob.NewDecoder(bytes.NewReader(encodeFeatures(nil, m))).Decode(&got))
	require.Equal(t, m, got)

	// encoding/gob's encoding decodes with ours, whatever type id this
	// process gave map[string]string; so does one with another id.
	type other struct{ A, B int }
	for _, first := range []any{nil, other{1, 2}} {
		var buf bytes.Buffer
		enc := gob.NewEncoder(&buf)
		if first != nil {
			require.NoError(t, enc.Encode(first))
			buf.Reset()
		}
		require.NoError(t, enc.Encode(m))
		back, err := decodeFeatures(buf.Bytes())
		require.NoError(t, err)
		require.Equal(t, m, back)
	}
	// A map type defined under an id other than 64.
	stream := rewriteFeaturesID(t, encodeFeatures(nil, m), 1000)
	back, err := decodeFeatures(stream)
	require.NoError(t, err)
	require.Equal(t, m, back)
	require.NoError(t, gob.NewDecoder(bytes.NewReader(stream)).Decode(&got))
	require.Equal(t, m, got)
}

// rewriteFeaturesID re-encodes a features stream with the map defined as
// type id.
func rewriteFeaturesID(t testing.TB, stream []byte, id int64) []byte {
	t.Helper()
	r := newGobReader(stream)
	_, err := r.next()
	require.NoError(t, err)
	val, err := r.next()
	require.NoError(t, err)
	var def []byte
	def = appendRawInt(def, -id)
	def = append(def, 0x04, 0x01, 0x02)
	def = appendRawInt(def, id)
	def = append(def, 0x00, 0x01, 0x0c, 0x01, 0x0c, 0x00, 0x00)
	rest := val[len(featuresTypeID):]
	v := appendRawInt(nil, id)
	v = append(v, rest...)
	out := gobint.AppendUint(nil, uint64(len(def)))
	out = append(out, def...)
	out = gobint.AppendUint(out, uint64(len(v)))
	return append(out, v...)
}

// featuresStream builds a features stream from raw message bodies.
func featuresStream(bodies ...[]byte) []byte {
	var out []byte
	for _, b := range bodies {
		out = gobint.AppendUint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

func TestDecodeFeaturesErrors(t *testing.T) {
	good := encodeFeatures(nil, map[string]string{"a": "b"})
	def := mustHex(t, featuresTypeDefHex)
	mapValue := func(entries ...string) []byte {
		v := []byte{0xff, 0x80, 0x00}
		v = gobint.AppendUint(v, uint64(len(entries)/2))
		for _, e := range entries {
			v = gobint.AppendUint(v, uint64(len(e)))
			v = append(v, e...)
		}
		return v
	}
	many := make([]string, 0, 2*(maxFeatures+1))
	for i := range maxFeatures + 1 {
		many = append(many, strconv.Itoa(i), "v")
	}
	tests := []struct {
		name   string
		stream []byte
	}{
		{"empty", nil},
		{"definition only", good[:len(featuresTypeDef)]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"trailing message", appendGobUint(bytes.Clone(good), 1)},
		{"value without definition", featuresStream(mapValue("a", "b"))},
		{"two definitions", featuresStream(def, def, mapValue("a", "b"))},
		{"value of another type", featuresStream(def, append([]byte{0xff, 0x82}, mapValue("a", "b")[2:]...))},
		{"map[string]int", featuresStream(mustHex(t, "7f040102ff8000010c01040000"), mapValue())},
		{"map[int]string", featuresStream(mustHex(t, "7f040102ff80000104010c0000"), mapValue())},
		{"slice type", featuresStream(mustHex(t, "7f020102ff8000010c0000"), mapValue())},
		{"struct type", featuresStream(mustHex(t, "7f030102ff800001010101410104000000"), mapValue())},
		{"predefined id", featuresStream(mustHex(t, "0b0401020c00010c010c0000"), mapValue())},
		{"too many entries", featuresStream(def, mapValue(many...))},
		{"key too long", featuresStream(def, mapValue(strings.Repeat("k", maxFeatureLen+1), "v"))},
		{"value too long", featuresStream(def, mapValue("k", strings.Repeat("v", maxFeatureLen+1)))},
		{"count beyond data", featuresStream(def, []byte{0xff, 0x80, 0x00, 0x05, 0x01, 'a', 0x01, 'b'})},
		{"entry truncated", featuresStream(def, []byte{0xff, 0x80, 0x00, 0x01, 0x01, 'a', 0x05, 'b'})},
		{"non-zero singleton", featuresStream(def, []byte{0xff, 0x80, 0x01, 0x00})},
		{"extra bytes in value", featuresStream(def, append(mapValue("a", "b"), 0))},
		{"extra bytes in definition", featuresStream(append(bytes.Clone(def), 0), mapValue("a", "b"))},
		{"definition too long", featuresStream(mustHex(t, "7f040101"+"fe0101"+strings.Repeat("61", 257)+"01ff8000010c010c0000"), mapValue("a", "b"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeFeatures(tt.stream)
			require.ErrorIs(t, err, ErrBadFeatures)
			require.ErrorIs(t, err, ErrMalformed)
			if !strings.HasPrefix(tt.name, "trailing") {
				// On a stream, what follows the features is not theirs.
				_, err = readFeaturesV1(bufio.NewReader(bytes.NewReader(tt.stream)))
				require.Error(t, err)
			}
		})
	}
}

func TestDecodeFeaturesNamedMapType(t *testing.T) {
	// A map type with a name, as a named Go type could be sent.
	def := mustHex(t, "7f040101"+"08"+hex.EncodeToString([]byte("features"))+"01ff8000010c010c0000")
	val := []byte{0xff, 0x80, 0x00, 0x01, 0x01, 'k', 0x01, 'v'}
	m, err := decodeFeatures(featuresStream(def, val))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"k": "v"}, m)
}

// featuresTypeDefHex is the body of featuresTypeDef (without its count).
const featuresTypeDefHex = "7f040102ff8000010c010c0000"

func TestReadFeaturesV1Errors(t *testing.T) {
	stream := loadVectors(t).scenario(t, "v1-plain").vector(t, "weave-v1-features").bytes(t)
	for i := range len(stream) {
		_, err := readFeaturesV1(bufio.NewReader(bytes.NewReader(stream[:i])))
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "prefix %d", i)
	}
	huge := append([]byte(featuresTypeDef), gobint.AppendUint(nil, maxFeaturesValueLen+1)...)
	_, err := readFeaturesV1(bufio.NewReader(bytes.NewReader(huge)))
	require.ErrorIs(t, err, ErrBadFeatures)
	require.ErrorIs(t, err, ErrFrameTooLarge)
}

func TestFeaturesPrefixesAndFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, w := range vectorFeatures(t) {
		for i := range len(w.stream) {
			_, err := decodeFeatures(w.stream[:i])
			require.Error(t, err, "%s: prefix %d", w.String(), i)
		}
		for range 100 {
			b := bytes.Clone(w.stream)
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			if m, err := decodeFeatures(b); err == nil {
				checkFeaturesRoundTrip(t, m)
			}
		}
	}
}

// checkFeaturesRoundTrip checks that a decoded map survives encoding and
// decoding, both ours and encoding/gob's.
func checkFeaturesRoundTrip(t testing.TB, m map[string]string) {
	t.Helper()
	b := encodeFeatures(nil, m)
	back, err := decodeFeatures(b)
	if err != nil || !maps.Equal(m, back) {
		t.Fatalf("round trip of %v: %v, %v", m, back, err)
	}
	var viaGob map[string]string
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&viaGob); err != nil || !maps.Equal(m, viaGob) {
		t.Fatalf("encoding/gob decoded %v as %v, %v", m, viaGob, err)
	}
}

func TestParseFeatures(t *testing.T) {
	probe := loadVectors(t).Probe
	f, err := parseFeatures(probe.FeaturesSent)
	require.NoError(t, err)
	require.Equal(t, peerFeatures{Name: 0x020000000099, NickName: "probe", UID: 1234605616436508552,
		ConnID: 72623859790382856, ShortID: 153, HasShortID: true}, f)

	with := func(changes map[string]string, remove ...string) map[string]string {
		m := maps.Clone(probe.FeaturesSent)
		maps.Copy(m, changes)
		for _, k := range remove {
			delete(m, k)
		}
		return m
	}
	tests := []struct {
		name string
		m    map[string]string
		msg  string
	}{
		{"missing ConnID", with(nil, "ConnID"), "field ConnID is missing"},
		{"missing PeerNameFlavour", with(nil, "PeerNameFlavour"), "field PeerNameFlavour is missing"},
		{"missing Name", with(nil, "Name"), "field Name is missing"},
		{"missing NickName", with(nil, "NickName"), "field NickName is missing"},
		{"missing UID", with(nil, "UID"), "field UID is missing"},
		{"flavour hash", with(map[string]string{"PeerNameFlavour": "hash"}), "Peer name flavour mismatch (ours: 'mac', theirs: 'hash')"},
		{"bad name", with(map[string]string{"Name": "probe"}), "peer name"},
		{"zero UID", with(map[string]string{"UID": "0"}), "UID is zero"},
		{"bad UID", with(map[string]string{"UID": "-1"}), "UID"},
		{"UID overflow", with(map[string]string{"UID": "18446744073709551616"}), "UID"},
		{"bad ConnID", with(map[string]string{"ConnID": "x"}), "ConnID"},
		{"ShortID 4096", with(map[string]string{"ShortID": "4096"}), "ShortID"},
		{"bad Trusted", with(map[string]string{"Trusted": "yes"}), "Trusted"},
		{"long NickName", with(map[string]string{"NickName": strings.Repeat("n", maxNickNameLen+1)}), "NickName"},
		{"empty", map[string]string{}, "field PeerNameFlavour is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFeatures(tt.m)
			require.ErrorIs(t, err, ErrBadFeatures)
			require.ErrorContains(t, err, tt.msg)
		})
	}

	// A malformed PublicKey is ignored here: only the version 1 handshake,
	// which uses it, checks it.
	for _, key := range []string{"abcd", strings.Repeat("zz", 32)} {
		f, err := parseFeatures(with(map[string]string{"PublicKey": key}))
		require.NoError(t, err)
		require.Nil(t, f.PublicKey)
	}

	// Optional fields.
	f, err = parseFeatures(with(map[string]string{"Trusted": "true", "Other": "x"}, "ShortID"))
	require.NoError(t, err)
	require.True(t, f.Trusted)
	require.False(t, f.HasShortID)
	f, err = parseFeatures(with(map[string]string{"PublicKey": probe.PublicKey}, "ShortID", "Trusted"))
	require.NoError(t, err)
	require.Equal(t, mustHex(t, probe.PublicKey), f.PublicKey)
}

func TestParseFeaturesVectors(t *testing.T) {
	for _, w := range vectorFeatures(t) {
		t.Run(w.String(), func(t *testing.T) {
			f, err := parseFeatures(w.want)
			switch w.scenario + "/" + w.sender {
			case "features-missing-connid/probe":
				require.ErrorContains(t, err, "field ConnID is missing")
				return
			case "features-flavour-hash/probe":
				require.ErrorContains(t, err, "Peer name flavour mismatch (ours: 'mac', theirs: 'hash')")
				return
			}
			require.NoError(t, err)
			require.Equal(t, w.want["NickName"], f.NickName)
			require.Equal(t, w.want["Name"], f.Name.String())
			require.Equal(t, w.want["UID"], strconv.FormatUint(uint64(f.UID), 10))
			require.Equal(t, w.want["ConnID"], strconv.FormatUint(f.ConnID, 10))
			_, hasShortID := w.want["ShortID"]
			require.Equal(t, hasShortID, f.HasShortID)
			if w.v1 && w.want["PublicKey"] != "" {
				require.Len(t, f.PublicKey, 32)
			}
			// The features map of what was parsed holds the same entries.
			m := f.featuresMap(nil)
			if !hasShortID {
				require.NotContains(t, m, featureShortID)
			}
			for _, k := range []string{featurePeerNameFlavour, featureName, featureNickName, featureShortID, featureUID, featureConnID, featureTrusted} {
				if v, ok := w.want[k]; ok {
					require.Equal(t, v, m[k], k)
				}
			}
		})
	}
}

func TestFeaturesMap(t *testing.T) {
	f := peerFeatures{Name: 0xaabbccddeeff, NickName: "n", UID: 7, ConnID: 1<<64 - 1, ShortID: 4095, HasShortID: true, Trusted: true}
	extra := map[string]string{"Overlay": "x", "Name": "spoofed", "ShortID": "1"}
	m := f.featuresMap(extra)
	require.Equal(t, map[string]string{
		"Overlay":         "x",
		"PeerNameFlavour": "mac",
		"Name":            "aa:bb:cc:dd:ee:ff",
		"NickName":        "n",
		"ShortID":         "4095",
		"UID":             "7",
		"ConnID":          "18446744073709551615",
		"Trusted":         "true",
	}, m)
	require.Equal(t, "spoofed", extra["Name"], "extra is not modified")
	back, err := parseFeatures(m)
	require.NoError(t, err)
	require.Equal(t, f, back)

	f.HasShortID, f.ShortID, f.Trusted = false, 0, false
	m = f.featuresMap(extra)
	require.NotContains(t, m, featureShortID)
	require.Equal(t, "false", m[featureTrusted])
	back, err = parseFeatures(m)
	require.NoError(t, err)
	require.Equal(t, f, back)
}

func FuzzDecodeFeatures(f *testing.F) {
	for _, w := range vectorFeatures(f) {
		f.Add(w.stream)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeFeatures(data)
		if err != nil {
			return
		}
		if len(m) > maxFeatures {
			t.Fatalf("%d features", len(m))
		}
		for k, v := range m {
			if len(k) > maxFeatureLen || len(v) > maxFeatureLen {
				t.Fatalf("feature of %d/%d bytes", len(k), len(v))
			}
		}
		checkFeaturesRoundTrip(t, m)
		m1, err := readFeaturesV1(bufio.NewReader(bytes.NewReader(data)))
		if err != nil || !maps.Equal(m, m1) {
			t.Fatalf("readFeaturesV1: %v, %v", m1, err)
		}
		if pf, err := parseFeatures(m); err == nil {
			back, err := parseFeatures(pf.featuresMap(nil))
			pf.PublicKey = nil
			if err != nil || !equalFeatures(pf, back) {
				t.Fatalf("features %+v -> %+v, %v", pf, back, err)
			}
		}
	})
}

// equalFeatures compares two peerFeatures.
func equalFeatures(a, b peerFeatures) bool {
	return a.Name == b.Name && a.NickName == b.NickName && a.UID == b.UID && a.ConnID == b.ConnID &&
		a.ShortID == b.ShortID && a.HasShortID == b.HasShortID && a.Trusted == b.Trusted &&
		bytes.Equal(a.PublicKey, b.PublicKey)
}
