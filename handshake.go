package mesh

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The connection handshake.
//
// Both ends first write a 7-byte header: the magic "weave", their lowest and
// their highest protocol version. The version used is the lower of the two
// highest versions, provided it is not below either lowest one.
//
// Version 2 continues with an encryption flag byte (0, or 1 followed by a
// fresh Curve25519 public key), then one length-prefixed frame each way
// holding the features map, sealed with the session key when encrypted.
// Weave writes its flag without waiting, but its features only after it has
// read ours, so we must never wait for the remote's features before sending
// our flag.
//
// Version 1 continues with one gob stream per direction. Its first value is
// the features map, in clear, which carries a PublicKey entry when
// encrypted; every later value is a message body ([]byte).

// headerLen is the size of the protocol header.
const headerLen = len(Protocol) + 2

// v1FeatureKeys are the features a version 1 handshake carries, apart from
// the public key.
var v1FeatureKeys = [...]string{featureConnID, featureName, featureNickName, featurePeerNameFlavour, featureUID}

// Weave's texts for an encryption mismatch.
const (
	errTextWantCrypto   = "password specified, but peer requested an unencrypted connection"
	errTextWantNoCrypto = "no password specified, but peer requested an encrypted connection"
)

// handshakeConfig holds what one end brings to a handshake.
type handshakeConfig struct {
	Outbound     bool              // we dialled
	Password     []byte            // nil = no encryption; empty but non-nil = encrypted (with empty password)
	MinVersion   byte              // our minimum (1 or 2); 0 means ProtocolMinVersion
	MaxVersion   byte              // our maximum; 0 means ProtocolMaxVersion
	Features     map[string]string // our complete version 2 features
	MaxFrameSize int               // 0 means DefaultMaxFrameSize
	Timeout      time.Duration     // deadline for the whole handshake; 0 means DefaultHandshakeTimeout

	// keyPair supplies the connection's key pair; nil means
	// generateKeyPair. Tests use it to inject a fixed key.
	keyPair func() (pub, priv *[32]byte, err error)
}

// handshakeResult is what a successful handshake leaves for the connection.
type handshakeResult struct {
	Version   byte              // the protocol version in use
	Features  map[string]string // the remote's features, not yet validated
	Encrypted bool              // frames are sealed with the session key
	reader    *frameReader      // reads the remote's frames from the caller's bufio.Reader
	writer    *frameWriter      // produces our frames, continuing after the features
	// first is, on an encrypted version 1 connection, the remote's first
	// frame, read and opened by the handshake: the caller handles it
	// before reading further.
	first []byte
}

// doHandshake runs the whole handshake on conn, reading through br, which
// the caller keeps using afterwards (the returned frameReader reads from
// it). The whole exchange must finish within cfg.Timeout: conn's deadline is
// set at the start and cleared on success. Every failure is returned as an
// error, wrapping one of the package's sentinel errors where one applies;
// the caller is expected to close conn then (see abortConn).
//
// Our writes run in a goroutine of their own, one after the other, while
// this goroutine reads, so neither end can block the other even on a
// connection without buffering such as net.Pipe. Every write has ended
// before doHandshake returns.
func doHandshake(conn net.Conn, br *bufio.Reader, cfg *handshakeConfig) (*handshakeResult, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("mesh: setting the handshake deadline: %w", err)
	}
	h := &handshake{
		cfg:      cfg,
		br:       br,
		w:        handshakeWriter{conn: conn, done: make(chan error, 1)},
		maxFrame: effectiveMaxFrame(cfg.MaxFrameSize),
	}
	res, err := h.run()
	if err != nil {
		// Let a write still in progress finish (the handshake deadline
		// bounds it), so that the remote can see why we give up and no
		// goroutine started here outlives the call.
		_ = h.w.wait()
		return nil, err
	}
	if err := h.w.wait(); err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("mesh: clearing the handshake deadline: %w", err)
	}
	return res, nil
}

// abortConn closes conn so that the remote sees a reset rather than an
// orderly close, as weave does on every error. Connections that cannot
// linger (anything but TCP) are simply closed.
func abortConn(conn net.Conn) {
	if l, ok := conn.(interface{ SetLinger(sec int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = conn.Close()
}

// handshakeWriter writes the handshake's byte runs to the connection in a
// goroutine, one run at a time and in order.
type handshakeWriter struct {
	conn    net.Conn
	done    chan error // capacity 1, so a writer never lingers on it
	pending bool       // a write has been started and not waited for
}

// send waits for the previous write, then starts writing b. b must not be
// modified afterwards.
func (w *handshakeWriter) send(b []byte) error {
	if err := w.wait(); err != nil {
		return err
	}
	w.pending = true
	go func() {
		_, err := w.conn.Write(b)
		w.done <- err
	}()
	return nil
}

// wait returns once the last write started has completed.
func (w *handshakeWriter) wait() error {
	if !w.pending {
		return nil
	}
	w.pending = false
	if err := <-w.done; err != nil {
		return fmt.Errorf("mesh: sending handshake: %w", err)
	}
	return nil
}

// handshake is the state of one handshake in progress.
type handshake struct {
	cfg      *handshakeConfig
	br       *bufio.Reader
	w        handshakeWriter
	maxFrame int
	pub      *[32]byte // our public key, when encrypted
	priv     *[32]byte // our private key, when encrypted
	v2Writer *frameWriter
}

// run performs the handshake steps in order.
func (h *handshake) run() (*handshakeResult, error) {
	ourMin, ourMax, err := h.versionRange()
	if err != nil {
		return nil, err
	}
	if h.cfg.Password != nil {
		keyPair := h.cfg.keyPair
		if keyPair == nil {
			keyPair = generateKeyPair
		}
		if h.pub, h.priv, err = keyPair(); err != nil {
			return nil, fmt.Errorf("mesh: generating the connection key pair: %w", err)
		}
	}

	out := append([]byte(Protocol), ourMin, ourMax)
	// When we speak a single version, whatever follows the header is
	// known before the remote's header arrives: send it along.
	early := ourMin == ourMax
	if early {
		if out, err = h.appendIntro(out, ourMin); err != nil {
			return nil, err
		}
	}
	if err := h.w.send(out); err != nil {
		return nil, err
	}

	version, err := h.readHeader(ourMin, ourMax)
	if err != nil {
		return nil, err
	}
	if !early {
		out, err := h.appendIntro(nil, version)
		if err != nil {
			return nil, err
		}
		if err := h.w.send(out); err != nil {
			return nil, err
		}
	}
	if version == 1 {
		res, err := h.finishV1()
		if err == nil && res.Encrypted {
			err = h.authenticateV1(res)
		}
		return res, err
	}
	return h.finishV2()
}

// authenticateV1 proves an encrypted version 1 connection before it is
// used. Version 1 exchanges features in clear, so at its end nothing shows
// that the remote has the password: whoever connects could take a peer's
// name, and the place of that peer's connection. Each end therefore sends
// a sealed heartbeat at once and reads the remote's first sealed frame
// within the handshake deadline; only a frame that opens with the session
// key completes the handshake. weave sends its first frames (topology,
// heartbeats) as soon as its handshake ends, so it passes without knowing.
func (h *handshake) authenticateV1(res *handshakeResult) error {
	out, err := res.writer.appendFrame(nil, []byte{tagHeartbeat})
	if err != nil {
		return err
	}
	if err := h.w.send(out); err != nil {
		return err
	}
	body, err := res.reader.readFrame()
	if err != nil {
		if errors.Is(err, ErrDecrypt) {
			return err
		}
		return fmt.Errorf("mesh: failed to receive the remote's first sealed frame: %w", noEOF(err))
	}
	res.first = append([]byte(nil), body...)
	return nil
}

// versionRange returns our version range, with defaults applied.
func (h *handshake) versionRange() (lo, hi byte, err error) {
	lo, hi = h.cfg.MinVersion, h.cfg.MaxVersion
	if lo == 0 {
		lo = ProtocolMinVersion
	}
	if hi == 0 {
		hi = ProtocolMaxVersion
	}
	if lo < ProtocolMinVersion || hi > ProtocolMaxVersion || lo > hi {
		return 0, 0, fmt.Errorf("mesh: protocol version range [%d,%d] is not within [%d,%d]",
			lo, hi, ProtocolMinVersion, ProtocolMaxVersion)
	}
	return lo, hi, nil
}

// readHeader reads the remote's header and returns the version to use.
func (h *handshake) readHeader(ourMin, ourMax byte) (byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(h.br, hdr[:]); err != nil {
		return 0, fmt.Errorf("mesh: failed to receive remote protocol header: %w", err)
	}
	if string(hdr[:len(Protocol)]) != Protocol {
		// ErrBadHeader's text continues as weave's message does.
		return 0, fmt.Errorf("%w: %v", ErrBadHeader, hdr[:len(Protocol)])
	}
	theirMin, theirMax := hdr[len(Protocol)], hdr[len(Protocol)+1]
	version := min(ourMax, theirMax)
	if max(ourMin, theirMin) > version {
		return 0, fmt.Errorf("%w: remote version range [%d,%d] is incompatible with ours [%d,%d]",
			ErrVersionMismatch, theirMin, theirMax, ourMin, ourMax)
	}
	return version, nil
}

// appendIntro appends what we send right after the header for the given
// version. Version 1: our features map. Version 2: our encryption flag, then
// our public key when encrypted, or else our features frame (in clear it
// does not depend on anything the remote sends).
func (h *handshake) appendIntro(dst []byte, version byte) ([]byte, error) {
	if version == 1 {
		return encodeFeatures(dst, h.v1Features()), nil
	}
	if h.pub != nil {
		dst = append(dst, 1)
		return append(dst, h.pub[:]...), nil
	}
	dst = append(dst, 0)
	h.v2Writer = newFrameWriter(2, nil, h.cfg.Outbound, h.maxFrame)
	return h.appendFeaturesFrame(dst)
}

// appendFeaturesFrame appends our version 2 features frame, sealed when
// h.v2Writer has a key.
func (h *handshake) appendFeaturesFrame(dst []byte) ([]byte, error) {
	dst, err := h.v2Writer.appendFrame(dst, encodeFeatures(nil, h.cfg.Features))
	if err != nil {
		return nil, fmt.Errorf("mesh: sending our features: %w", err)
	}
	return dst, nil
}

// v1Features returns the features a version 1 handshake sends.
func (h *handshake) v1Features() map[string]string {
	m := make(map[string]string, len(v1FeatureKeys)+1)
	for _, k := range v1FeatureKeys {
		if v, ok := h.cfg.Features[k]; ok {
			m[k] = v
		}
	}
	if h.pub != nil {
		m[featurePublicKey] = hex.EncodeToString(h.pub[:])
	}
	return m
}

// finishV2 completes a version 2 handshake once our flag (and, in clear,
// our features) is on its way.
func (h *handshake) finishV2() (*handshakeResult, error) {
	flag, err := h.br.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("mesh: failed to receive remote encryption flag: %w", noEOF(err))
	}
	var key *[32]byte
	switch flag {
	case 0:
		if h.pub != nil {
			return nil, fmt.Errorf("%w: %s", ErrEncryptionMismatch, errTextWantCrypto)
		}
	case 1:
		// Like weave, fail on the flag alone, before the key arrives.
		if h.pub == nil {
			return nil, fmt.Errorf("%w: %s", ErrEncryptionMismatch, errTextWantNoCrypto)
		}
		var remotePub [32]byte
		if _, err := io.ReadFull(h.br, remotePub[:]); err != nil {
			return nil, fmt.Errorf("mesh: failed to receive remote public key: %w", noEOF(err))
		}
		key = deriveSessionKey(&remotePub, h.priv, h.cfg.Password)
		h.v2Writer = newFrameWriter(2, key, h.cfg.Outbound, h.maxFrame)
		out, err := h.appendFeaturesFrame(nil)
		if err != nil {
			return nil, err
		}
		if err := h.w.send(out); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: Bad encryption flag %d", ErrBadEncryptionFlag, flag)
	}

	// The features frame is read before the remote has shown it knows the
	// password (it is the first sealed frame): it may be no larger than
	// the largest features map.
	reader := newFrameReader(h.br, 2, key, !h.cfg.Outbound, min(h.maxFrame, maxFeaturesFrame))
	body, err := reader.readFrame()
	if err != nil {
		if errors.Is(err, ErrDecrypt) {
			return nil, fmt.Errorf("%w: the remote's features do not open with our session key; the two peers most likely have different passwords", ErrDecrypt)
		}
		return nil, featuresError(err)
	}
	features, err := decodeFeatures(body)
	if err != nil {
		return nil, featuresError(err)
	}
	reader.maxFrame = h.maxFrame
	return &handshakeResult{
		Version:   2,
		Features:  features,
		Encrypted: key != nil,
		reader:    reader,
		writer:    h.v2Writer,
	}, nil
}

// finishV1 completes a version 1 handshake once our features are on their
// way.
func (h *handshake) finishV1() (*handshakeResult, error) {
	remote, err := readFeaturesV1(h.br)
	if err != nil {
		return nil, featuresError(err)
	}
	remoteKey, hasKey := remote[featurePublicKey]
	var key *[32]byte
	switch {
	case h.pub == nil && hasKey:
		return nil, fmt.Errorf("%w: %s", ErrEncryptionMismatch, errTextWantNoCrypto)
	case h.pub != nil && !hasKey:
		return nil, fmt.Errorf("%w: %s", ErrEncryptionMismatch, errTextWantCrypto)
	case hasKey:
		var remotePub [32]byte
		if len(remoteKey) != hex.EncodedLen(len(remotePub)) {
			return nil, fmt.Errorf("%w: PublicKey has %d hex digits, want %d", ErrBadFeatures, len(remoteKey), 2*len(remotePub))
		}
		if _, err := hex.Decode(remotePub[:], []byte(remoteKey)); err != nil {
			return nil, fmt.Errorf("%w: PublicKey: %w", ErrBadFeatures, err)
		}
		key = deriveSessionKey(&remotePub, h.priv, h.cfg.Password)
	}
	// Like weave, keep only the features version 1 defines.
	features := make(map[string]string, len(v1FeatureKeys))
	for _, k := range v1FeatureKeys {
		if v, ok := remote[k]; ok {
			features[k] = v
		}
	}
	return &handshakeResult{
		Version:   1,
		Features:  features,
		Encrypted: key != nil,
		reader:    newFrameReader(h.br, 1, key, !h.cfg.Outbound, h.maxFrame),
		writer:    newFrameWriter(1, key, h.cfg.Outbound, h.maxFrame),
	}, nil
}

// featuresError describes a failure to receive the remote's features.
// Errors about the data itself already say what is wrong and are returned
// as they are; stream errors get context.
func featuresError(err error) error {
	if errors.Is(err, ErrBadFeatures) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameTooLarge) {
		return err
	}
	return fmt.Errorf("mesh: failed to receive remote features: %w", noEOF(err))
}
