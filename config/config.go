package config

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// Config is a validated, typed configuration with every default filled in.
// Each field holds one key of the schema; what the key means, its default
// and its checks are written once, in keys.go (rendered to
// docs/configuration.md).
type Config struct {
	// ShutdownTimeout bounds how long SIGTERM waits for live sessions before
	// ending the rest by policy.
	ShutdownTimeout time.Duration
	Relay           string // goroutines | loop: how tcp-mode sessions wait for their sockets
	Log             Log
	Admin           Admin
	Auto            Auto
	Listeners       []Listener
	Backends        []Backend
}

// Log configures logging and teardown records.
type Log struct {
	Level    string // debug | info | warn | error
	Teardown string // all | errors | sample:<rate>
	// Records is where teardown records go, whatever Level says: "stderr",
	// "stdout" or a file path (reopened on SIGUSR1).
	Records string
	// RecordsFlush, when above 0, is how long records may wait in a
	// buffer to be written together; 0 writes each as its session ends.
	RecordsFlush time.Duration
}

// Admin configures the admin HTTP listener: /metrics, /healthz, /readyz.
type Admin struct {
	Listen string // host:port; "off" turns the admin listener off
	// KernelSample is how often the kernel's TIME-WAIT figures are read
	// for the metrics.
	KernelSample time.Duration
}

// Auto holds the thresholds of time_wait = "auto" (see policy.Watch).
type Auto struct {
	TWBudget       int     // host TIME-WAIT sockets before closes switch to nowhere; 0: half of tcp_max_tw_buckets
	TWResume       float64 // share of the budget below which they switch back
	PortShare      float64 // share of the ephemeral range toward one backend that switches the back leg to nowhere
	PortResume     float64 // share below which it switches back
	SampleInterval time.Duration
}

// ProxyProtocolMode says whether a listener reads a PROXY header.
type ProxyProtocolMode string

const (
	ProxyProtocolOff      ProxyProtocolMode = "off"
	ProxyProtocolOptional ProxyProtocolMode = "optional"
	ProxyProtocolRequired ProxyProtocolMode = "required"
)

// SendProxyProtocol says which PROXY header, if any, goes to the backend.
type SendProxyProtocol string

const (
	SendOff SendProxyProtocol = "off"
	SendV1  SendProxyProtocol = "v1"
	SendV2  SendProxyProtocol = "v2"
)

// Listener is one accepting socket and the backend it forwards to.
type Listener struct {
	Name                 string
	Listen               string // host:port
	Backend              string // a Backend's Name
	ProxyProtocol        ProxyProtocolMode
	ProxyProtocolTrusted []netip.Prefix // empty: trust nobody's header
	ProxyProtocolTimeout time.Duration
	IdleTimeout          time.Duration
	// MaxConnections caps the sessions open at once on this listener;
	// connections beyond it are reset at once. 0: no cap.
	MaxConnections int
	// Intercept says how connections reach the listener when a firewall
	// rule steered them there: with "tproxy" or "redirect" the record names
	// the address the client dialed (front.original_dst).
	Intercept Intercept
	Close     Close // the front leg
}

// Intercept says whether a listener accepts connections that nftables
// steered to it, and how it recovers the address the client dialed.
type Intercept string

const (
	// InterceptOff: clients address the listener itself.
	InterceptOff Intercept = "off"
	// InterceptTProxy: an nftables tproxy rule delivers connections for
	// other addresses; the listening socket has IP_TRANSPARENT (needs
	// CAP_NET_ADMIN) and the accepted socket's local address is the one the
	// client dialed.
	InterceptTProxy Intercept = "tproxy"
	// InterceptRedirect: an nftables redirect (NAT) rule rewrote the
	// destination; SO_ORIGINAL_DST reads the one the client dialed.
	InterceptRedirect Intercept = "redirect"
)

// Source says which address the proxy dials a backend from.
type Source string

const (
	// SourceProxy dials from the proxy's own address (the kernel picks it).
	SourceProxy Source = "proxy"
	// SourceClient dials from the client's address (the PROXY header's when
	// one was accepted, else the socket peer's) with IP_TRANSPARENT, so an
	// unmodified backend sees and logs the real client. Needs CAP_NET_ADMIN
	// and policy routing (closeproxy transparent setup).
	SourceClient Source = "client"
)

// Protocol says how much of the bytes the proxy understands.
type Protocol string

const (
	// ProtocolTCP relays opaque bytes; each session gets its own backend
	// connection, taken from the warm pool when one is ready.
	ProtocolTCP Protocol = "tcp"
	// ProtocolHTTP1 follows HTTP/1.x message boundaries and returns the
	// backend connection to the pool after each complete response.
	ProtocolHTTP1 Protocol = "http1"
)

// Backend is where sessions are dialed to: one server (Address) or several
// (Servers), exactly one of the two.
type Backend struct {
	Name              string
	Address           string   // host:port; empty when Servers is given
	Servers           []Server // several servers; empty when Address is given
	Balance           Balance  // how a session picks among Servers
	Health            Health
	Protocol          Protocol
	ConnectTimeout    time.Duration
	SendProxyProtocol SendProxyProtocol
	// Source is the address dialed from. With SourceClient every session
	// dials its own connection: no warm pool, no reuse across clients.
	Source Source
	// TCPKeepAlive turns on keep-alive probes on backend connections.
	TCPKeepAlive bool
	Pool         Pool
	Close        Close // the back leg
}

// Server is one of a backend's servers.
type Server struct {
	Address string // host:port
	Weight  int    // its share relative to the others
}

// ServerList returns the backend's servers: Servers, or Address as the only
// one, with weight 1.
func (b *Backend) ServerList() []Server {
	if len(b.Servers) > 0 {
		return b.Servers
	}
	return []Server{{Address: b.Address, Weight: 1}}
}

// Balance is how a backend picks a server for a new session.
type Balance string

const (
	// BalanceLeastConn picks the server with the fewest sessions per unit
	// of weight, counting the new one; ties go round-robin.
	BalanceLeastConn Balance = "least_conn"
	// BalanceRoundRobin takes the servers in turn, each as often as its
	// weight says (smooth weighted round-robin, as nginx does).
	BalanceRoundRobin Balance = "round_robin"
	// BalanceHashClient keeps a client address on one server (weighted
	// rendezvous hashing): removing a server moves only its own clients.
	BalanceHashClient Balance = "hash_client"
)

// HealthCheck is the active check a backend's servers get.
type HealthCheck string

const (
	HealthTCP  HealthCheck = "tcp"  // a connect, closed with an RST
	HealthHTTP HealthCheck = "http" // an HTTP/1 request; the status must match (protocol http1 only)
	HealthOff  HealthCheck = "off"  // none: only passive ejection
)

// Health says how a backend's servers are found down and brought back.
type Health struct {
	Check        HealthCheck
	Interval     time.Duration // between two checks of one server
	Timeout      time.Duration // bounds one check
	Rise         int           // consecutive passed checks that bring a down server up
	Fall         int           // consecutive failed checks that take an up server down
	HTTPRequest  string        // check = "http": the request line, e.g. "GET / HTTP/1.1"
	ExpectStatus int           // check = "http": the status that passes
	// EjectAfter takes a server down after this many consecutive dial
	// failures or resets seen by sessions (passive); 0 turns it off.
	EjectAfter int
	// EaseIn is how long a server that came back takes to reach its full
	// weight, starting from a tenth of it; 0: at once.
	EaseIn time.Duration
}

// Pool sizes a backend's connection pool.
type Pool struct {
	Warm       int           // idle pre-dialed connections kept ready; 0 turns warming off
	MaxIdleAge time.Duration // idle connections older than this are evicted with an RST
	MaxConns   int           // connections to this backend, in use + idle; 0: no cap
}

// Close is one leg's close policy.
type Close struct {
	TimeWait     policy.Target
	PeerFinGrace time.Duration
	// AdaptiveGrace scales the silence a withheld FIN waits for with the
	// peer's own pauses (policy.Grace.Silence), at most PeerFinGrace.
	AdaptiveGrace    bool
	Fallback         policy.Fallback
	HalfCloseTimeout time.Duration
	DrainTimeout     time.Duration
}

// NeedsNetAdmin lists what in c needs CAP_NET_ADMIN (IP_TRANSPARENT), one
// phrase each, such as `backend "web": source = "client"`; empty when
// nothing does.
func (c *Config) NeedsNetAdmin() []string {
	var out []string
	for _, l := range c.Listeners {
		if l.Intercept == InterceptTProxy {
			out = append(out, fmt.Sprintf("listener %q: intercept = %q", l.Name, l.Intercept))
		}
	}
	for _, b := range c.Backends {
		if b.Source == SourceClient {
			out = append(out, fmt.Sprintf("backend %q: source = %q", b.Name, b.Source))
		}
	}
	return out
}

// UsesAuto reports whether any leg of c has time_wait = "auto": then the
// kernel's TIME-WAIT figures are sampled every auto.sample_interval.
func (c *Config) UsesAuto() bool {
	for _, l := range c.Listeners {
		if l.Close.TimeWait == policy.TargetAuto {
			return true
		}
	}
	for _, b := range c.Backends {
		if b.Close.TimeWait == policy.TargetAuto {
			return true
		}
	}
	return false
}

// InUse reports whether a listener forwards to the backend named name. A
// backend none does is kept for a later reload: nothing dials it, checks
// it or waits for it to be ready.
func (c *Config) InUse(name string) bool {
	for _, l := range c.Listeners {
		if l.Backend == name {
			return true
		}
	}
	return false
}
