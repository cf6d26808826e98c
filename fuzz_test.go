package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/nacl/box"
)

// Fuzz targets for the decoders that the older targets (FuzzFrameReader,
// FuzzHandshake, FuzzDecodeFeatures, FuzzDecodeTopology,
// FuzzParseGossipMessage, FuzzReadGobMessage) do not reach directly. Each
// checks its result against an independent description of what must come
// out, not only that nothing panics. FuzzDispatch, which drives a running
// router, is in fuzz_dispatch_test.go.

// FuzzReadHeader reads arbitrary bytes as the remote's protocol header.
func FuzzReadHeader(f *testing.F) {
	v := loadVectors(f)
	for _, s := range v.Scenarios {
		for _, sender := range []string{"weave", "probe"} {
			if b := s.stream(f, sender, 0); len(b) >= headerLen {
				f.Add(byte(0), b[:headerLen+1])
			}
		}
	}
	f.Add(byte(1), []byte("weave\x03\x03"))
	f.Add(byte(2), []byte("weave\x00\xff"))
	f.Add(byte(0), []byte("WEAVE\x01\x02"))
	f.Fuzz(func(t *testing.T, ranges byte, data []byte) {
		// Our range is one of [1,2], [2,2] and [1,1].
		ourMin, ourMax := byte(1), byte(2)
		switch ranges % 3 {
		case 1:
			ourMin = 2
		case 2:
			ourMax = 1
		}
		br := bufio.NewReader(bytes.NewReader(data))
		h := &handshake{br: br}
		version, err := h.readHeader(ourMin, ourMax)
		switch {
		case len(data) < headerLen:
			if err == nil || errors.Is(err, ErrBadHeader) || errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("%d bytes: %v", len(data), err)
			}
			return
		case string(data[:len(Protocol)]) != Protocol:
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("header %q: %v", data[:headerLen], err)
			}
			return
		}
		theirMin, theirMax := data[len(Protocol)], data[len(Protocol)+1]
		want := min(ourMax, theirMax)
		if max(ourMin, theirMin) > want {
			if !errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("ours [%d,%d] theirs [%d,%d]: %v", ourMin, ourMax, theirMin, theirMax, err)
			}
			return
		}
		if err != nil || version != want || version < ProtocolMinVersion || version > ProtocolMaxVersion {
			t.Fatalf("ours [%d,%d] theirs [%d,%d]: version %d, %v", ourMin, ourMax, theirMin, theirMax, version, err)
		}
		// Exactly the header was consumed.
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, data[headerLen:]) {
			t.Fatal("readHeader consumed more than the header")
		}
	})
}

// Presence bits of the keys in FuzzParseFeatures.
const (
	fuzzFeatFlavour = 1 << iota
	fuzzFeatName
	fuzzFeatNick
	fuzzFeatUID
	fuzzFeatConnID
	fuzzFeatShortID
	fuzzFeatTrusted
	fuzzFeatPublicKey
)

// FuzzParseFeatures validates features maps built from arbitrary values,
// as a peer would send them in either version.
func FuzzParseFeatures(f *testing.F) {
	add := func(m map[string]string) {
		present := uint16(0)
		for i, k := range []string{featurePeerNameFlavour, featureName, featureNickName, featureUID, featureConnID, featureShortID, featureTrusted, featurePublicKey} {
			if _, ok := m[k]; ok {
				present |= 1 << i
			}
		}
		f.Add(present, m[featurePeerNameFlavour], m[featureName], m[featureNickName], m[featureUID],
			m[featureConnID], m[featureShortID], m[featureTrusted], m[featurePublicKey])
	}
	for _, w := range vectorFeatures(f) {
		if m, err := decodeFeatures(w.stream); err == nil {
			add(m)
		}
	}
	add(testPeerFeatures(7))
	m := testPeerFeatures(8)
	m[featureUID] = "0"
	add(m)
	m[featureShortID] = "4096"
	add(m)

	f.Fuzz(func(t *testing.T, present uint16, flavour, name, nick, uid, connID, shortID, trusted, publicKey string) {
		m := make(map[string]string)
		for i, kv := range [][2]string{
			{featurePeerNameFlavour, flavour}, {featureName, name}, {featureNickName, nick}, {featureUID, uid},
			{featureConnID, connID}, {featureShortID, shortID}, {featureTrusted, trusted}, {featurePublicKey, publicKey},
		} {
			if present&(1<<i) != 0 {
				m[kv[0]] = kv[1]
			}
		}
		// The map travels as a gob stream that the decoder bounds.
		fits := true
		for k, v := range m {
			fits = fits && len(k) <= maxFeatureLen && len(v) <= maxFeatureLen
		}
		if fits {
			checkFeaturesRoundTrip(t, m)
		} else if _, err := decodeFeatures(encodeFeatures(nil, m)); !errors.Is(err, ErrBadFeatures) {
			t.Fatalf("over-long feature decoded: %v", err)
		}

		pf, err := parseFeatures(m)
		if err != nil {
			if !errors.Is(err, ErrBadFeatures) {
				t.Fatalf("error does not wrap ErrBadFeatures: %v", err)
			}
			return
		}
		// What was accepted is within the limits.
		const required = fuzzFeatFlavour | fuzzFeatName | fuzzFeatNick | fuzzFeatUID | fuzzFeatConnID
		if present&required != required || flavour != PeerNameFlavour {
			t.Fatalf("accepted without the required features: %v", m)
		}
		if len(pf.NickName) > maxNickNameLen || pf.UID == 0 || pf.Name > maxPeerName || pf.ShortID >= 1<<peerShortIDBits {
			t.Fatalf("limits not enforced: %+v", pf)
		}
		if pf.HasShortID != (present&fuzzFeatShortID != 0) {
			t.Fatalf("HasShortID %v with presence %b", pf.HasShortID, present)
		}
		if pf.PublicKey != nil && len(pf.PublicKey) != 32 {
			t.Fatalf("public key of %d bytes", len(pf.PublicKey))
		}
		if strconv.FormatUint(uint64(pf.UID), 10) != uid && uid[0] != '0' && uid[0] != '+' {
			t.Fatalf("UID %q parsed as %d", uid, pf.UID)
		}
		// What we would send for the same peer parses back to the same.
		back, err := parseFeatures(pf.featuresMap(nil))
		pf.PublicKey = nil
		if err != nil || !equalFeatures(pf, back) {
			t.Fatalf("features %+v -> %+v, %v", pf, back, err)
		}
	})
}

// FuzzReadFeaturesV1 reads the features that open a version 1 stream,
// from a reader that hands out one byte at a time.
func FuzzReadFeaturesV1(f *testing.F) {
	for _, w := range vectorFeatures(f) {
		f.Add(w.stream)
		f.Add(append(bytes.Clone(w.stream), "\x04\x0a\x00\x01\x00"...))
	}
	f.Add(encodeFeatures(nil, testPeerFeatures(3)))
	f.Add([]byte("\x0d\x7f\x04\x01\x02\xff\x80\x00\x01\x0c\x01\x0c\x00\x00\xfe\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		br := bufio.NewReaderSize(iotest.OneByteReader(src), 16)
		m, err := readFeaturesV1(br)
		consumed := len(data) - src.Len() - br.Buffered()
		full, fullErr := decodeFeatures(data)
		if err != nil {
			if !errors.Is(err, ErrBadFeatures) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error class: %v", err)
			}
			if fullErr == nil {
				t.Fatalf("decodeFeatures accepts what readFeaturesV1 refuses (%v): %v", err, full)
			}
			return
		}
		if len(m) > maxFeatures {
			t.Fatalf("%d features", len(m))
		}
		// The two messages read are a features stream of their own.
		again, err := decodeFeatures(data[:consumed])
		if err != nil || !maps.Equal(m, again) {
			t.Fatalf("the %d bytes read decode as %v, %v; read %v", consumed, again, err, m)
		}
		if fullErr == nil && (consumed != len(data) || !maps.Equal(m, full)) {
			t.Fatalf("whole stream: %v, read %v after %d of %d bytes", full, m, consumed, len(data))
		}
	})
}

// digestTestTopology returns a small topology with a placeholder, for the
// digest fuzzer.
func digestTestTopology() *topology {
	t := newTopology(&Peer{Name: testPeerName(1), UID: 11, Version: 5}, topologyLimits{})
	t.apply([]peerUpdate{
		{peerSummary: peerSummary{Name: testPeerName(2), UID: 22, Version: 3},
			Connections: []connectionSummary{{Name: testPeerName(9)}}},
		{peerSummary: peerSummary{Name: testPeerName(3), UID: 33, Version: 1<<64 - 1}},
		{peerSummary: peerSummary{Name: testPeerName(4), UID: 1<<64 - 1, Version: 0}},
	})
	return t
}

// FuzzParseDigest decodes digest records and finds those to pull.
func FuzzParseDigest(f *testing.F) {
	t0 := digestTestTopology()
	f.Add(appendDigest(nil, t0.digest()))
	f.Add(appendDigest(nil, []digestEntry{{Name: testPeerName(2), UID: 22, Version: 4}, {Name: testPeerName(9), UID: 1}}))
	f.Add(appendDigest(nil, []digestEntry{{Name: testPeerName(3), UID: 34, Version: 1<<64 - 1}})[:digestRecordSize-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseDigest(data)
		valid := len(data)%digestRecordSize == 0 && len(data)/digestRecordSize <= maxDigestRecords
		if valid != (err == nil) {
			t.Fatalf("%d bytes: %v", len(data), err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(entries) != len(data)/digestRecordSize {
			t.Fatalf("%d records from %d bytes", len(entries), len(data))
		}
		if again := appendDigest(nil, entries); !bytes.Equal(again, data) {
			t.Fatal("digest does not encode back to the same bytes")
		}
		// We pull exactly the records, in order, of peers other than us
		// whose entries here are missing, placeholders or older.
		topo := digestTestTopology()
		var want []PeerName
		for _, e := range entries {
			if e.Name > maxPeerName {
				t.Fatalf("name %x wider than %d bytes", uint64(e.Name), NameSize)
			}
			p := topo.get(e.Name)
			older := p == nil || p.isPlaceholder() || e.Version > p.Version || (e.Version == p.Version && e.UID > p.UID)
			if e.Name != topo.ourName && e.UID != 0 && older {
				want = append(want, e.Name)
			}
		}
		var got []PeerName
		for _, c := range topo.wanted(entries) {
			got = append(got, c.announced.Name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pulled %v, want %v", got, want)
		}
	})
}

// FuzzApplyTopology decodes a topology message and merges it into a small
// topology with tight limits.
func FuzzApplyTopology(f *testing.F) {
	for _, w := range vectorTopologies(f) {
		f.Add(w.payload)
	}
	f.Add(gobTopology(f, testTopology(3, 2), true))
	f.Add(appendTopology(nil, testTopology(20, 3)))
	us := peerUpdate{peerSummary: peerSummary{Name: testPeerName(1), UID: 7, Version: 9}}
	f.Add(appendTopology(nil, []peerUpdate{us, {peerSummary: peerSummary{Name: testPeerName(2)}}}))
	const maxPeers, maxConns = 16, 16
	lim := topologyLimits{MaxPeers: maxPeers, MaxConnections: maxConns}
	f.Fuzz(func(t *testing.T, data []byte) {
		updates, err := decodeTopology(data, lim)
		if err != nil {
			return
		}
		const ourUID = 42
		topo := newTopology(&Peer{Name: testPeerName(1), UID: ourUID, Version: 10, HasShortID: true}, lim)
		// apply takes the connection lists over: keep copies to check
		// against, and to merge again.
		cloneUpdates := func() []peerUpdate {
			out := slices.Clone(updates)
			for i := range out {
				out[i].Connections = slices.Clone(out[i].Connections)
			}
			return out
		}
		original := cloneUpdates()
		res := topo.apply(cloneUpdates())
		updates = original
		if topo.len() > maxPeers {
			t.Fatalf("%d peers with a limit of %d", topo.len(), maxPeers)
		}
		self := topo.ourself()
		if self.UID != ourUID || self.Version < 10 || len(self.conns) != 0 {
			t.Fatalf("our entry was replaced: %+v", self)
		}
		if res.ourVersionBumped {
			for _, u := range updates {
				if u.Name == self.Name && u.Version >= self.Version && u.Version != 1<<64-1 {
					t.Fatalf("our version %d is not above %d", self.Version, u.Version)
				}
			}
		}
		placeholders := 0
		topo.ascend(func(p *Peer) bool {
			if p.isPlaceholder() {
				placeholders++
			}
			return true
		})
		if placeholders != topo.placeholders {
			t.Fatalf("%d placeholders counted, %d in the table", topo.placeholders, placeholders)
		}
		byName := make(map[PeerName][]*peerUpdate)
		for i := range updates {
			byName[updates[i].Name] = append(byName[updates[i].Name], &updates[i])
		}
		topo.ascend(func(p *Peer) bool {
			if len(p.conns) > maxConns {
				t.Fatalf("peer %s with %d connections", p.Name, len(p.conns))
			}
			if p.Name == self.Name || p.isPlaceholder() {
				return true
			}
			// A real entry came from the update, whole (a connection
			// listed twice is kept once).
			found := false
			for _, u := range byName[p.Name] {
				names := make(map[PeerName]bool)
				for _, c := range u.Connections {
					names[c.Name] = true
				}
				found = found || (u.UID == p.UID && u.Version == p.Version && u.NickName == p.NickName && len(names) == len(p.conns))
			}
			if !found {
				t.Fatalf("entry %+v is in no update", p)
			}
			return true
		})
		// Merging the same update again changes nothing.
		if again := topo.apply(cloneUpdates()); len(again.changed) > 0 || again.ourVersionBumped || again.placeholders > 0 {
			t.Fatalf("second merge changed %v (bumped %v, %d placeholders)", again.changed, again.ourVersionBumped, again.placeholders)
		}
		// The merged table encodes, decodes, routes and collects.
		for _, msg := range encodeTopologyMessages(topo.updatesFor(nil, nil)) {
			if _, err := decodeTopology(msg, topologyLimits{}); err != nil {
				t.Fatalf("re-decoding the merged table: %v", err)
			}
		}
		routes := newRoutes(&Peers{topo: topo})
		routes.recalculate(topo)
		for _, p := range routes.PeerNames() {
			routes.BroadcastAll(p)
		}
		topo.gc(0, 0)
		topo.gc(1, 0)
		if topo.ourself() == nil {
			t.Fatal("we were collected")
		}
	})
}

// Mutation kinds of FuzzSealedFrames.
const (
	fuzzSealNone     = iota
	fuzzSealFlip     // xor one byte of the stream
	fuzzSealDup      // send one frame twice
	fuzzSealSwap     // swap two consecutive frames
	fuzzSealDrop     // leave one frame out
	fuzzSealRaw      // the input is the stream itself, never sealed by us
	fuzzSealTruncate // cut the stream inside a frame
	fuzzSealKinds
)

// splitBodies cuts data into frame bodies: each is introduced by one byte
// giving its length.
func splitBodies(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(int(data[0]), len(data)-1)
		out = append(out, data[1:1+n])
		data = data[1+n:]
	}
	return out
}

// fuzzSessionKey is a session key reached the way two peers reach it, from
// fixed key pairs.
var fuzzSessionKey = func() *[32]byte {
	_, privA, errA := box.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{1}, 32)))
	pubB, _, errB := box.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{2}, 32)))
	if errA != nil || errB != nil {
		panic("generating fixed key pairs")
	}
	return deriveSessionKey(pubB, privA, []byte("fuzz password"))
}()

// FuzzSealedFrames seals frames with a real session key, tampers with the
// stream (flips, duplicates, swaps, drops, truncates) and reads it back:
// every frame before the tampering comes out intact, nothing at or after it
// does, and reading allocates in proportion to what arrived, not to what
// the lengths announce. With mode fuzzSealRaw the input is read as it is:
// bytes never sealed with the key must never open.
func FuzzSealedFrames(f *testing.F) {
	v := loadVectors(f)
	var sample []byte
	for _, fr := range vectorFrames(f) {
		if len(fr.body) < 256 {
			sample = append(append(sample, byte(len(fr.body))), fr.body...)
		}
	}
	for kind := range byte(fuzzSealKinds) {
		for _, version := range []byte{0, 1} {
			f.Add(kind|version<<3, sample, uint16(100), byte(0x01))
			f.Add(kind|version<<3|1<<4, []byte("\x01\x00\x05\x04abcd\x00\x03xyz"), uint16(1), byte(0x80))
		}
	}
	// Captured sealed streams read as they are.
	for _, name := range fuzzFrameKeyScenarios {
		s := v.scenario(f, name)
		var stream []byte
		for _, vec := range s.frameVectors("weave") {
			stream = append(stream, vec.bytes(f)...)
		}
		f.Add(byte(fuzzSealRaw), stream, uint16(0), byte(0))
	}
	f.Add(byte(fuzzSealRaw), []byte("\x00\xa0\x00\x00"), uint16(0), byte(0))
	f.Add(byte(fuzzSealRaw|1<<3), []byte("\xf8\x00\x00\x00\x00\x00\xa0\x00\x00"), uint16(0), byte(0))

	f.Fuzz(func(t *testing.T, mode byte, data []byte, pos uint16, xor byte) {
		kind := int(mode&7) % fuzzSealKinds
		version := byte(2)
		if mode&(1<<3) != 0 {
			version = 1
		}
		senderOut := mode&(1<<4) != 0
		maxFrame := 0
		if mode&(1<<5) != 0 {
			maxFrame = 4096
		}
		key := fuzzSessionKey

		var stream []byte
		var bodies [][]byte
		var frames int // frames sealed and sent
		intact := 0    // frames that must come out
		if kind == fuzzSealRaw {
			stream = data
		} else {
			bodies = splitBodies(data)
			stream, frames, intact = sealTampered(t, newFrameWriter(version, key, senderOut, maxFrame), bodies, kind, pos, xor)
		}

		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		r := newFrameReader(bufio.NewReaderSize(bytes.NewReader(stream), 64), version, key, senderOut, maxFrame)
		var got [][]byte
		var err error
		for {
			var b []byte
			if b, err = r.readFrame(); err != nil {
				break
			}
			got = append(got, bytes.Clone(b))
		}
		runtime.ReadMemStats(&ms1)

		if kind == fuzzSealRaw {
			if len(got) > 0 {
				t.Fatalf("%d frames never sealed with the key opened", len(got))
			}
		} else {
			if len(got) < intact {
				t.Fatalf("%d of %d intact frames read, then %v", len(got), intact, err)
			}
			if len(got) > intact {
				t.Fatalf("frame %d was tampered with and still accepted", intact)
			}
			for i := range got {
				if !bytes.Equal(got[i], bodies[i]) {
					t.Fatalf("frame %d differs", i)
				}
			}
		}
		tampered := kind == fuzzSealFlip || kind == fuzzSealDup || kind == fuzzSealSwap
		switch {
		case errors.Is(err, io.EOF):
			if tampered && intact < frames {
				t.Fatalf("clean end of a stream with frame %d tampered with", intact)
			}
		case errors.Is(err, ErrDecrypt), errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrMalformed),
			errors.Is(err, io.ErrUnexpectedEOF):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		// Buffers grow with the bytes that arrive: a length announcing
		// megabytes with nothing behind it costs nothing.
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > uint64(4*len(stream)+512<<10) {
			t.Fatalf("reading %d bytes allocated %d", len(stream), alloc)
		}
	})
}

// sealTampered seals bodies with w, tampers with the result as kind says
// (pos picks the frame or byte, xor the bits flipped), and returns the
// stream, the number of frames in it and how many leading frames are
// intact (those a reader must accept; nothing after them may open).
func sealTampered(tb testing.TB, w *frameWriter, bodies [][]byte, kind int, pos uint16, xor byte) (stream []byte, frames, intact int) {
	var sealed [][]byte
	for _, b := range bodies {
		fr, err := w.appendFrame(nil, b)
		if err != nil {
			tb.Fatalf("sealing %d bytes: %v", len(b), err)
		}
		sealed = append(sealed, fr)
	}
	intact = len(sealed)
	if n := len(sealed); n > 0 {
		i := int(pos) % n
		switch kind {
		case fuzzSealDup:
			sealed = slices.Insert(sealed, i+1, sealed[i])
			intact = i + 1
		case fuzzSealSwap:
			if i+1 < n && !bytes.Equal(sealed[i], sealed[i+1]) {
				sealed[i], sealed[i+1] = sealed[i+1], sealed[i]
				intact = i
			}
		case fuzzSealDrop:
			sealed = slices.Delete(sealed, i, i+1)
			intact = i
		}
	}
	var ends []int // end of each frame in stream
	for _, fr := range sealed {
		stream = append(stream, fr...)
		ends = append(ends, len(stream))
	}
	if len(stream) > 0 {
		p := int(pos) % len(stream)
		switch kind {
		case fuzzSealFlip:
			if xor != 0 {
				stream[p] ^= xor
				intact = min(intact, frameAt(ends, p))
			}
		case fuzzSealTruncate:
			stream = stream[:p]
			intact = min(intact, frameAt(ends, p))
		}
	}
	return stream, len(sealed), intact
}

// frameAt returns the index of the frame that byte p of the stream is in.
func frameAt(ends []int, p int) int {
	i, _ := slices.BinarySearchFunc(ends, p, func(end, p int) int {
		if end <= p {
			return -1
		}
		return 1
	})
	return i
}

// TestFrameAt checks the helper of FuzzSealedFrames.
func TestFrameAt(t *testing.T) {
	ends := []int{4, 10, 11}
	for p, want := range []int{0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2} {
		require.Equal(t, want, frameAt(ends, p), "byte %d", p)
	}
	require.Equal(t, [][]byte{{}, []byte("ab"), []byte("c")}, splitBodies([]byte("\x00\x02ab\x05c")))
}
