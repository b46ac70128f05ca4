package config

import (
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// keys is the schema, in the order the TOML writer, config.example.toml
// and docs/configuration.md follow. Each key's documentation is written
// here once: `go generate ./config` renders config.example.toml and
// docs/configuration.md from it, and tests fail while either differs.
//
//go:generate go test . -run ^Test(Example|Reference)IsGenerated$ -update
var keys = slices.Concat(topKeys, listenerKeys, backendKeys)

var topKeys = []key{
	{path: "shutdown_timeout", at: field(func(c *Config) any { return &c.ShutdownTimeout }),
		def: 30 * time.Second, restart: true, check: positive, doc: `
How long SIGTERM waits for live sessions to finish. Then a session still
flowing both ways is cut (an RST to both peers, outcome "drained"), a
withheld FIN takes its fallback, and a session with one way left or a leg
still waiting for its peer gets one more second, then is cut: shutdown
ends within this plus 3s plus the longest drain_timeout.`},
	{path: "relay", at: field(func(c *Config) any { return &c.Relay }),
		def: "loop", restart: true, check: oneOf("goroutines", "loop"), doc: `
How sessions wait for their sockets. "loop" (Linux): one event loop
per CPU Go may use (GOMAXPROCS), over epoll, runs every tcp session
once connected to the backend, and every http1 session of a listener
without intercept whose backend has source = "proxy" and no
send_proxy_protocol; a PROXY header is read on the loops too (a
listener without intercept); a session is a few structs and no goroutine (about 4 KiB while idle). Such
a listener accepts its connections, and a backend named by IP address
is dialed, without Go's network poller. An http1 upgrade or CONNECT
with a body, or a request for which no backend connection is ready
without a wait, carries its session on to a goroutine (request bodies
stay on the loop, and so does an upgrade's or CONNECT's tunnel). "goroutines":
each tcp session is three goroutines (about 16 KiB while idle) and
costs about 30 % more CPU per short connection, an http1 session one
goroutine while busy, with the same close decisions, kernel readings
and teardown records. A session's record is written off the loop: a
records sink that blocks (a full pipe) holds up only ended sessions. On
other systems "loop" falls back to goroutines.`},

	{path: "log", kind: table, doc: `Logging and teardown records.`},
	{path: "log.level", at: field(func(c *Config) any { return &c.Log.Level }),
		def: "info", check: oneOf("debug", "info", "warn", "error"), doc: `
Least severe level logged: "debug", "info", "warn" or "error".`},
	{path: "log.teardown", at: field(func(c *Config) any { return &c.Log.Teardown }),
		def: "all", check: teardown, doc: `
Which sessions log a teardown record (how each leg ended and where its
TIME-WAIT landed): "all", "errors" (only sessions that ended badly), or
"sample:<rate>" with a rate greater than 0 and at most 1, e.g. "sample:0.01"
for one in a hundred (sessions that ended badly are always logged).`},

	{path: "log.records", at: field(func(c *Config) any { return &c.Log.Records }),
		def: "stderr", restart: true, check: records, doc: `
Where teardown records are written, one JSON line each: "stderr",
"stdout" or a file path. Records do not pass through level: a level of
"warn" or "error" still writes every record teardown selects. A file is
opened for appending and reopened on SIGUSR1, after logrotate (or
anything else) moved it away. Records are written together, each at most
records_flush after its session ended; written one by one ("0s") they
add 7–13 % to the proxy's CPU per short connection to a file, and
13–18 % through a pipe whose reader wakes for every line, such as a
container's stderr that its runtime reads (measured in
docs/performance.md). A file (for instance on a volume a log shipper
tails) costs less than a pipe, and teardown "errors" or "sample:<rate>"
less still. A sink that takes nothing (a pipe whose reader stopped)
holds each ended session, a goroutine and its record, until it takes
them again (closeproxy_teardown_records_writing counts them); at shutdown the process waits for it until shutdown_timeout
plus 9s plus the longest drain_timeout, then exits (code 1) without the
records still waiting. A write
that fails (a reader gone, a full disk) loses that record, counted in
closeproxy_teardown_records_lost_total and told in the log at most every
10s; a reader of stderr or stdout that goes away does not stop the
proxy.`},
	{path: "log.records_flush", at: field(func(c *Config) any { return &c.Log.RecordsFlush }),
		def: 100 * time.Millisecond, restart: true, check: recordsFlush, doc: `
How long a teardown record may wait to be written together with the
records that end after it: one write for all of them, 256 KiB at most
(a full buffer is written at once). Through a pipe, "100ms" took what
records cost the proxy per short connection from 13–18 % of its CPU to
about 7 %; to a file, where encoding a record costs more than writing it,
it measured level (docs/performance.md). Nothing wakes the proxy while
no record waits. The price: a crash (SIGKILL, the OOM killer) loses
the records of the last interval; shutdown, SIGUSR1 and a failed start
write the buffer out first. "0s" writes each record as its session
ends, one write each. At most "10s".`},

	{path: "admin", kind: table, doc: `
The admin HTTP listener: /metrics (Prometheus), /healthz (the process
runs), /readyz (listeners up, every backend answered a dial recently, not
draining), POST /drain (stop accepting and let sessions finish; from
loopback clients only).`},
	{path: "admin.listen", at: field(func(c *Config) any { return &c.Admin.Listen }),
		def: "127.0.0.1:9901", restart: true, check: adminListen, doc: `
host:port to serve the admin endpoints on, or "off" to run without them.
The default binds loopback only, since the endpoints are unauthenticated.
Its clients are bounded: at most 64 connections at once, each with 5s for
a request's head and closed after 30s idle between requests.`},
	{path: "admin.kernel_sample_interval", at: field(func(c *Config) any { return &c.Admin.KernelSample }),
		def: time.Second, check: positive, doc: `
The oldest the kernel's TIME-WAIT figures behind the metrics may be. A
scrape of /metrics reads them (sock_diag, filtered by the proxy's own
ports) unless the last reading is younger; scrapes in between share it,
and a proxy nobody scrapes reads nothing (when some leg uses "auto", its
sampler's readings serve too). Stretched so that reading never takes more
than 1% of one core: a reading that cost d of CPU serves for 100 × d.`},

	{path: "auto", kind: table, doc: `
Thresholds of time_wait = "auto" on either leg. Auto prefers the
accepting side of each leg (front: the proxy; back: the backend), spares a
client that closes first with a safe reset, and switches new closes to
"nowhere" (safe resets: no TIME-WAIT) under pressure, with hysteresis.`},
	{path: "auto.tw_budget", at: field(func(c *Config) any { return &c.Auto.TWBudget }),
		restart: true, def: 0, check: upTo(math.MaxInt32, "half of net.ipv4.tcp_max_tw_buckets"), doc: `
TIME-WAIT sockets this host may hold before closes switch to nowhere,
up to 2147483647. 0 means half of net.ipv4.tcp_max_tw_buckets, read again with every
sample (a change of the sysctl applies without a restart).`},
	{path: "auto.tw_resume", at: field(func(c *Config) any { return &c.Auto.TWResume }),
		restart: true, def: 0.8, check: share, doc: `
Switch back below this share of tw_budget.`},
	{path: "auto.port_share", at: field(func(c *Config) any { return &c.Auto.PortShare }),
		restart: true, def: 0.5, check: share, doc: `
Switch a back leg to nowhere when the host's TIME-WAIT sockets toward
its backend ip:port (any process's, this proxy's or not) reach this share
of the usable ephemeral port range (net.ipv4.ip_local_port_range).`},
	{path: "auto.port_resume", at: field(func(c *Config) any { return &c.Auto.PortResume }),
		restart: true, def: 0.4, check: share, doc: `
Switch back below this share. Must not exceed port_share.`},
	{path: "auto.sample_interval", at: field(func(c *Config) any { return &c.Auto.SampleInterval }),
		def: 250 * time.Millisecond, check: sampleInterval, doc: `
How often the host's TIME-WAIT figures are read (/proc/net/sockstat and
sock_diag), shared by all sessions; between samples the proxy adds the
TIME-WAITs it placed itself, each from the FIN that leads to it. At least
"250ms". Sampling never takes more
than 1% of one core: listing TIME-WAIT sockets walks the kernel's whole
socket table, and a sample that cost d of CPU puts the next at least
100 x d away (on a host with 100,000 TIME-WAIT sockets, seconds).`},
}

var listenerKeys = []key{
	{path: "listener", kind: array, doc: `
A [[listener]] is one accepting socket and the backend it forwards to.
At least one is required.`},
	{path: "listener.name", at: field(func(l *Listener) any { return &l.Name }),
		example: "web", doc: `
Required, unique among listeners. Labels logs, records and metrics.`},
	{path: "listener.listen", at: field(func(l *Listener) any { return &l.Listen }),
		example: "0.0.0.0:8080", check: listenAddress, doc: `
Required. host:port to accept on; an empty host (":8080") means every
address, port 0 picks a free port. Two listeners cannot share an address.
"0.0.0.0:8080" (or ":8080") takes IPv6 clients too, where the host has
IPv6 (Go's dual-stack socket), so a firewall or NetworkPolicy in front
must cover both; "127.0.0.1:8080" takes IPv4 alone.`},
	{path: "listener.backend", at: field(func(l *Listener) any { return &l.Backend }),
		example: "app", doc: `
Required. The name of the [[backend]] sessions are forwarded to.`},
	{path: "listener.proxy_protocol", at: field(func(l *Listener) any { return &l.ProxyProtocol }),
		def: ProxyProtocolOff, check: oneOf(ProxyProtocolOff, ProxyProtocolOptional, ProxyProtocolRequired), doc: `
Whether clients' connections start with a PROXY protocol header (v1 or v2)
from a load balancer: "off" (never read one), "optional" (read one if
present) or "required" (refuse connections without one). With
"optional", a connection that closes before sending anything (a load
balancer's TCP check) is relayed as one without a header, and one that
waits for the server to speak first (SMTP, MySQL) is relayed only after
proxy_protocol_timeout: the proxy cannot tell it from a header still to
come; so is one whose first bytes could only begin a header (a lone
CRLF) before it waits: once "PROXY" or a whole v2 signature came, a
header it is, and one not whole by the timeout is refused. A v2 header's
TLVs must parse (an SSL TLV's sub-TLVs too), and a CRC32C TLV must
match. A v2 LOCAL header, a v1 UNKNOWN and a v2 header of the UDP or
UNIX family name no TCP client: the connection's own ends stand (as
HAProxy takes them); a v2 PROXY header of family UNSPEC is refused (the
parser's choice, which the specification allows: send LOCAL).`},
	{path: "listener.proxy_protocol_trusted", at: field(func(l *Listener) any { return &l.ProxyProtocolTrusted }),
		def: []netip.Prefix(nil), doc: `
Source addresses whose PROXY headers are believed: CIDR prefixes
("10.0.0.0/8") or bare addresses ("192.0.2.7"); an IPv4-mapped entry
("::ffff:192.0.2.7", as ss shows a dual-stack socket's peer) is the IPv4
address it maps. A header from anywhere
else is refused outright (the connection is reset and recorded as
bad_proxy_header); with "required", every connection from elsewhere is
refused; with "optional", a connection from elsewhere without a header
passes. An empty list trusts nobody, which is an error unless
proxy_protocol = "off".`},
	{path: "listener.proxy_protocol_timeout", at: field(func(l *Listener) any { return &l.ProxyProtocolTimeout }),
		def: 3 * time.Second, check: positive, doc: `
How long to wait for the PROXY header after accepting; the header may
span segments.`},
	{path: "listener.idle_timeout", at: field(func(l *Listener) any { return &l.IdleTimeout }),
		def: 60 * time.Second, check: positive, doc: `
A session with no bytes moving either way for this long is cut: an RST to
both peers, outcome "timeout" (in tcp mode the proxy cannot tell a
finished exchange from a stalled one). In http1 mode: the time a client
has to begin its next request (the first counted from the accept, a
PROXY header's wait included; an idle connection then ends by its close
policy, nothing cut), then as long again from its first byte for the
whole head (a slower one is cut), the longest a request waits, no byte moving, for
its answer (then 504), and, as in tcp mode, how long a tunnel (after a
101 or a CONNECT's 2xx: a WebSocket) may carry nothing before it is cut:
a WebSocket application quiet for longer needs pings, or a longer
idle_timeout. A drain waits for open tunnels to end; shutdown cuts them
at shutdown_timeout.`},
	{path: "listener.max_connections", at: field(func(l *Listener) any { return &l.MaxConnections }),
		def: 10000, check: atLeast0("no cap"), doc: `
Sessions open at once on this listener, up to 1048576. A connection
beyond it is reset at once (no TIME-WAIT), counted in
closeproxy_connections_rejected_total and recorded with outcome
over_limit. 0 means no cap. A tcp session holds one backend
connection for its whole life, so backend.pool.max_conns (1024 by
default) bounds a listener's tcp sessions too: one past it waits
connect_timeout and is refused pool_exhausted. Each session takes two
descriptors (an http1 session between requests, one), and each direction
carrying a bulk stream a splice pipe of two more. With relay = "loop" a
direction gives its pipe back once it was quiet for a quarter to a half
of idle_timeout (an http1 session, once it waited 20 ms for its next
request); with relay = "goroutines" it keeps it until the session ends (a
long-lived tcp session that moved bulk both ways holds six). Keep the
process's open-file limit above twice this, and more where many
connections carry bulk at once or, on goroutines, ever did.`},
	{path: "listener.intercept", at: field(func(l *Listener) any { return &l.Intercept }),
		def: InterceptOff, check: oneOf(InterceptOff, InterceptTProxy, InterceptRedirect), doc: `
Whether connections arrive here because a firewall rule in this host's
network namespace steered them, so the load balancer keeps addressing the
web server's own ip:port (see Transparent mode in the README).
- "off": clients address this listener.
- "tproxy": an nftables tproxy rule delivers connections addressed
  elsewhere; the socket gets IP_TRANSPARENT, which needs CAP_NET_ADMIN,
  and the address the client dialed is the accepted socket's own.
- "redirect": an nftables redirect (NAT) rule rewrote the destination;
  the address the client dialed is read with SO_ORIGINAL_DST.

Either way the record's front.original_dst names it. The backend is still
the [[backend]]'s address. A tproxy listener needs a socket of its own
(IP_TRANSPARENT): a reload that turns "tproxy" on or off on an unchanged
listen address is refused (bind: address already in use); restart, or
move the listener to another address in the same reload.`},

	{path: "listener.close", kind: table, doc: `
Close policy of the front leg (client <-> proxy).`},
	{path: "listener.close.time_wait", at: field(func(l *Listener) any { return &l.Close.TimeWait }),
		def: policy.TargetProxy, check: target(policy.Front), doc: `
Where the leg's TIME-WAIT should land when it closes.
- "proxy": the proxy sends the first FIN whenever it is the one ending
  the leg, so TIME-WAIT stays on the proxy, off the client's ports.
- "client": the proxy withholds its FIN and waits for the client's, so
  TIME-WAIT lands on the client. Suits self-delimiting protocols (HTTP
  with Content-Length or chunked). A client that sent nothing since the
  proxy's last bytes may be waiting for EOF (in http1 mode: after a
  response that closes the connection): the FIN is withheld only 50ms
  (or four round trips); a client still silent then gets it, and
  TIME-WAIT lands on the proxy (the record says peer_may_await_eof).
- "nowhere": like "client", but finish with a safe reset (an RST sent
  only once all data is acknowledged): no TIME-WAIT on either side.
- "auto": choose per close from live measurements: the proxy while it
  can, a safe reset when the client closed first or this host's
  TIME-WAIT passed auto.tw_budget.`},
	{path: "listener.close.peer_fin_grace", at: field(func(l *Listener) any { return &l.Close.PeerFinGrace }),
		def: time.Second, check: positive, doc: `
With "client" or "nowhere": the longest the proxy waits, with the client
silent, for the client's FIN before giving up by fallback. Time the
client spends blocked because the backend does not read is not silence.
In http1 mode, whatever time_wait is, it also bounds two waits for the
client: for the rest of a request body after the answer came (then
timeout), and, while draining, for the next request of a client that
still takes an answer whose head said nothing of a close, or whose last
exchange ended less than it ago (answered with Connection: close).`},
	{path: "listener.close.adaptive_grace", at: field(func(l *Listener) any { return &l.Close.AdaptiveGrace }),
		def: true, doc: `
Wait less than peer_fin_grace for a client that answers fast: four times
the longest pause it made earlier on this connection, at least 10ms and
four round trips. false: always the whole peer_fin_grace.`},
	{path: "listener.close.fallback", at: field(func(l *Listener) any { return &l.Close.Fallback }),
		def: policy.FallbackFIN, check: fallback, doc: `
What a withheld FIN becomes when peer_fin_grace runs out: "fin" (send it
after all; TIME-WAIT on the proxy) or "reset" (safe reset; no TIME-WAIT).
A reset needs the backend to be done with the client's stream; in tcp
mode nothing tells that (a backend's FIN only says it stopped sending),
so a client still silent at the grace's end gets the FIN whatever this
says, TIME-WAIT on the proxy (the record says other_side_reading); with
"nowhere" (or auto under pressure) only a client that closes within the
grace leaves no TIME-WAIT. In http1 mode the exchange tells, and
"reset" is taken.`},
	{path: "listener.close.half_close_timeout", at: field(func(l *Listener) any { return &l.Close.HalfCloseTimeout }),
		def: 30 * time.Second, check: positive, doc: `
After the proxy's FIN has gone, how long the client may stay silent
without sending its own; then the leg is reset, and what the client had
not finished sending counts as cut (outcome "timeout"). The FIN has gone
once the client acknowledged every byte before it: one still reading
them, or pausing, is not silent (idle_timeout bounds one that takes
none).`},
	{path: "listener.close.drain_timeout", at: field(func(l *Listener) any { return &l.Close.DrainTimeout }),
		def: time.Second, check: positive, doc: `
Before any reset ("nowhere", or fallback = "reset") the proxy waits for
every byte it sent on this leg to be acknowledged, so a reset never
destroys data; if that takes longer than this, it sends a FIN instead.
A client that resets meanwhile ends the wait at once (recorded as its
reset). It also paces the wait for the client to answer a FIN the proxy
sent after the client's, when the client had not acknowledged every byte
sent to it: an ACK, or an RST from a client that had closed its socket
(recorded as its reset, no TIME-WAIT). That wait lasts while the client
takes bytes, this long from its latest progress; one that takes none is
a paused reader, cut at idle_timeout (outcome "timeout"); once every
byte is acknowledged, an answer not come within this closes the leg as
a FIN exchange. A reset for late data (the client sent bytes
after the backend's side was gone, or, in http1, more behind a request
answered 400, or requests pipelined behind a last response) waits the
same way, then resets anyway; so does the reset that passes on the
backend's (its RST in tcp mode; in http1 a response the backend cut
short by a reset or an early close): what the backend sent before it
goes to the client first. Those resets wait as long as the client takes
what it was sent: this counts from its latest progress (what it
acknowledges; its window opens a segment at a time, 64 KiB on loopback),
so a slow reader gets every byte. One that shows no progress for this
long may have paused reading (with whole answers waiting for it): it is
waited for as any paused reader is, idle_timeout from its latest
progress, then reset, what it had not taken counted cut.`},
}
