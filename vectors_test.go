package mesh

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// The bytes captured from real weave mesh v0.4 routers (see
// testdata/weave-v0.4-vectors.json): every byte each side wrote, in order,
// with its meaning.

type weaveVectors struct {
	Probe struct {
		Name         string            `json:"name"`
		UID          string            `json:"uid"`
		ConnID       string            `json:"conn_id"`
		PrivateKey   string            `json:"curve25519_private_key_hex"`
		PublicKey    string            `json:"curve25519_public_key_hex"`
		Password     string            `json:"password_for_encrypted_scenarios"`
		FeaturesSent map[string]string `json:"features_sent_v2"`
	} `json:"probe"`
	Scenarios []weaveScenario `json:"scenarios"`
}

type weaveScenario struct {
	Name         string            `json:"name"`
	Description  string            `json:"description"`
	Keys         map[string]string `json:"keys"`
	Vectors      []weaveVector     `json:"vectors"`
	Observations map[string]any    `json:"observations"`
	WeaveLog     []string          `json:"weave_log"`
}

type weaveVector struct {
	Name         string         `json:"name"`
	Description  string         `json:"description"`
	Sender       string         `json:"sender"`
	Hex          string         `json:"hex"`
	StreamOffset int            `json:"stream_offset"`
	Connection   int            `json:"connection"`
	NonceHex     string         `json:"nonce_hex"`
	PlaintextHex string         `json:"plaintext_hex"`
	Decoded      map[string]any `json:"decoded"`
}

var (
	vectorsOnce sync.Once
	vectors     *weaveVectors
	vectorsErr  error
)

// loadVectors returns the captured weave vectors, parsed once per test binary.
func loadVectors(t testing.TB) *weaveVectors {
	t.Helper()
	vectorsOnce.Do(func() {
		data, err := os.ReadFile("testdata/weave-v0.4-vectors.json")
		if err != nil {
			vectorsErr = err
			return
		}
		vectors = new(weaveVectors)
		vectorsErr = json.Unmarshal(data, vectors)
	})
	if vectorsErr != nil {
		t.Fatalf("loading weave vectors: %v", vectorsErr)
	}
	return vectors
}

// scenario returns the named scenario or fails the test.
func (v *weaveVectors) scenario(t testing.TB, name string) *weaveScenario {
	t.Helper()
	for i := range v.Scenarios {
		if v.Scenarios[i].Name == name {
			return &v.Scenarios[i]
		}
	}
	t.Fatalf("no scenario %q in the weave vectors", name)
	return nil
}

// vector returns the named vector of a scenario (the first one on
// connection conn when conn > 0) or fails the test.
func (s *weaveScenario) vector(t testing.TB, name string) *weaveVector {
	t.Helper()
	for i := range s.Vectors {
		if s.Vectors[i].Name == name {
			return &s.Vectors[i]
		}
	}
	t.Fatalf("no vector %q in scenario %q", name, s.Name)
	return nil
}

// stream concatenates the bytes one sender wrote, in order (on one
// connection when conn > 0).
func (s *weaveScenario) stream(t testing.TB, sender string, conn int) []byte {
	t.Helper()
	var out []byte
	for _, v := range s.Vectors {
		if v.Sender != sender || (conn > 0 && v.Connection != conn) {
			continue
		}
		out = append(out, mustHex(t, v.Hex)...)
	}
	return out
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// bytes returns the vector's wire bytes.
func (v *weaveVector) bytes(t testing.TB) []byte { return mustHex(t, v.Hex) }

// plaintext returns the vector's decrypted body, or its wire bytes when it
// was not encrypted.
func (v *weaveVector) plaintext(t testing.TB) []byte {
	if v.PlaintextHex != "" {
		return mustHex(t, v.PlaintextHex)
	}
	return v.bytes(t)
}

func TestVectorsLoad(t *testing.T) {
	v := loadVectors(t)
	if len(v.Scenarios) == 0 {
		t.Fatal("no scenarios")
	}
	for _, s := range v.Scenarios {
		for _, vec := range s.Vectors {
			mustHex(t, vec.Hex)
		}
	}
}
