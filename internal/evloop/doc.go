// Package evloop is a prototype, not part of the proxy: an event-driven
// relay core built to A/B against the goroutine-per-direction path
// (proxy.Server in tcp mode) on the same machine, before engine/ and
// proxy/ were rewritten around loops. Nothing imports it but its own
// tests and benchmarks and evrun, which runs it as a process for the
// bench's yardstick column (go run ./bench -prototype); it implements no
// policy, writes no teardown record and reads no configuration. It is
// evidence: what a bare Go event loop costs on the machine at hand.
//
// What it is: one loop per CPU (Config.Loops, default GOMAXPROCS), each
// with its own epoll set and its own SO_REUSEPORT listener on the same
// port. A loop accepts with accept4 (non-blocking; the client's address
// comes from accept itself), dials the backend with a raw non-blocking
// socket and connect (no net.Dialer: no resolver, no context, one
// setsockopt; one getsockname when the connect completes, for the back
// leg's 4-tuple), and registers both descriptors once, edge-triggered for
// reading and writing. A session is a small struct in a map keyed by
// descriptor, a state machine with no goroutine: each direction reads
// into the loop's one scratch buffer and writes straight on; only bytes
// the destination would not take go into a 16 KiB buffer from the loop's
// free list, and that direction stops reading until they are written.
// An idle session holds no buffer. A peer's FIN is passed on with
// shutdown(SHUT_WR) once its bytes are written, and the open direction
// keeps flowing; when both directions are done the session closes both
// descriptors (FINs already sent). With Config.SafeReset, a leg whose
// peer's FIN came first ends with SO_LINGER 0 once SIOCOUTQ reads 0 —
// polled by the loop's one timer, every millisecond up to DrainTimeout,
// then a FIN. Errors and Close cut sessions with an RST, never a FIN.
// Splice is not in the prototype: the A/B is about short connections.
//
// The loop goroutine parks in Go's netpoller on the epoll descriptor
// itself (epoll_wait with timeout 0 inside RawConn.Read): one park and
// wake per batch of events instead of one per socket wait, and no thread
// blocked in epoll_wait, which with one P (a benchmark pinned to one CPU)
// would stall every other goroutine until sysmon took the P back.
// Closing that descriptor is how Close wakes a loop.
//
// Why our own loop over golang.org/x/sys/unix and not gnet v2 (v2.9.7,
// read at its source): gnet can set SO_LINGER per connection (Conn.SetLinger)
// and hands out the descriptor (Conn.Fd), so SIOCOUTQ and TCP_INFO can be
// read with unix calls. But it closes a connection outright when a read
// returns 0 or EPOLLRDHUP arrives (eventloop.read and processIO call
// el.close): a peer's FIN ends both directions, so half-close — the
// proxy's first rule, pass the FIN and keep the open direction flowing —
// cannot be built on it without patching its loop; a shutdown(SHUT_WR)
// issued through Fd works, but reading on after the peer's FIN does not.
// Outbound connections go through net.Dial: Client.Dial blocks its caller
// (from an event handler, the whole loop) on loops of the Client's own;
// EventLoop.Register dials on a worker goroutine and dups the descriptor
// onto the server's loop — exactly the net.Dialer and goroutine cost this
// prototype exists to remove, plus a dup and a second close. Its reads land in its own buffers and writes
// that would block go into an unbounded elastic buffer, so there is no
// way to stop reading one side while the other is full (no backpressure)
// and no place for splice. We keep only the ideas (per-loop
// SO_REUSEPORT listeners, edge-triggered registration once).
//
// What it showed (docs/performance.md, "Event loops: A/B on one core"):
// its own CPU per short connection is 0.44–0.62× today's path's, with 28
// system calls instead of 45, 3 allocations instead of 75, and an idle
// session costs ~300 bytes and no goroutine instead of ~12.5 KiB and
// three.
//
// With Config.HTTP1 it serves http1 instead (http1_linux.go): each client
// connection a state machine of exchanges on the loop, parsed by package
// http1, backend connections on an idle list per loop. It is the A/B for
// running the proxy's http1 sessions on its loops instead of a goroutine
// each ("http1 on the loops" in docs/performance.md). Config.Readings adds
// the kernel readings true records take at each client's end, to price
// them on this shape. In both modes reads, writes, shutdowns, closes,
// connects and polls are raw system calls, as the proxy's loops make them
// (raw_linux.go).
//
// Benchmarks (pinned to one CPU, see docs/performance.md):
//
//	taskset -c 1 go test ./internal/evloop -run '^$' -bench . -benchtime 5000x
package evloop
