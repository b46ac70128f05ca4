// Package pool owns the connections closeproxy keeps to one backend server
// (a backend with several servers has one pool per server).
//
// For protocol "tcp" it keeps Warm pre-dialed, never-used connections ready,
// so the accept path skips the connect. For protocol "http1" the proxy hands a
// connection back with Put after a complete HTTP/1 response, and the next Get
// reuses it (keep-alive), so many short client connections share a few long
// back legs and the back leg produces next to no TIME-WAIT.
//
// Every idle connection is checked before Get returns it: a non-blocking
// MSG_PEEK recv that must find nothing to read. A connection the backend
// closed (it reads EOF) or that carries bytes nobody asked for is discarded.
// Idle connections older than MaxIdleAge, dead ones, and all idle ones when
// Run ends are closed with an RST (SO_LINGER{on,0}): they carry no data in
// flight, so nothing is destroyed and no TIME-WAIT is left on either side.
//
// Dials are bounded by ConnectTimeout and the caller's context. Failed warm
// dials are retried by one refiller per pool with exponential backoff and
// jitter (up to four dial at once while the backend answers). A local failure such as EADDRNOTAVAIL (our ephemeral ports ran
// out) is ours, never the backend's: it is counted apart and does not grow the
// backoff (varnish-cache#2622). MaxConns caps in-use plus idle connections; a
// Get at the cap waits for a slot, then fails with ErrPoolExhausted.
//
// The pool does not relay bytes, parse HTTP, write PROXY headers or decide how
// an in-use connection ends: the caller closes what it ends (then Release) or
// hands back what may be reused (Put). It imports nothing of the project.
//
// Usage:
//
//	p := pool.New(pool.Config{Address: "127.0.0.1:8081", ConnectTimeout: 2 * time.Second,
//		Warm: 8, MaxIdleAge: 30 * time.Second, MaxConns: 1024}, dial, log)
//	go p.Run(ctx) // refill and evict until ctx ends, then reset every idle connection
//
//	c, err := p.Get(ctx)
//	if err != nil { … } // errors.Is(err, pool.ErrPoolExhausted), syscall.EADDRNOTAVAIL, …
//	// … one request and its complete response on c …
//	p.Put(c) // or: close c by the back leg's policy, then p.Release(c)
package pool
