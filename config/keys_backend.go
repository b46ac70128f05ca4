package config

import (
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

var backendKeys = []key{
	{path: "backend", kind: array, doc: `
A [[backend]] is where sessions are dialed to.`},
	{path: "backend.name", at: field(func(b *Backend) any { return &b.Name }),
		example: "app", doc: `
Required, unique among backends; listeners refer to it. A backend no
listener names is kept for a later reload: until one does, nothing
dials it, checks it or waits for it (/readyz), and check warns.`},
	{path: "backend.address", at: field(func(b *Backend) any { return &b.Address }),
		example: "127.0.0.1:8081", doc: `
Required: either address, one host:port to dial (the host may be a name
or an address), or servers.`},
	{path: "backend.servers", at: field(func(b *Backend) any { return &b.Servers }),
		example: []Server{{"10.0.0.11:80", 1}, {"10.0.0.12:80", 2}}, apart: true, doc: `
Several servers instead of address. Each is "host:port", or an inline
table with a weight (1 to 1000, default 1): its share of new sessions
relative to the others. A session whose dial fails tries the next server
(each at most once) before any byte of it reached a backend. Every other
key applies as with address; only health.check defaults differently.`},
	{path: "backend.balance", at: field(func(b *Backend) any { return &b.Balance }),
		def: BalanceLeastConn, check: oneOf(BalanceLeastConn, BalanceRoundRobin, BalanceHashClient), doc: `
How a new session picks one of several servers.
- "least_conn": the server with the fewest sessions per unit of weight;
  ties go round-robin.
- "round_robin": the servers in turn, each as often as its weight says
  (smooth weighted round-robin, as nginx does).
- "hash_client": the real client's IP address (from the PROXY header
  when one was read) always picks the same server (weighted rendezvous
  hashing); removing a server moves only the clients that were on it.

Only servers that are up take new sessions; with none up, every server
is tried. With a single server there is nothing to choose.`},
	{path: "backend.protocol", at: field(func(b *Backend) any { return &b.Protocol }),
		def: ProtocolTCP, check: oneOf(ProtocolTCP, ProtocolHTTP1), doc: `
How the proxy reads the bytes.
- "tcp": opaque bytes: each client connection gets its own backend
  connection, taken from the warm pool (pool.warm) when one is ready, so
  the accept path skips the connect.
- "http1": HTTP/1.0 and 1.1: the proxy follows message boundaries
  (Content-Length, chunked, close-delimited, HEAD, 1xx, 204, 304,
  Upgrade) and returns the backend connection to the pool after each
  complete response, so many short client connections share a few
  long-lived backend connections and the back leg makes next to no
  TIME-WAIT. Ambiguous framing (request smuggling) is answered with 400
  and never forwarded. Cannot be combined with send_proxy_protocol: a
  reused connection serves many clients, a PROXY header names one.`},
	{path: "backend.connect_timeout", at: field(func(b *Backend) any { return &b.ConnectTimeout }),
		def: 2 * time.Second, check: positive, doc: `
How long a dial may take before the session is refused; also how long a
session waits for a free connection when pool.max_conns is reached.`},
	{path: "backend.send_proxy_protocol", at: field(func(b *Backend) any { return &b.SendProxyProtocol }),
		def: SendOff, check: oneOf(SendOff, SendV1, SendV2), doc: `
PROXY protocol header sent to the backend naming the real client (from
the incoming PROXY header when present): "off", "v1" (text) or "v2"
(binary). It carries the two addresses only: an incoming v2 header's
TLVs (ALPN, authority, unique ID, SSL, CRC32C) are not passed on, and a
v2 header has none of its own. Where the incoming header named no
client (a v2 LOCAL, a v1 UNKNOWN), it names the connection's own ends.`},
	{path: "backend.source", at: field(func(b *Backend) any { return &b.Source }),
		def: SourceProxy, check: oneOf(SourceProxy, SourceClient), doc: `
Which address the backend connection comes from.
- "proxy": the proxy's own address: the backend sees the proxy as its
  client (send_proxy_protocol tells it the real one).
- "client": the client's address (from the PROXY header when one was
  accepted, else the connection's peer), with IP_TRANSPARENT, so an
  unmodified backend logs the real client. Needs CAP_NET_ADMIN (run
  fails without it; check only warns) and policy routing that delivers
  the backend's replies to the proxy (closeproxy transparent setup).
  Each session dials its own connection from the client's address with
  a port the kernel picks: pool.warm is not used, and protocol = "http1"
  is refused. The client's and the backend's address families must
  match (IPv4 with IPv4).`},
	{path: "backend.tcp_keepalive", at: field(func(b *Backend) any { return &b.TCPKeepAlive }),
		def: false, doc: `
TCP keep-alive probes on backend connections: after 15 s without a byte,
every 15 s, and the connection fails after 9 unanswered (Go's defaults).
Off by default, as HAProxy (option srvtcpka), nginx
(proxy_socket_keepalive) and Envoy leave it: listener.idle_timeout cuts a
session whose backend went silent, and pool.max_idle_age evicts an idle
pooled connection, both before the probes would (15 s + 9 × 15 s). Turn
it on when a middlebox between proxy and backend forgets connections
idle for less than those, or with an idle_timeout or max_idle_age above
150 s. Each backend connection then costs four setsockopt calls more.`},

	{path: "backend.health", kind: table, doc: `
How servers are found down, and brought back. A down server takes no new
session; sessions it already has go on.`},
	{path: "backend.health.check", at: field(func(b *Backend) any { return &b.Health.Check }),
		def: HealthOff, check: oneOf(HealthTCP, HealthHTTP, HealthOff), doc: `
Active check of each server every interval: "tcp" (a connect, closed at
once with an RST, so no TIME-WAIT lands anywhere), "http" (only with
protocol = "http1": http_request is sent with a Host header and
Connection: close, and the status must be expect_status) or "off". The
default is "tcp" when servers lists more than one server, "off" with a
single server (a check could only refuse sessions that have nowhere else
to go).`},
	{path: "backend.health.interval", at: field(func(b *Backend) any { return &b.Health.Interval }),
		def: 2 * time.Second, check: healthInterval, doc: `
Time between two checks of one server; with check = "off", how long an
ejected server stays out. At least 100ms.`},
	{path: "backend.health.timeout", at: field(func(b *Backend) any { return &b.Health.Timeout }),
		def: time.Second, check: healthTimeout, doc: `
Bounds one check: connect, and for "http" the status line. From 1ms to
interval.`},
	{path: "backend.health.rise", at: field(func(b *Backend) any { return &b.Health.Rise }),
		def: 2, check: between(1, 100, "from 1 to 100"), doc: `
Consecutive passed checks that bring a down server back up, from 1 to
100.`},
	{path: "backend.health.fall", at: field(func(b *Backend) any { return &b.Health.Fall }),
		def: 3, check: between(1, 100, "from 1 to 100"), doc: `
Consecutive failed checks that take an up server down, from 1 to 100.`},
	{path: "backend.health.http_request", at: field(func(b *Backend) any { return &b.Health.HTTPRequest }),
		def: "GET / HTTP/1.1", check: requestLine, doc: `
With check = "http": the request line; "Host: <server address>" and
"Connection: close" are added.`},
	{path: "backend.health.expect_status", at: field(func(b *Backend) any { return &b.Health.ExpectStatus }),
		def: 200, check: between(100, 599, "an HTTP status from 100 to 599"), doc: `
With check = "http": the status that passes.`},
	{path: "backend.health.eject_after", at: field(func(b *Backend) any { return &b.Health.EjectAfter }),
		def: 3, check: between(0, 100, "from 0 (off) to 100"), doc: `
Passive ejection: a server is taken down after this many consecutive
failed dials (refused, timed out, unreachable; never a local failure
such as running out of ports) or backend resets seen by sessions, and
brought back by rise passed checks (with check = "off": after one
interval, by the first session or scrape that looks at it then, which
logs "server back"). Only a session the server served resets the count, not a
dial that worked nor a passed check (a server that accepts, as a tcp
check asks, may still reset every session). Up to 100; 0 turns it off.`},
	{path: "backend.health.ease_in", at: field(func(b *Backend) any { return &b.Health.EaseIn }),
		def: 10 * time.Second, check: notNegative, doc: `
A server that comes back up starts at a tenth of its weight and reaches
its full weight over this long (slow start), so a cold server is not
flooded. "0s" turns it off.`},

	{path: "backend.pool", kind: table, doc: `
The pool of connections to this backend: one pool per server.`},
	{path: "backend.pool.warm", at: field(func(b *Backend) any { return &b.Pool.Warm }),
		def: 8, check: atLeast0(""), doc: `
Idle pre-dialed connections kept ready (up to 1048576, and no more than
max_conns unless that is 0), so a new session skips the connect. They are checked for liveness before use; a backend that
sends first (a greeting) stops the warming at its first greeting, with
a warning. 0 turns warming off;
source = "client" never warms (a warm connection would come from no
client's address). A backend on this host gains little from them: with
relay = "loop" a tcp session that finds none connects on the event loop
that accepted it, the kernel completing such a connect inside the call.`},
	{path: "backend.pool.max_idle_age", at: field(func(b *Backend) any { return &b.Pool.MaxIdleAge }),
		def: 30 * time.Second, check: positive, doc: `
Idle connections (warm, or returned after an HTTP/1 response) older than
this are closed with an RST: they carry nothing, so no TIME-WAIT lands
anywhere. Keep it below the backend's own keep-alive timeout (nginx
keepalive_timeout, 75s by default). Whatever its value, an idle
connection the backend closed or reset is found within a second (a
non-blocking peek of each idle connection) and closed.`},
	{path: "backend.pool.max_conns", at: field(func(b *Backend) any { return &b.Pool.MaxConns }),
		def: 1024, check: atLeast0("no cap"), doc: `
Connections to this backend, in use and idle together (with several
servers: to each server), up to 1048576. A tcp session holds one for its
whole life; an http1 session while an exchange runs (on the loops also
up to 20 ms after it, for its client's next request, unless another
session waits for one). A session that
finds none free waits up to connect_timeout, then is refused with outcome
pool_exhausted: in tcp mode by a reset, in http1 mode by a 503 and the
proxy's FIN. A client that resets meanwhile ends its session's wait at
once (outcome client_reset, on Linux); one that half-closes keeps its
place, and its request goes once a connection frees. 0 means no cap.`},

	{path: "backend.close", kind: table, doc: `
Close policy of the back leg (proxy <-> backend).`},
	{path: "backend.close.time_wait", at: field(func(b *Backend) any { return &b.Close.TimeWait }),
		def: policy.TargetPeer, check: target(policy.Back), doc: `
Where the leg's TIME-WAIT should land when it closes.
- "proxy": the proxy sends the first FIN when it ends the leg, so
  TIME-WAIT stays on the proxy, tying up its ports toward the backend.
- "backend": the proxy withholds its FIN and waits for the backend's, so
  TIME-WAIT lands on the backend, which accepted the connection and has
  no ports to lose. Suits self-delimiting protocols (HTTP with
  Content-Length or chunked). A backend that sent nothing since the
  proxy's last bytes (a request ended by the client's half-close) may be
  reading to EOF: the FIN is withheld only 50ms (or four round trips); a
  backend still silent then gets it, and TIME-WAIT lands on the proxy
  (the record says peer_may_await_eof).
- "nowhere": like "backend", but finish with a safe reset (an RST sent
  only once all data is acknowledged): no TIME-WAIT on either side.
- "auto": choose per close from live measurements: the backend while it
  can, a safe reset when this host's TIME-WAIT or the proxy's ports
  toward the backend are under pressure.`},
	{path: "backend.close.peer_fin_grace", at: field(func(b *Backend) any { return &b.Close.PeerFinGrace }),
		def: time.Second, check: positive, doc: `
With "backend" or "nowhere": the longest the proxy waits, with the
backend silent, for the backend's FIN before giving up by fallback. Time
the backend spends blocked because the client does not read is not
silence.`},
	{path: "backend.close.adaptive_grace", at: field(func(b *Backend) any { return &b.Close.AdaptiveGrace }),
		def: true, doc: `
Wait less than peer_fin_grace for a backend that answers fast: four
times the longest pause it made earlier on this connection (its answer
time included), at least 10ms and four round trips. A client that closes
first then holds its port for milliseconds, not the whole grace. With
fallback = "reset" in tcp mode this is also how long a backend may pause
mid-answer after the client's FIN before the reset's bet (see fallback).
false: always the whole peer_fin_grace.`},
	{path: "backend.close.fallback", at: field(func(b *Backend) any { return &b.Close.Fallback }),
		def: policy.FallbackReset, check: fallback, doc: `
What a withheld FIN becomes when peer_fin_grace runs out: "fin" (send it
after all; TIME-WAIT on the proxy) or "reset" (safe reset; no
TIME-WAIT). "reset" by default on this leg, keeping TIME-WAIT off the
proxy's ports. In tcp mode the reset is a bet that the client is done
with the answer: it is taken only once the client closed after the
whole answer so far (its FIN acknowledged every byte, and it sent none
after them), as a client that read the answer and hung up does; for
that the proxy reads the client's TCP state once per answer it starts
relaying (one system call per keep-alive request; on the loops none for
an answer that comes with the backend's FIN). A client that only
half-closed there and reads on, toward a backend that pauses longer than
the grace mid-answer and then sends more, loses that rest and sees a
clean end (a reset where the front leg ends by one: "nowhere", or "auto"
sparing the client), under an "ok" record. For clients that half-close after the
answer began (a request ended by shutdown(SHUT_WR), nc), set "fin" here,
or adaptive_grace = false with a peer_fin_grace longer than the
backend's pauses. In http1 mode the exchange says where an answer ends:
no bet. With "fin" here, and time_wait neither "nowhere" nor "auto", the
proxy reads none.`},
	{path: "backend.close.half_close_timeout", at: field(func(b *Backend) any { return &b.Close.HalfCloseTimeout }),
		def: 30 * time.Second, check: positive, doc: `
After the proxy's FIN has gone, how long the backend may stay silent
without sending its own; then the leg is reset, and what the backend had
not finished sending counts as cut (outcome "timeout"). The FIN has gone
once the backend acknowledged every byte before it: one still reading
them, or pausing, is not silent (idle_timeout bounds one that takes
none).`},
	{path: "backend.close.drain_timeout", at: field(func(b *Backend) any { return &b.Close.DrainTimeout }),
		def: time.Second, check: positive, doc: `
Before any reset ("nowhere", or fallback = "reset") the proxy waits for
every byte it sent on this leg to be acknowledged, so a reset never
destroys data; if that takes longer than this, it sends a FIN instead.
A backend that resets meanwhile ends the wait at once (recorded as its
reset). It also paces the wait for the backend to answer a FIN the proxy
sent after the backend's, when the backend had not acknowledged every byte
sent to it: an ACK, or an RST from a backend that had closed its socket
(recorded as its reset, no TIME-WAIT). That wait lasts while the backend
takes bytes, this long from its latest progress; one that takes none is
a paused reader, cut at idle_timeout (outcome "timeout"); once every
byte is acknowledged, an answer not come within this closes the leg as
a FIN exchange. A reset for late data (the backend sent
bytes after the client's side was gone) waits the same way, then resets
anyway; so does, in tcp mode, the reset that passes on the client's: what
the client sent before it goes to the backend first. Those resets wait as
long as the backend takes what it was sent: this counts from its latest
progress; one that shows none for this long is waited for as any paused
reader is, the listener's idle_timeout from its latest progress, then
reset.`},
}
