package proxy

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// clientWatch watches a session's client while the session waits for a
// slot in a backend's pool (pool.OnWait), which may take connect_timeout:
// the client's reset cuts the wait short, as nobody is left to serve,
// and its FIN is noted as it comes (a half-close after the request: the
// request stands, and the wait goes on). The watch costs a goroutine and
// a duplicate of the client's socket, and only while the pool makes the
// session wait.
type clientWatch struct {
	cancel context.CancelFunc // ends the wait
	done   chan struct{}      // closed when the watch's goroutine returned
	stopFn func()             // ends the watch's goroutine
	reset  atomic.Bool        // the client reset its connection
	finAt  atomic.Int64       // when the client's FIN was seen (UnixNano), or 0
}

// gone reports that the client reset its connection during the watch.
func (w *clientWatch) gone() bool { return w.reset.Load() }

// fin is when the client's FIN was seen during the watch, or zero.
func (w *clientWatch) fin() time.Time {
	if n := w.finAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// stop ends the watch, if one started, and waits for its goroutine.
func (w *clientWatch) stop() {
	if w.stopFn == nil {
		return
	}
	w.stopFn()
	<-w.done
	w.stopFn = nil
}

// errClientGone: the client reset its connection while its session waited
// for a backend connection.
var errClientGone = errors.New("reset by the client while its session waited for a backend connection")
