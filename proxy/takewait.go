package proxy

import "time"

// takeWait follows a backend's kernel taking the rest of a request whose
// exchange is over: the backend answered before it read all of the body
// (nginx answers a location that reads none at once, then reads the body
// and throws it away, keeping the connection). The response went to the
// client without Connection: close, so a keep-alive client sends its next
// request on; ending its connection then would meet that request with the
// connection's end. A backend that takes the rest within the wait keeps
// its connection for the pool, and the client its. One that takes nothing
// for takeQuiet, or not all within the back leg's peer_fin_grace, is not
// reading the request, and one that sends a byte, its FIN or a reset
// meanwhile is done with the connection: either way it is not reused, as
// before the wait.
// Both relays keep one; the send queue (SIOCOUTQ) is read at each look.
type takeWait struct {
	q     int           // the send queue at the last look
	moved time.Time     // when it last shrank (the wait's start at first)
	by    time.Time     // the wait's end in all
	poll  time.Duration // until the next look: doubles while nothing moves
}

// takeQuiet is how long the wait lasts with nothing taken: a backend that
// reads what it discards takes the next bytes within a round trip or two.
const takeQuiet = 50 * time.Millisecond

// The first look's interval and the longest between two.
const (
	takeFirstPoll = 200 * time.Microsecond
	takeLastPoll  = 5 * time.Millisecond
)

// start begins the wait at now with q bytes of the request unacknowledged,
// for most at the longest; false: nothing to wait for (q <= 0, or the
// queue could not be read: the connection is judged as before).
func (w *takeWait) start(now time.Time, q int, most time.Duration) bool {
	if q <= 0 {
		return false
	}
	*w = takeWait{q: q, moved: now, by: now.Add(most), poll: takeFirstPoll}
	return true
}

// look takes one look with the send queue q at now. taken: the backend's
// kernel took all of the request; over: the wait ran out without; neither:
// look again at next.
func (w *takeWait) look(now time.Time, q int) (taken, over bool, next time.Time) {
	switch {
	case q == 0:
		return true, false, time.Time{}
	case q < 0:
		return false, true, time.Time{}
	case q < w.q:
		w.q, w.moved, w.poll = q, now, takeFirstPoll
	default:
		w.poll = min(2*w.poll, takeLastPoll)
	}
	if now.Sub(w.moved) >= takeQuiet || !now.Before(w.by) {
		return false, true, time.Time{}
	}
	return false, false, now.Add(w.poll)
}
