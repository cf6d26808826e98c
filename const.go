package mesh

import (
	"errors"
	"time"
)

// Wire protocol constants, shared with weave mesh.
const (
	// Protocol is the magic string that opens every connection.
	Protocol = "weave"
	// ProtocolMinVersion is the oldest protocol version this package speaks.
	ProtocolMinVersion = 1
	// ProtocolMaxVersion is the newest protocol version this package speaks.
	ProtocolMaxVersion = 2
)

// Port is the default TCP port of a mesh router.
var Port = 6783

// Message tags: the first byte of every frame body.
const (
	tagHeartbeat       byte = 0
	tagGossip          byte = 4
	tagGossipUnicast   byte = 5
	tagGossipBroadcast byte = 6
	tagOverlayControl  byte = 7
)

// Default limits and timings.
const (
	// DefaultMaxFrameSize is the largest frame body (ciphertext when
	// encrypted) sent or accepted, as weave mesh does: 10 MiB.
	DefaultMaxFrameSize = 10 * 1024 * 1024
	// DefaultHeartbeatInterval is how often an idle connection sends a
	// heartbeat. A connection that receives nothing for twice this long is
	// closed.
	DefaultHeartbeatInterval = 30 * time.Second
	// DefaultGossipInterval is how often every channel's complete state is
	// gossiped to a neighbour subset.
	DefaultGossipInterval = 30 * time.Second
	// DefaultHandshakeTimeout bounds the whole connection handshake.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultConnLimit is the default maximum number of connections.
	DefaultConnLimit = 64
	// DefaultDiscoveryDegree is how many connections peer discovery aims
	// for by default.
	DefaultDiscoveryDegree = 8

	// maxNickNameLen, maxChannelNameLen and maxAddrLen bound strings read
	// from the network.
	maxNickNameLen    = 256
	maxChannelNameLen = 256
	maxAddrLen        = 256
	// maxFeatures bounds the number of entries in a features map.
	maxFeatures = 64
	// maxFeatureLen bounds each key and value of a features map.
	maxFeatureLen = 1024
)

// Errors returned by this package. Handshake failures wrap one of these, so
// callers can test them with errors.Is.
var (
	// ErrBadHeader means the remote did not open with the protocol magic.
	ErrBadHeader = errors.New("mesh: remote protocol header not recognised")
	// ErrVersionMismatch means the two version ranges do not overlap.
	ErrVersionMismatch = errors.New("mesh: incompatible protocol version range")
	// ErrEncryptionMismatch means one side has a password and the other
	// does not.
	ErrEncryptionMismatch = errors.New("mesh: encryption mismatch")
	// ErrBadEncryptionFlag means the remote sent an unknown encryption flag.
	ErrBadEncryptionFlag = errors.New("mesh: bad encryption flag")
	// ErrDecrypt means a frame failed authentication. During the handshake
	// this almost always means the two peers have different passwords.
	ErrDecrypt = errors.New("mesh: unable to decrypt message")
	// ErrFrameTooLarge means a frame exceeds the configured size limit.
	ErrFrameTooLarge = errors.New("mesh: message exceeds maximum size")
	// ErrBadFeatures means the remote's features are missing, malformed or
	// of another peer name flavour.
	ErrBadFeatures = errors.New("mesh: bad connection features")
	// ErrConnectToSelf means a connection reached this very router.
	ErrConnectToSelf = errors.New("mesh: cannot connect to ourself")
	// ErrNameCollision means the remote uses our name with another UID.
	ErrNameCollision = errors.New("mesh: peer name collision")
	// ErrDuplicateConnection means a connection to the same peer already
	// exists and won the tie-break.
	ErrDuplicateConnection = errors.New("mesh: multiple connections to the same peer")
	// ErrMalformed means a message could not be decoded.
	ErrMalformed = errors.New("mesh: malformed message")
	// ErrNoRoute means a unicast destination is not reachable.
	ErrNoRoute = errors.New("mesh: no route to peer")
	// ErrStopped means the router has been stopped.
	ErrStopped = errors.New("mesh: router stopped")
	// ErrConnLimit means the connection limit has been reached.
	ErrConnLimit = errors.New("mesh: too many connections")
)
