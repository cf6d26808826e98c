package mesh

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"

	"golang.org/x/crypto/nacl/box"
)

// Nonce layout bits. The first byte of every frame nonce carries these
// flags; the last eight bytes carry the frame counter.
const (
	// nonceOutboundBit is set when the sender of the frame dialled the
	// connection. It keeps the two directions of one connection, which share
	// a session key, from ever using the same nonce.
	nonceOutboundBit = 1 << 7
	// nonceTCPBit is always set on connection frames.
	nonceTCPBit = 1 << 6
	// nonceCounterOffset is where the big-endian frame counter starts.
	nonceCounterOffset = 16
)

// generateKeyPair returns a fresh Curve25519 key pair for one connection,
// drawn from crypto/rand.
func generateKeyPair() (pub, priv *[32]byte, err error) {
	return box.GenerateKey(rand.Reader)
}

// deriveSessionKey computes the symmetric key both ends of an encrypted
// connection use: the SHA-256 digest of the NaCl shared key (X25519 followed
// by HSalsa20, as box.Precompute does) with the password appended. Two peers
// reach the same key only when they hold the same password.
func deriveSessionKey(remotePub, localPriv *[32]byte, password []byte) *[32]byte {
	var shared [32]byte
	box.Precompute(&shared, remotePub, localPriv)
	h := sha256.New()
	h.Write(shared[:])
	h.Write(password)
	key := new([32]byte)
	h.Sum(key[:0])
	return key
}

// makeNonce fills nonce for the frame with the given counter. senderOutbound
// tells whether the side that sealed (or will seal) the frame is the one that
// dialled the connection; a receiver therefore passes the opposite of its own
// direction.
func makeNonce(nonce *[24]byte, senderOutbound bool, counter uint64) {
	*nonce = [24]byte{}
	nonce[0] = nonceTCPBit
	if senderOutbound {
		nonce[0] |= nonceOutboundBit
	}
	binary.BigEndian.PutUint64(nonce[nonceCounterOffset:], counter)
}
