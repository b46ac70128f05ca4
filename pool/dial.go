package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"
)

var errNilConn = errors.New("dial func returned no connection and no error")

// localErrors are dial failures of this host, not of the backend: out of
// ephemeral ports (EADDRNOTAVAIL), a bind conflict, out of descriptors or
// buffers, a source address of the wrong family or one the kernel
// refuses as a source toward the backend (transparent mode: a client
// address from a PROXY header such as 127.0.0.1, EINVAL). They never
// count as backend failures (varnish-cache#2622).
var localErrors = [...]error{
	syscall.EADDRNOTAVAIL, syscall.EADDRINUSE, syscall.EMFILE,
	syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EAFNOSUPPORT,
	syscall.EINVAL,
}

// IsLocal reports whether err is a failure of this host rather than of the
// backend.
func IsLocal(err error) bool {
	for _, e := range localErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// dialConn dials one connection, bounded by ConnectTimeout and ctx, and
// counts the outcome.
func (p *Pool) dialConn(ctx context.Context) (*Conn, error) {
	dctx := ctx
	if p.boundDial(ctx) {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		defer cancel()
	}
	start := time.Now()
	var tc *net.TCPConn
	var bare *Bare
	var err error
	if _, own := Source(ctx); p.cfg.DialBare != nil && !own {
		bare, err = p.cfg.DialBare(dctx, p.cfg.Address)
		p.inCall.Store(err == nil && bare != nil && bare.Home < 0)
	}
	if bare == nil && err == nil {
		tc, err = p.dial(dctx, p.cfg.Address)
		if err == nil && tc == nil {
			err = errNilConn
		}
	}
	took := time.Since(start)
	p.mu.Lock()
	p.countDialLocked(err, ctx.Err() != nil)
	p.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("dial backend %s: %w", p.cfg.Address, err)
	}
	if p.failing.Load() {
		select {
		case p.recovered <- struct{}{}:
		default:
		}
	}
	return &Conn{TCPConn: tc, Bare: bare, Dial: took, born: start}, nil
}

// boundDial reports whether ConnectTimeout ends before ctx does, so the dial
// needs a context of its own; a ctx already done (DialNow's) ends first.
func (p *Pool) boundDial(ctx context.Context) bool {
	if p.cfg.ConnectTimeout <= 0 || ctx.Err() != nil {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > p.cfg.ConnectTimeout
}

// countDialLocked counts a dial's outcome. A dial abandoned because the
// caller's context ended is nobody's failure.
func (p *Pool) countDialLocked(err error, callerGone bool) {
	switch {
	case err == nil:
		p.stats.Dialed++
		p.stats.Failing = 0
	case IsLocal(err):
		p.stats.LocalDialFailures++
	case callerGone:
	default:
		p.stats.DialFailures++
		p.stats.Failing++
	}
}

// retryDelay is how long the refiller waits after a failed dial: exponential
// in the consecutive backend failures, with jitter over the upper half so
// pools that failed together do not retry together. A local failure waits
// BackoffMin doubled a few times without growing the backend's count.
func (p *Pool) retryDelay(err error) time.Duration {
	n := 4
	if !IsLocal(err) {
		p.mu.Lock()
		n = p.stats.Failing
		p.mu.Unlock()
	}
	return jitter(backoff(p.cfg.BackoffMin, p.cfg.BackoffMax, n))
}

// backoff is lo·2^(n-1), at most hi.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// jitter picks uniformly in [d/2, d].
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
