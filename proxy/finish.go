package proxy

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// awaitResult is what a leg's peer did while the proxy waited for its FIN.
type awaitResult int

const (
	awaitFIN     awaitResult = iota // the peer's FIN arrived
	awaitData                       // the peer sent bytes instead
	awaitTimeout                    // nothing came in time
	awaitReset                      // the peer reset, or the socket failed
)

// finish ends a leg that has nothing more to relay, blocking until it is
// closed, as the policy says for kind. rd reads the peer's side (a buffered
// reader over the leg's socket); what the peer still sends can reach no one
// and is discarded, counted in bytes_in. The two-way relay does the same
// with its copiers; this is the one-leg form the http1 mode needs.
func (l *leg) finish(rd io.Reader, kind policy.Kind) {
	for l.phase != phaseClosed {
		act := l.decide(kind)
		if kind == policy.LateData {
			act = policy.SafeReset // the peer must learn its bytes were lost
		}
		switch act {
		case policy.FINFirst:
			l.finFirstBlocking(rd)
		case policy.WithholdFIN:
			l.phase = phaseWithholding
			kind = l.withhold(rd)
		case policy.FINSecond:
			l.closeFIN()
		case policy.SafeReset:
			if !l.safeReset() {
				l.finFirstBlocking(rd)
			}
		}
	}
}

// withhold waits up to peer_fin_grace for the peer's FIN and says what
// happened, as the kind of the next decision.
func (l *leg) withhold(rd io.Reader) policy.Kind {
	switch l.await(rd, l.pol.PeerFinGrace, true) {
	case awaitFIN:
		return policy.PeerFINAfterWithhold
	case awaitData:
		l.rec.Fallback = "late_data"
		return policy.LateData
	case awaitTimeout:
		l.rec.Fallback = "grace_expired"
		return policy.GraceExpired
	}
	l.rec.Close = policy.ClosePeerReset
	l.close()
	return policy.PeerFirst
}

// finFirstBlocking sends the proxy's FIN (second, if the peer's came) and
// waits for the peer's up to half_close_timeout.
func (l *leg) finFirstBlocking(rd io.Reader) {
	if l.readEOF {
		l.closeFIN()
		return
	}
	if err := l.sendFIN(); err != nil {
		l.fail()
		return
	}
	switch l.await(rd, l.pol.HalfCloseTimeout, false) {
	case awaitFIN:
		l.closeFIN()
	case awaitReset:
		l.rec.Close = policy.ClosePeerReset
		l.close()
	default:
		l.rec.Fallback = "half_close_timeout"
		if !l.safeReset() {
			l.closeFIN()
		}
	}
}

// await reads from the peer until its FIN, for at most d. With stopOnData
// the first byte ends the wait; otherwise bytes are discarded and the wait
// goes on.
func (l *leg) await(rd io.Reader, d time.Duration, stopOnData bool) awaitResult {
	if err := l.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return awaitReset
	}
	var buf [512]byte
	for {
		n, err := rd.Read(buf[:])
		l.rec.BytesIn += int64(n)
		if n > 0 && stopOnData {
			return awaitData
		}
		switch {
		case errors.Is(err, io.EOF):
			l.peerFIN()
			return awaitFIN
		case errors.Is(err, os.ErrDeadlineExceeded):
			return awaitTimeout
		case err != nil:
			return awaitReset
		}
	}
}
