package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// Drainer is what POST /drain asks of the proxy server; proxy.Server
// implements it.
type Drainer interface {
	Drain()                   // stop accepting, ask sessions to finish
	Drained() <-chan struct{} // closed when draining and no session is left
	Live() int64              // sessions not yet ended
}

// maxDrainWait bounds POST /drain?wait=D: a longer wait is cut to it.
const maxDrainWait = 10 * time.Minute

// serveDrain answers POST /drain: /readyz turns 503 "draining" at once,
// the listeners close and sessions are asked to finish; the process keeps
// running until SIGTERM. Without wait it answers 202 at once; with
// wait=DURATION (a Go duration) it answers 200 "drained" once the last
// session ended, or 503 with the number still open when DURATION ran out.
// With delay=DURATION the listeners close only after it while /readyz fails
// at once: clients that a load balancer or Service still routes here
// until it sees the pod unready are served, not refused; wait then counts
// from the end of the delay. Of several drains the earliest end of a delay
// closes the listeners, and a client that goes away during its delay
// (a drain command stopped) leaves the delay to run; once the listeners
// are closed, a delay asked for is none. Only a client on loopback may drain: the admin port may listen on every
// address for the kubelet's probes, and draining takes the pod out of
// service.
func (a *Admin) serveDrain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !fromLoopback(r) {
		http.Error(w, "drain: only from loopback", http.StatusForbidden)
		return
	}
	wait, ok1 := drainParam(w, r, "wait")
	delay, ok2 := drainParam(w, r, "delay")
	if !ok1 || !ok2 {
		return
	}
	rd := a.readiness()
	d, ok := rd.(Drainer)
	if !ok {
		http.Error(w, "drain: proxy not started", http.StatusServiceUnavailable)
		return
	}
	a.SetDraining()
	switch {
	case !rd.Serving(): // an earlier drain closed the listeners: no delay is left to keep
		d.Drain()
		a.log.Info("draining on request: listeners already closed", zap.Int64("sessions", d.Live()))
	case delay == 0:
		a.drainNow(d)
	default:
		// The delay runs on its own: a client that goes away during it
		// (a drain command stopped) leaves the listeners accepting until
		// it ends.
		a.log.Info("draining on request: readiness fails now, listeners close after the delay", zap.Duration("delay", delay))
		closed := make(chan struct{})
		time.AfterFunc(delay, func() { a.drainNow(d); close(closed) })
		if wait == 0 {
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, "draining: listeners close in %s\n", delay)
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(delay + wait + time.Second))
		select {
		case <-closed:
		case <-r.Context().Done():
			return
		}
	}
	if wait == 0 {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "draining: %s open\n", sessions(d.Live()))
		return
	}
	// The wait outlasts the server's write timeout by design.
	if delay == 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + time.Second))
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	select {
	case <-d.Drained():
		a.log.Info("drained: every session ended")
		fmt.Fprintln(w, "drained")
	case <-ctx.Done():
		n := d.Live()
		if r.Context().Err() == nil {
			a.log.Warn("drain: the wait asked for ran out with sessions open", zap.Int64("sessions", n), zap.Duration("wait", wait))
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "draining: %s still open after %s\n", sessions(n), wait)
	}
}

// drainNow closes the listeners at a delay's end, and says so.
func (a *Admin) drainNow(d Drainer) {
	d.Drain()
	a.log.Info("draining on request: listeners closed", zap.Int64("sessions", d.Live()))
}

// sessions writes n sessions: "1 session", "2 sessions".
func sessions(n int64) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}

// drainParam reads the duration query parameter name of a drain request
// (absent: 0), bounded by maxDrainWait; a bad one is answered with 400.
func drainParam(w http.ResponseWriter, r *http.Request, name string) (time.Duration, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		http.Error(w, fmt.Sprintf("drain: %s=%q: want a duration such as 30s", name, v), http.StatusBadRequest)
		return 0, false
	}
	return min(d, maxDrainWait), true
}

// fromLoopback reports that the request came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
