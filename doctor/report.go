package doctor

import "net/netip"

// Report is everything doctor found and advises. Its JSON form is what
// `closeproxy doctor -json` prints; the field names are stable.
type Report struct {
	TimeWait        TimeWait         `json:"time_wait"`
	Settings        []Setting        `json:"settings"`
	Config          string           `json:"config,omitempty"` // the configuration file judged, if any
	Rate            float64          `json:"rate,omitempty"`   // expected new connections/s per listener
	Legs            []Leg            `json:"legs,omitempty"`
	Warnings        []Warning        `json:"warnings"`
	Recommendations []Recommendation `json:"recommendations"`
	Unread          []string         `json:"unread"` // figures that could not be read, and why
}

// TimeWait is this host's TIME-WAIT sockets, split by side.
type TimeWait struct {
	Error string `json:"error,omitempty"` // why the sockets could not be listed
	Total int    `json:"total"`
	// Accepting counts TIME-WAIT sockets whose local port is one a socket
	// listens on: this host accepted them, so no port is pinned.
	Accepting int `json:"accepting"`
	// Dialing counts the rest: this host dialed them, and each pins its
	// local port toward that destination for 60 s.
	Dialing      int         `json:"dialing"`
	ByListenPort []PortCount `json:"by_listen_port"`
	// Destinations is how many distinct remote ip:port the dialing side
	// holds TIME-WAIT toward; TopDestinations lists the busiest.
	Destinations    int           `json:"destinations"`
	TopDestinations []Destination `json:"top_destinations"`
	// FinWait2 counts orphaned FIN-WAIT-2 sockets the kernel keeps in its
	// TIME-WAIT table (a peer that never sent its FIN); they are not in Total.
	FinWait2 int `json:"fin_wait2"`
	// UsablePorts is the ephemeral range less reserved ports: how many
	// connections this host can hold open or in TIME-WAIT toward one
	// destination ip:port. 0 when unknown.
	UsablePorts int `json:"usable_ports"`
	// MaxBuckets is tcp_max_tw_buckets, 0 when unknown.
	MaxBuckets int `json:"max_tw_buckets"`
}

// PortCount is the accepting side's TIME-WAIT on one listening port.
type PortCount struct {
	Port  uint16 `json:"port"`
	Count int    `json:"count"`
}

// Destination is the dialing side's TIME-WAIT toward one remote ip:port.
type Destination struct {
	Addr  netip.AddrPort `json:"addr"`
	Count int            `json:"count"`
	// Share is Count over the usable ephemeral ports (0..1); 0 when the
	// range is unknown.
	Share float64 `json:"share"`
}

// Setting is one kernel setting or limit as read, and what it does.
type Setting struct {
	Name  string `json:"name"`            // e.g. net.ipv4.tcp_tw_reuse, RLIMIT_NOFILE
	Value string `json:"value,omitempty"` // as read; empty when unread
	Error string `json:"error,omitempty"` // why it could not be read
	Means string `json:"means"`           // what it really does, for this value
}

// Leg is one leg of the configuration and where its TIME-WAIT lands.
type Leg struct {
	Leg      string `json:"leg"`       // front | back
	Name     string `json:"name"`      // the listener's or backend's name
	TimeWait string `json:"time_wait"` // the target as spelled in the TOML
	Fallback string `json:"fallback"`
	// Protocol is the mode the leg's sessions run in: the backend's
	// protocol, tcp or http1 (for a front leg, its listener's backend's).
	Protocol string `json:"protocol,omitempty"`
	// Dialer is the side that dialed this leg: "client" (the load balancer)
	// on the front leg, "proxy" on the back leg. Its TIME-WAIT pins ports.
	Dialer      string `json:"dialer"`
	Destination string `json:"destination"` // the address the dialer connects to
	// PeerFirst and ProxyFirst name who holds TIME-WAIT (client, backend,
	// proxy, none, or auto when chosen live) when the leg ends that way
	// (ProxyFirst: the proxy withheld its FIN, if its policy does, and the
	// peer closed within peer_fin_grace); GraceOut, when the proxy withheld
	// its FIN and the peer stayed silent past the grace. In tcp mode a
	// front leg's grace never ends by a reset: a backend's FIN does not say
	// the client stopped reading.
	PeerFirst  string `json:"peer_first"`
	ProxyFirst string `json:"proxy_first"`
	GraceOut   string `json:"grace_out,omitempty"`
	// GraceOutClientReading is set on a tcp back leg when it differs from
	// GraceOut: who holds TIME-WAIT at the grace's end if the client had
	// not read the whole answer when it closed (a reset could cut what it
	// still reads, so the proxy sends a FIN: records say
	// other_side_reading). GraceOut assumes the client had.
	GraceOutClientReading string `json:"grace_out_client_reading,omitempty"`
	// Rate is the new connections/s expected on this leg; Pinned the ports
	// the dialer would hold in TIME-WAIT toward Destination (rate × PinnedFor)
	// if every connection ended the way that leaves TIME-WAIT on it; Budget
	// the dialer's usable ports (an assumed default for a load balancer).
	// PinnedFor is how long each of those ports stays pinned: 60 s, or 1 s
	// where connect() reuses a TIME-WAIT port toward Destination
	// (tcp_tw_reuse with timestamps).
	Rate      float64 `json:"rate"`
	Pinned    int     `json:"pinned_ports"`
	PinnedFor int     `json:"pinned_seconds,omitempty"`
	Budget    int     `json:"port_budget"`
	Note      string  `json:"note,omitempty"`
}

// Warning is one problem found, with what it concerns.
type Warning struct {
	Kind    string `json:"kind"`    // port_budget, destination_ports, tw_buckets, tw_reuse
	Subject string `json:"subject"` // e.g. backend "app", 10.0.0.2:8081, net.ipv4.tcp_max_tw_buckets
	Leg     string `json:"leg,omitempty"`
	Text    string `json:"text"`
}

// Recommendation is one concrete change, never applied by doctor.
type Recommendation struct {
	Kind string `json:"kind"` // config | sysctl | limit
	Line string `json:"line"` // the change itself
	Why  string `json:"why"`
}
