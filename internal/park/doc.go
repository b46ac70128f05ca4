// Package park waits for idle sockets to become readable with no goroutine
// and no buffer per socket: one epoll set and one goroutine for them all.
//
// It has one job, apart from the relay loops (engine.Loops), which carry
// whole sessions: an http1 session between requests parks its client's
// socket here once the client has been quiet a while, and its goroutine
// ends, so that a keep-alive connection nobody uses holds a few structs,
// not a goroutine's stack and a read buffer. The session goes on, on a new
// goroutine, when the socket has something to read (bytes, a FIN, an
// error), when its idle time runs out, or when it is woken (draining).
//
// Linux only: elsewhere New fails and nothing parks.
package park

import "errors"

// ErrClosed is Park's error once the Parker is closed.
var ErrClosed = errors.New("park: parker closed")
