package mesh

import (
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// key32 decodes a 64-digit hex string into a key.
func key32(t testing.TB, s string) *[32]byte {
	t.Helper()
	b := mustHex(t, s)
	if len(b) != 32 {
		t.Fatalf("key %q has %d bytes, want 32", s, len(b))
	}
	k := new([32]byte)
	copy(k[:], b)
	return k
}

// probeKeyPair returns the probe's fixed key pair from the vectors.
func probeKeyPair(t testing.TB) (pub, priv *[32]byte) {
	v := loadVectors(t)
	return key32(t, v.Probe.PublicKey), key32(t, v.Probe.PrivateKey)
}

// probeDialled tells whether the probe dialled in an encrypted scenario,
// from the direction bit of its first nonce.
func probeDialled(t testing.TB, s *weaveScenario) bool {
	t.Helper()
	n := mustHex(t, s.Keys["probe_first_nonce_hex"])
	return n[0]&nonceOutboundBit != 0
}

// TestGenerateKeyPair checks that fresh key pairs are distinct and consistent.
func TestGenerateKeyPair(t *testing.T) {
	pub1, priv1, err := generateKeyPair()
	require.NoError(t, err)
	pub2, priv2, err := generateKeyPair()
	require.NoError(t, err)
	require.NotEqual(t, *priv1, *priv2, "two key pairs must differ")
	require.NotEqual(t, *pub1, *pub2)
	for _, kp := range []struct{ pub, priv *[32]byte }{{pub1, priv1}, {pub2, priv2}} {
		want, err := curve25519.X25519(kp.priv[:], curve25519.Basepoint)
		require.NoError(t, err)
		require.Equal(t, want, kp.pub[:], "public key must match the private key")
	}
}

// TestDeriveSessionKeyVectors derives the captured shared and session keys from the probe's private key and weave's public key.
func TestDeriveSessionKeyVectors(t *testing.T) {
	v := loadVectors(t)
	probePub, probePriv := probeKeyPair(t)
	pub, err := curve25519.X25519(probePriv[:], curve25519.Basepoint)
	require.NoError(t, err)
	require.Equal(t, probePub[:], pub, "the probe's public key must belong to its private key")

	var n int
	for _, s := range v.Scenarios {
		if s.Keys == nil {
			continue
		}
		n++
		t.Run(s.Name, func(t *testing.T) {
			weavePub := key32(t, s.Keys["weave_public_key_hex"])
			var shared [32]byte
			box.Precompute(&shared, weavePub, probePriv)
			require.Equal(t, s.Keys["shared_key_hex"], hex.EncodeToString(shared[:]))

			got := deriveSessionKey(weavePub, probePriv, []byte(s.Keys["password"]))
			require.Equal(t, s.Keys["session_key_hex"], hex.EncodeToString(got[:]))

			other := deriveSessionKey(weavePub, probePriv, []byte(s.Keys["password"]+"x"))
			require.NotEqual(t, *got, *other, "the password must change the key")
		})
	}
	require.Equal(t, 5, n, "scenarios with keys")
}

// TestDeriveSessionKeySymmetric checks that both ends of a connection derive the same key.
func TestDeriveSessionKeySymmetric(t *testing.T) {
	aPub, aPriv, err := generateKeyPair()
	require.NoError(t, err)
	bPub, bPriv, err := generateKeyPair()
	require.NoError(t, err)
	for _, pw := range [][]byte{nil, {}, []byte("s3cret")} {
		require.Equal(t, *deriveSessionKey(bPub, aPriv, pw), *deriveSessionKey(aPub, bPriv, pw))
	}
	// nil and empty passwords give the same key: what tells them apart is
	// whether encryption is on at all, which the handshake decides.
	require.Equal(t, *deriveSessionKey(bPub, aPriv, nil), *deriveSessionKey(bPub, aPriv, []byte{}))
}

// TestMakeNonce checks the nonce layout for both directions and several counters.
func TestMakeNonce(t *testing.T) {
	tests := []struct {
		name     string
		outbound bool
		counter  uint64
		want     string
	}{
		{"dialler first", true, 0, "c00000000000000000000000000000000000000000000000"},
		{"acceptor first", false, 0, "400000000000000000000000000000000000000000000000"},
		{"acceptor heartbeat", false, 6, "400000000000000000000000000000000000000000000006"},
		{"big counter", true, 0x0102030405060708, "c00000000000000000000000000000000102030405060708"},
		{"max counter", false, ^uint64(0), "40000000000000000000000000000000ffffffffffffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n [24]byte
			for i := range n {
				n[i] = 0xaa // makeNonce must overwrite every byte
			}
			makeNonce(&n, tt.outbound, tt.counter)
			require.Equal(t, tt.want, hex.EncodeToString(n[:]))
		})
	}
}

// TestMakeNonceVectors rebuilds every nonce recorded in the captures, counting frames per sender.
func TestMakeNonceVectors(t *testing.T) {
	v := loadVectors(t)
	var checked int
	for _, s := range v.Scenarios {
		if s.Keys == nil {
			continue
		}
		probeOut := probeDialled(t, &s)
		next := map[string]uint64{}
		for _, vec := range s.Vectors {
			if vec.NonceHex == "" {
				continue
			}
			senderOut := probeOut == (vec.Sender == "probe")
			var n [24]byte
			makeNonce(&n, senderOut, next[vec.Sender])
			require.Equal(t, vec.NonceHex, hex.EncodeToString(n[:]), "%s/%s", s.Name, vec.Name)
			require.Equal(t, next[vec.Sender], binary.BigEndian.Uint64(n[16:]))
			next[vec.Sender]++
			checked++
		}
	}
	require.Greater(t, checked, 30)
}
