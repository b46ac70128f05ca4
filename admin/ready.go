package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/proxy"
)

const (
	// answeredWithin: a backend with a successful dial this recent is ready
	// without a probe.
	answeredWithin = 10 * time.Second
	// probeEvery: at most one probe dial per backend this often; the
	// result is cached in between.
	probeEvery = 2 * time.Second
)

// backendReady is what /readyz knows of one backend whose servers get no
// active health check; for the others the proxy's health state decides.
type backendReady struct {
	name      string
	addresses []string // its servers'
	timeout   time.Duration
	lastOK    atomic.Int64 // unix nanoseconds of the last successful dial; 0: none

	mu       sync.Mutex // held across a probe: one probe at a time
	probedAt time.Time
	probeErr error
}

func newBackendReady(b config.Backend) *backendReady {
	t := b.ConnectTimeout
	if t <= 0 { // a Config built in code may leave it unset
		t = config.Defaults().Backend.ConnectTimeout
	}
	br := &backendReady{name: b.Name, timeout: t}
	for _, srv := range b.ServerList() {
		br.addresses = append(br.addresses, srv.Address)
	}
	return br
}

// answered records a successful dial at now.
func (b *backendReady) answered(now time.Time) { b.lastOK.Store(now.UnixNano()) }

// check returns nil when the backend answered a dial recently, else probes
// it (or reuses a probe younger than probeEvery) and returns why it is not
// ready.
func (b *backendReady) check(ctx context.Context, log *zap.Logger) error {
	if last := b.lastOK.Load(); last != 0 && time.Since(time.Unix(0, last)) < answeredWithin {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.probedAt.IsZero() && time.Since(b.probedAt) < probeEvery {
		return b.probeErr
	}
	err := b.probe(ctx)
	if ctx.Err() != nil { // the request went away: no verdict on the backend
		return err
	}
	if err != nil && dialKind(err) == kindLocal {
		// Our own ports or descriptors ran out: never the backend's fault.
		log.Warn("readyz: probe failed on this host; backend not blamed",
			zap.String("backend", b.name), zap.Error(err))
		err = nil
	}
	b.probedAt, b.probeErr = time.Now(), err
	if err == nil {
		b.answered(b.probedAt)
	}
	return err
}

// probe dials the backend's servers in turn until one answers.
func (b *backendReady) probe(ctx context.Context) error {
	var errs []error
	for _, addr := range b.addresses {
		err := probe(ctx, addr, b.timeout)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// probe dials addr and closes at once with an RST (SO_LINGER 0), so that the
// probe leaves no TIME-WAIT on either side.
func probe(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("probe backend %s: %w", addr, err)
	}
	// The backend answered: that is the verdict. Should SO_LINGER fail,
	// the close is an ordinary FIN and only costs one TIME-WAIT here.
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
	return nil
}

// anyUp: a backend whose servers are checked is ready while one is up.
func anyUp(servers []proxy.ServerStatus) error {
	var down []string
	for _, sv := range servers {
		if sv.Health.Up {
			return nil
		}
		down = append(down, fmt.Sprintf("%s down since %s", sv.Address, sv.Health.Since.UTC().Format(time.RFC3339)))
	}
	return fmt.Errorf("no server up: %s", strings.Join(down, ", "))
}

// serveReady answers /readyz.
func (a *Admin) serveReady(w http.ResponseWriter, r *http.Request) {
	problems := a.notReady(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) == 0 {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, strings.Join(problems, "\n"))
}

// notReady lists what keeps the proxy from being ready; empty means ready.
func (a *Admin) notReady(ctx context.Context) []string {
	if a.draining.Load() {
		return []string{"draining"}
	}
	r := a.readiness()
	if r == nil {
		return []string{"proxy not started"}
	}
	if !r.Serving() {
		return []string{"proxy not serving"}
	}
	order := a.set.Load().order
	servers := r.Servers()
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, b := range order {
		if st, ok := servers[b.name]; ok && len(st) > 0 && st[0].Checked {
			errs[i] = anyUp(st)
			continue
		}
		wg.Go(func() { errs[i] = b.check(ctx, a.log) })
	}
	wg.Wait()
	var problems []string
	for i, b := range order {
		if errs[i] != nil {
			problems = append(problems, fmt.Sprintf("backend %s: %v", b.name, errs[i]))
		}
	}
	return problems
}
