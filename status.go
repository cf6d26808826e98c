package mesh

import (
	"cmp"
	"fmt"
	"slices"
)

// Status is a snapshot of a router's state, for display or JSON encoding.
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
	BroadcastRoutes    []BroadcastRouteStatus
	Connections        []LocalConnectionStatus
	// TerminationCount counts the established connections that ended.
	TerminationCount   int
	Targets            []string
	OverlayDiagnostics interface{}
	TrustedSubnets     []string
}

// PeerStatus describes a peer as the topology knows it.
type PeerStatus struct {
	Name        string
	NickName    string
	UID         PeerUID
	ShortID     PeerShortID
	Version     uint64
	Connections []ConnectionStatus
}

// ConnectionStatus describes one connection a peer reports.
type ConnectionStatus struct {
	Name        string
	NickName    string
	Address     string
	Outbound    bool
	Established bool
}

// UnicastRouteStatus is the next hop towards a destination.
type UnicastRouteStatus struct {
	Dest, Via string
}

// BroadcastRouteStatus lists the neighbours a broadcast from Source is
// passed on to.
type BroadcastRouteStatus struct {
	Source string
	Via    []string
}

// LocalConnectionStatus describes one of our connections, established or
// being made.
type LocalConnectionStatus struct {
	Address  string
	Outbound bool
	State    string
	Info     string
	Attrs    map[string]interface{}
}

// NewStatus takes a snapshot of the router's state.
func NewStatus(router *Router) *Status {
	s := &Status{
		Protocol:           Protocol,
		ProtocolMinVersion: int(router.ProtocolMinVersion),
		ProtocolMaxVersion: ProtocolMaxVersion,
		Encryption:         router.Password != nil,
		PeerDiscovery:      router.PeerDiscovery,
		Name:               router.Ourself.Name.String(),
		NickName:           router.Ourself.NickName,
		Port:               router.Port,
		Targets:            router.ConnectionMaker.Targets(false),
		OverlayDiagnostics: router.Overlay.Diagnostics(),
		TerminationCount:   int(router.terminations.Load()),
	}
	if p := router.listenPort(); p > 0 {
		s.Port = p
	}
	for _, n := range router.TrustedSubnets {
		s.TrustedSubnets = append(s.TrustedSubnets, n.String())
	}
	nick := make(map[PeerName]string)
	var peers []*Peer
	router.Peers.ForEach(func(p *Peer) {
		nick[p.Name] = p.NickName
		peers = append(peers, p)
	})
	for _, p := range peers {
		ps := PeerStatus{Name: p.Name.String(), NickName: p.NickName, UID: p.UID, ShortID: p.ShortID, Version: p.Version}
		for _, c := range p.conns {
			ps.Connections = append(ps.Connections, ConnectionStatus{
				Name: c.Name.String(), NickName: nick[c.Name], Address: c.RemoteTCPAddr,
				Outbound: c.Outbound, Established: c.Established,
			})
		}
		s.Peers = append(s.Peers, ps)
		if p.Name == router.Ourself.Name {
			continue
		}
		if hops := router.Routes.Broadcast(p.Name); len(hops) > 0 {
			br := BroadcastRouteStatus{Source: p.Name.String()}
			for _, h := range hops {
				br.Via = append(br.Via, h.String())
			}
			s.BroadcastRoutes = append(s.BroadcastRoutes, br)
		}
	}
	for dst, via := range router.Routes.unicastTable(false) {
		s.UnicastRoutes = append(s.UnicastRoutes, UnicastRouteStatus{Dest: dst.String(), Via: via.String()})
	}
	slices.SortFunc(s.UnicastRoutes, func(a, b UnicastRouteStatus) int { return cmp.Compare(a.Dest, b.Dest) })
	router.mu.RLock()
	registered := make(map[*LocalConnection]bool, len(router.conns))
	for _, c := range router.conns {
		registered[c] = true
	}
	for c := range router.pending {
		// Fields set by the handshake are read only once the connection is
		// registered: until then its goroutine may still be writing them.
		state, info := "pending", "handshake in progress"
		if registered[c] {
			state = "established"
			if !c.established.Load() {
				state = "connected"
			}
			info = fmt.Sprintf("%-6v %s(%s) protocol v%d encrypted=%v", c.remoteName, c.remoteName, c.remoteNick, c.version, c.encrypted)
		}
		var attrs map[string]interface{}
		if registered[c] && c.overlayConn != nil {
			attrs = c.overlayConn.Attrs()
		}
		s.Connections = append(s.Connections, LocalConnectionStatus{
			Address: c.conn.RemoteAddr().String(), Outbound: c.outbound, State: state, Info: info, Attrs: attrs,
		})
	}
	router.mu.RUnlock()
	for _, t := range router.ConnectionMaker.Status() {
		if t.State == "waiting" || t.State == "failed" {
			info := "retry at " + t.TryAfter.Format("15:04:05.000")
			if t.LastError != "" {
				info = t.LastError + ", " + info
			}
			if t.State == "failed" {
				info = t.LastError + ", not retrying"
			}
			s.Connections = append(s.Connections, LocalConnectionStatus{Address: t.Address, Outbound: true, State: t.State, Info: info})
		}
	}
	slices.SortFunc(s.Connections, func(a, b LocalConnectionStatus) int { return cmp.Compare(a.Address, b.Address) })
	return s
}
