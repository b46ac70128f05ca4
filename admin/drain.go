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
// Only a client on loopback may drain: the admin port may listen on every
// address for the kubelet's probes, and draining takes the pod out of
// service.
func (a *Admin) serveDrain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !fromLoopback(r) {
		http.Error(w, "drain: only from loopback", http.StatusForbidden)
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			http.Error(w, fmt.Sprintf("drain: wait=%q: want a duration such as 30s", v), http.StatusBadRequest)
			return
		}
		wait = min(d, maxDrainWait)
	}
	d, ok := a.readiness().(Drainer)
	if !ok {
		http.Error(w, "drain: proxy not started", http.StatusServiceUnavailable)
		return
	}
	a.SetDraining()
	d.Drain()
	a.log.Info("draining on request: listeners closed", zap.Int64("sessions", d.Live()))
	if wait == 0 {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "draining: %d sessions open\n", d.Live())
		return
	}
	// The wait outlasts the server's write timeout by design.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	select {
	case <-d.Drained():
		fmt.Fprintln(w, "drained")
	case <-ctx.Done():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "draining: %d sessions still open after %s\n", d.Live(), wait)
	}
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
