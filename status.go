package mesh

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Status is a snapshot of a router's state, for display or JSON encoding.
// The fields up to TrustedSubnets are those of weave mesh; the others were
// added since.
type Status struct {
	Protocol           string
	ProtocolMinVersion int
	ProtocolMaxVersion int
	Encryption         bool
	PeerDiscovery      bool
	Name               string
	NickName           string
	Port               int
	Peers              []PeerStatus
	UnicastRoutes      []UnicastRouteStatus
	// BroadcastRoutes lists, for each originator, the neighbours its
	// broadcasts are passed on to, when there are any (see
	// BroadcastRoutesPartial).
	BroadcastRoutes []BroadcastRouteStatus
	// Connections lists our connections, established or being made, and
	// the addresses being dialled or waiting to be dialled again.
	Connections []LocalConnectionStatus
	// TerminationCount counts the established connections that ended.
	TerminationCount int
	// Targets lists the addresses given to InitiateConnections.
	Targets            []string
	OverlayDiagnostics interface{}
	TrustedSubnets     []string

	// UID identifies this incarnation of the router.
	UID PeerUID
	// UIDString is UID in decimal, as a JSON string: readers that hold
	// JSON numbers as doubles, such as JavaScript, lose the precision of
	// numbers beyond 2^53, which most UIDs are.
	UIDString string
	// ListenAddr is the address the router listens on.
	ListenAddr string `json:",omitempty"`
	// ConnLimit is the number of connections the router dials at most.
	ConnLimit int
	// BroadcastRoutesPartial is set when the mesh is too large for every
	// broadcast tree to be computed for a snapshot: BroadcastRoutes then
	// lists only the trees already in use, those of the originators whose
	// broadcasts this router sent or passed on since the routes last
	// changed.
	BroadcastRoutesPartial bool `json:",omitempty"`
	// TargetStates describes every address the connection maker works on,
	// those given to InitiateConnections and those found by discovery,
	// with their retry state.
	TargetStates []TargetStatus
}

// PeerStatus describes a peer as the topology knows it. The fields up to
// Connections are those of weave mesh.
type PeerStatus struct {
	Name        string
	NickName    string
	UID         PeerUID
	ShortID     PeerShortID
	Version     uint64
	Connections []ConnectionStatus
	// UIDString is UID in decimal, as a JSON string (see
	// Status.UIDString).
	UIDString string
}

// ConnectionStatus describes one connection a peer reports.
type ConnectionStatus struct {
	Name        string
	NickName    string
	Address     string
	Outbound    bool
	Established bool
}

// UnicastRouteStatus is the next hop towards a destination, over
// connections that both ends report established.
type UnicastRouteStatus struct {
	Dest, Via string
}

// BroadcastRouteStatus lists the neighbours a broadcast from Source is
// passed on to.
type BroadcastRouteStatus struct {
	Source string
	Via    []string
}

// Connection states, as LocalConnectionStatus.State reports them.
const (
	// ConnectionConnecting: a dial is under way.
	ConnectionConnecting = "connecting"
	// ConnectionPending: connected, the handshake is under way.
	ConnectionPending = "pending"
	// ConnectionConnected: the handshake is over but the overlay has not
	// established the connection yet.
	ConnectionConnected = "connected"
	// ConnectionEstablished: the connection is up.
	ConnectionEstablished = "established"
	// ConnectionWaiting: the last attempt at an address failed (see
	// LastError); it is dialled again at TryAfter.
	ConnectionWaiting = "waiting"
	// ConnectionFailed: an address that led to ourselves or to a peer
	// with our name; it is not dialled again.
	ConnectionFailed = "failed"
)

// LocalConnectionStatus describes one of our connections, established or
// being made, or an address waiting to be dialled again.
type LocalConnectionStatus struct {
	Address  string
	Outbound bool
	// State is one of the Connection* constants: ConnectionEstablished,
	// ConnectionConnected, ConnectionPending, ConnectionConnecting,
	// ConnectionWaiting or ConnectionFailed.
	State string
	// Info says the same for people: the remote peer and protocol, or the
	// error and when the next attempt is due.
	Info  string
	Attrs map[string]interface{}

	// Name and NickName identify the peer at the other end, once the
	// handshake has told.
	Name     string `json:",omitempty"`
	NickName string `json:",omitempty"`
	// ProtocolVersion is the protocol version in use, once the handshake
	// is over.
	ProtocolVersion int `json:",omitempty"`
	// Encrypted reports whether the connection is encrypted.
	Encrypted bool `json:",omitempty"`
	// LastError is why the last attempt at this address failed.
	LastError string `json:",omitempty"`
	// Attempts counts the dials of this address since it last connected.
	Attempts int `json:",omitempty"`
	// TryAfter is when a waiting address is dialled again.
	TryAfter time.Time `json:",omitzero"`
}

// statusBroadcastBudget bounds the work NewStatus spends on broadcast
// trees: computing every one costs peers·(peers+connections) steps.
const statusBroadcastBudget = 1 << 20

// NewStatus takes a snapshot of the router's state. It holds each of the
// router's locks only to copy references, so it may be called often, and
// in a large mesh it costs O(peers + connections): see
// Status.BroadcastRoutesPartial.
func NewStatus(router *Router) *Status {
	s := &Status{
		Protocol:           Protocol,
		ProtocolMinVersion: int(router.ProtocolMinVersion),
		ProtocolMaxVersion: ProtocolMaxVersion,
		Encryption:         router.Password != nil,
		PeerDiscovery:      router.PeerDiscovery,
		Name:               router.Ourself.Name.String(),
		NickName:           router.Ourself.NickName,
		UID:                router.Ourself.UID,
		UIDString:          strconv.FormatUint(uint64(router.Ourself.UID), 10),
		Port:               router.Port,
		ConnLimit:          router.ConnLimit,
		OverlayDiagnostics: router.Overlay.Diagnostics(),
		TerminationCount:   int(router.terminations.Load()),
	}
	if a := router.ListenAddr(); a != nil {
		s.ListenAddr = a.String()
	}
	if p := router.listenPort(); p > 0 {
		s.Port = p
	}
	for _, n := range router.TrustedSubnets {
		s.TrustedSubnets = append(s.TrustedSubnets, n.String())
	}
	s.Peers = peerStatuses(router)
	s.UnicastRoutes = unicastRouteStatuses(router)
	s.BroadcastRoutes, s.BroadcastRoutesPartial = broadcastRouteStatuses(router)
	s.TargetStates = router.ConnectionMaker.Status()
	for _, t := range s.TargetStates {
		if t.Direct {
			s.Targets = append(s.Targets, t.Address)
		}
	}
	s.Connections = localConnectionStatuses(router, s.TargetStates)
	return s
}

// peerStatuses describes every known peer, in name order. Peers are
// immutable, so they are described after the lock is released.
func peerStatuses(router *Router) []PeerStatus {
	var peers []*Peer
	router.Peers.ForEach(func(p *Peer) { peers = append(peers, p) })
	nick := make(map[PeerName]string, len(peers))
	for _, p := range peers {
		nick[p.Name] = p.NickName
	}
	out := make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		ps := PeerStatus{Name: p.Name.String(), NickName: p.NickName, UID: p.UID, ShortID: p.ShortID, Version: p.Version,
			UIDString: strconv.FormatUint(uint64(p.UID), 10)}
		for _, c := range p.conns {
			ps.Connections = append(ps.Connections, ConnectionStatus{
				Name: c.Name.String(), NickName: nick[c.Name], Address: c.RemoteTCPAddr,
				Outbound: c.Outbound, Established: c.Established,
			})
		}
		out = append(out, ps)
	}
	return out
}

// unicastRouteStatuses lists the unicast routes, sorted by destination.
func unicastRouteStatuses(router *Router) []UnicastRouteStatus {
	var out []UnicastRouteStatus
	for dst, via := range router.Routes.unicastTable(false) {
		out = append(out, UnicastRouteStatus{Dest: dst.String(), Via: via.String()})
	}
	// Names sort as their fixed-width strings do.
	slices.SortFunc(out, func(a, b UnicastRouteStatus) int { return cmp.Compare(a.Dest, b.Dest) })
	return out
}

// broadcastRouteStatuses lists the broadcast trees the router relays
// along (over every reported connection), sorted by originator: all of
// them when that costs at most statusBroadcastBudget, else those already
// computed, and then partial is true.
func broadcastRouteStatuses(router *Router) (out []BroadcastRouteStatus, partial bool) {
	hops, partial := router.Routes.broadcastTrees(statusBroadcastBudget)
	for src, via := range hops {
		if src == router.Ourself.Name || len(via) == 0 {
			continue
		}
		br := BroadcastRouteStatus{Source: src.String(), Via: make([]string, len(via))}
		for j, h := range via {
			br.Via[j] = h.String()
		}
		out = append(out, br)
	}
	slices.SortFunc(out, func(a, b BroadcastRouteStatus) int { return cmp.Compare(a.Source, b.Source) })
	return out, partial
}

// localConnectionStatuses describes our connections, then the targets
// not connected: being dialled, waiting or given up.
func localConnectionStatuses(router *Router, targets []TargetStatus) []LocalConnectionStatus {
	type entry struct {
		c          *LocalConnection
		registered bool
	}
	// Under the lock, only references are copied. Fields set by the
	// handshake are read only for registered connections: registration,
	// under the lock, happened after they were written.
	router.mu.RLock()
	registered := make(map[*LocalConnection]bool, len(router.conns))
	for _, c := range router.conns {
		registered[c] = true
	}
	entries := make([]entry, 0, len(router.pending))
	handshaking := make(map[string]bool) // outbound, by dialled address
	for c := range router.pending {
		entries = append(entries, entry{c: c, registered: registered[c]})
		if c.outbound {
			handshaking[c.remoteTCPAddr] = true
		}
	}
	router.mu.RUnlock()

	out := make([]LocalConnectionStatus, 0, len(entries)+len(targets))
	for _, e := range entries {
		c := e.c
		ls := LocalConnectionStatus{Address: c.conn.RemoteAddr().String(), Outbound: c.outbound, State: ConnectionPending, Info: "handshake in progress"}
		if e.registered {
			ls.State = ConnectionEstablished
			if !c.established.Load() {
				ls.State = ConnectionConnected
			}
			ls.Name, ls.NickName = c.remoteName.String(), c.remoteNick
			ls.ProtocolVersion, ls.Encrypted = int(c.version), c.encrypted
			ls.Info = fmt.Sprintf("%-6v %s(%s) protocol v%d encrypted=%v", c.remoteName, c.remoteName, c.remoteNick, c.version, c.encrypted)
			if c.overlayConn != nil {
				ls.Attrs = c.overlayConn.Attrs()
			}
		}
		out = append(out, ls)
	}
	for _, t := range targets {
		ls := LocalConnectionStatus{Address: t.Address, Outbound: true, LastError: t.LastError, Attempts: t.Attempts, TryAfter: t.TryAfter}
		switch t.State {
		case TargetAttempting:
			if handshaking[t.Address] {
				continue // listed above, as pending
			}
			ls.State, ls.Info = ConnectionConnecting, "dialling"
			if t.LastError != "" {
				ls.Info = "dialling again after " + t.LastError
			}
		case TargetWaiting:
			ls.State, ls.Info = ConnectionWaiting, "retry at "+t.TryAfter.Format("15:04:05.000")
			if t.LastError != "" {
				ls.Info = t.LastError + ", " + ls.Info
			}
		case TargetFailed:
			ls.State, ls.Info = ConnectionFailed, t.LastError+", not retrying"
		default: // connected: listed above
			continue
		}
		out = append(out, ls)
	}
	slices.SortStableFunc(out, func(a, b LocalConnectionStatus) int { return cmp.Compare(a.Address, b.Address) })
	return out
}
