package mesh

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// PeerNameFlavour is the kind of peer name this package uses: a 48-bit
// MAC-style address. It is exchanged in the connection features and must
// match on both ends.
const PeerNameFlavour = "mac"

// NameSize is the number of bytes in the binary form of a PeerName.
const NameSize = 6

// PeerName identifies a peer in the mesh. In the "mac" flavour it holds a
// 48-bit value written like a MAC address, "aa:bb:cc:dd:ee:ff".
type PeerName uint64

// UnknownPeerName is the zero PeerName, used where no peer is meant.
const UnknownPeerName = PeerName(0)

// PeerUID tells apart incarnations of a peer with the same name: a random,
// non-zero value chosen each time a router is created.
type PeerUID uint64

// PeerShortID is a 12-bit identifier a peer may claim; it is carried in the
// topology for compatibility and otherwise unused by this package.
type PeerShortID uint16

// errBadPeerName is wrapped by every peer name parsing error.
var errBadPeerName = errors.New("mesh: invalid peer name")

const maxPeerName = 1<<(8*NameSize) - 1

// PeerNameFromString parses a name of the form "aa:bb:cc:dd:ee:ff". Like an
// IPv6 address, one run of zero groups may be written as "::", so "::1" is
// 00:00:00:00:00:01 and "aa::" is aa:00:00:00:00:00.
func PeerNameFromString(s string) (PeerName, error) {
	var groups []string
	if i := strings.Index(s, "::"); i >= 0 {
		head, tail := s[:i], s[i+2:]
		if strings.Contains(tail, "::") {
			return 0, fmt.Errorf("%w: %q has more than one \"::\"", errBadPeerName, s)
		}
		var hg, tg []string
		if head != "" {
			hg = strings.Split(head, ":")
		}
		if tail != "" {
			tg = strings.Split(tail, ":")
		}
		missing := NameSize - len(hg) - len(tg)
		if missing < 1 {
			return 0, fmt.Errorf("%w: %q has too many groups", errBadPeerName, s)
		}
		groups = append(groups, hg...)
		for ; missing > 0; missing-- {
			groups = append(groups, "0")
		}
		groups = append(groups, tg...)
	} else {
		groups = strings.Split(s, ":")
	}
	if len(groups) != NameSize {
		return 0, fmt.Errorf("%w: %q does not have %d groups", errBadPeerName, s, NameSize)
	}
	var n uint64
	for _, g := range groups {
		if len(g) == 0 || len(g) > 2 {
			return 0, fmt.Errorf("%w: %q has a bad group %q", errBadPeerName, s, g)
		}
		var v uint64
		for _, c := range []byte(g) {
			d, ok := hexDigit(c)
			if !ok {
				return 0, fmt.Errorf("%w: %q has a bad group %q", errBadPeerName, s, g)
			}
			v = v<<4 | uint64(d)
		}
		n = n<<8 | v
	}
	return PeerName(n), nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// PeerNameFromUserInput parses a peer name typed by a user. In the "mac"
// flavour it is the same as PeerNameFromString.
func PeerNameFromUserInput(userInput string) (PeerName, error) {
	return PeerNameFromString(userInput)
}

// PeerNameFromBin decodes the binary form of a name (big-endian, normally
// NameSize bytes). Bytes beyond the last eight are ignored.
func PeerNameFromBin(nameByte []byte) PeerName {
	var n uint64
	for _, b := range nameByte {
		n = n<<8 | uint64(b)
	}
	return PeerName(n & maxPeerName)
}

// Bin returns the binary form of the name: NameSize big-endian bytes.
func (name PeerName) Bin() []byte {
	return name.appendBin(make([]byte, 0, NameSize))
}

func (name PeerName) appendBin(b []byte) []byte {
	for i := NameSize - 1; i >= 0; i-- {
		b = append(b, byte(name>>(8*uint(i))))
	}
	return b
}

// String returns the name as "aa:bb:cc:dd:ee:ff".
func (name PeerName) String() string {
	var buf [NameSize*3 - 1]byte
	var bin [NameSize]byte
	name.appendBin(bin[:0])
	for i, b := range bin {
		if i > 0 {
			buf[i*3-1] = ':'
		}
		hex.Encode(buf[i*3:i*3+2], []byte{b})
	}
	return string(buf[:])
}
