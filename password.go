package mesh

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
)

// Passwords.
//
// The password is the only secret of a mesh: every peer that knows it is
// trusted. Anyone who can open a connection to a peer, or sit in the
// middle of one, receives a frame sealed with a key derived from the
// password and can test password guesses against it offline, at the cost
// of one SHA-256 and one Poly1305 per guess, so the password must be long
// and random rather than memorable. GeneratePassword makes one; NewRouter
// logs a warning for a password shorter than minPasswordLen bytes.

// minPasswordLen is the length below which NewRouter warns that the
// password is weak. Sixteen random characters from a 32-letter alphabet
// are 80 bits.
const minPasswordLen = 16

// generatedPasswordBytes is the randomness in a generated password.
const generatedPasswordBytes = 32

// passwordEncoding writes generated passwords: upper-case letters and the
// digits 2 to 7, without padding, so that they need no quoting in shells,
// environment variables or configuration files.
var passwordEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// GeneratePassword returns a new password for a mesh: 256 bits from
// crypto/rand, written as 52 characters from A-Z and 2-7. Give the same
// password to every peer (Config.Password) through a secret store or an
// environment variable, not on a command line.
func GeneratePassword() (string, error) {
	b := make([]byte, generatedPasswordBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mesh: generating a password: %w", err)
	}
	return passwordEncoding.EncodeToString(b), nil
}

// warnWeakPassword logs a warning when encryption is on with a password
// shorter than minPasswordLen bytes.
func (router *Router) warnWeakPassword() {
	if pw := router.Password; pw != nil && len(pw) < minPasswordLen {
		router.logOnce("password", fmt.Sprintf("the password is only %d bytes long: anyone who can connect to this router can test guesses against it offline; use at least %d random bytes (GeneratePassword makes a strong one)",
			len(pw), minPasswordLen))
	}
}
