package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
	"github.com/closeproxy/closeproxy/proxy"
	"github.com/closeproxy/closeproxy/twwatch"
)

// Readiness is what /readyz and the pool metrics read from the proxy server.
type Readiness interface {
	Serving() bool                            // listeners up and not draining
	PoolStats() map[string]pool.Stats         // by backend name
	Servers() map[string][]proxy.ServerStatus // by backend name, servers in configuration order
	ParkedHTTP1() int                         // http1 sessions parked between requests
	RecordsWriting() int64                    // ended sessions whose record is being written
}

// shutdownTimeout bounds the graceful end of the admin HTTP server.
const shutdownTimeout = 2 * time.Second

// Admin serves /metrics, /healthz and /readyz, and implements
// proxy.Observer. Its methods are safe for concurrent use.
type Admin struct {
	cfg      *config.Config
	log      *zap.Logger
	reg      *prometheus.Registry
	m        *metrics
	watch    *twwatch.Watcher           // the kernel's TIME-WAIT figures
	ownWatch bool                       // New made watch: Serve runs it, Reconfigure updates it
	set      atomic.Pointer[backendSet] // swapped by Reconfigure
	attached atomic.Pointer[attachment]
	draining atomic.Bool
	limits   httpLimits    // of the HTTP server; a seam for tests
	version  string        // closeproxy_build_info's version label
	lost     func() uint64 // teardown records lost to failed writes; nil: none counted
}

type attachment struct{ r Readiness }

// Option adjusts an Admin.
type Option func(*Admin)

// WithWatcher has the kernel gauges report w's samples: the process's one
// TIME-WAIT watcher, which the caller runs (Run) and follows reloads with
// (Update), so that /metrics shows the figures auto decides from.
func WithWatcher(w *twwatch.Watcher) Option {
	return func(a *Admin) { a.watch = w }
}

// WithVersion sets the version closeproxy_build_info reports; "dev"
// without it.
func WithVersion(v string) Option {
	return func(a *Admin) { a.version = v }
}

// WithRecordsLost has closeproxy_teardown_records_lost_total read lost:
// the teardown records whose write failed.
func WithRecordsLost(lost func() uint64) Option {
	return func(a *Admin) { a.lost = lost }
}

// New builds the Admin and its registry. It starts nothing. Without
// WithWatcher it makes its own watcher (resolving the backends' host
// names once), which Serve runs and Reconfigure updates.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) *Admin {
	if log == nil {
		log = zap.NewNop()
	}
	a := &Admin{
		cfg:     cfg,
		log:     log,
		reg:     prometheus.NewRegistry(),
		m:       newMetrics(),
		limits:  defaultHTTPLimits,
		version: "dev",
	}
	for _, o := range opts {
		o(a)
	}
	if a.watch == nil {
		a.watch, a.ownWatch = twwatch.New(cfg, log), true
	}
	a.set.Store(newBackendSet(cfg, nil))
	a.m.initLabels(cfg)
	a.ConfigReloaded(true) // the configuration loaded at the start, as Prometheus counts it
	a.reg.MustRegister(
		buildInfo(a.version),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&poolCollector{a: a},
		&serverCollector{a: a},
		a.parkedGauge(),
		a.writingGauge(),
		a.lostCounter(),
		&kernelCollector{w: a.watch},
	)
	a.reg.MustRegister(a.m.collectors()...)
	return a
}

// parkedGauge is closeproxy_http1_sessions_parked, read at scrape time;
// 0 before Attach.
func (a *Admin) parkedGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "closeproxy_http1_sessions_parked",
		Help: "http1 sessions idle between requests whose client socket is parked: no goroutine or read buffer until the client sends, closes or times out.",
	}, func() float64 {
		if r := a.readiness(); r != nil {
			return float64(r.ParkedHTTP1())
		}
		return 0
	})
}

// writingGauge is closeproxy_teardown_records_writing, read at scrape
// time; 0 before Attach.
func (a *Admin) writingGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "closeproxy_teardown_records_writing",
		Help: "Ended sessions whose teardown record is being written: above 0 scrape after scrape, the records sink (log.records) takes nothing, as a pipe whose reader stopped, and each such session is held in memory.",
	}, func() float64 {
		if r := a.readiness(); r != nil {
			return float64(r.RecordsWriting())
		}
		return 0
	})
}

// lostCounter is closeproxy_teardown_records_lost_total, read at scrape
// time; 0 without WithRecordsLost.
func (a *Admin) lostCounter() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "closeproxy_teardown_records_lost_total",
		Help: "Teardown records lost: their write to log.records failed (a full disk, a closed pipe). The log says so at most every 10 s.",
	}, func() float64 {
		if a.lost != nil {
			return float64(a.lost())
		}
		return 0
	})
}

// buildInfo is closeproxy_build_info: 1, labelled with the version and
// the Go release that built it.
func buildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "closeproxy_build_info",
		Help:        "A metric with a constant '1' value labeled by the closeproxy version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// backendSet is the readiness state of the configured backends.
type backendSet struct {
	byName map[string]*backendReady
	order  []*backendReady // in config order, for /readyz
}

// newBackendSet keeps the state of backends whose settings did not change.
func newBackendSet(cfg *config.Config, old *backendSet) *backendSet {
	s := &backendSet{byName: make(map[string]*backendReady, len(cfg.Backends))}
	for _, b := range cfg.Backends {
		if !cfg.InUse(b.Name) {
			continue // no session can reach it: not the pod's readiness
		}
		br := newBackendReady(b)
		if old != nil {
			if prev := old.byName[b.Name]; prev != nil && slices.Equal(prev.addresses, br.addresses) && prev.timeout == br.timeout {
				br = prev
			}
		}
		s.byName[b.Name] = br
		s.order = append(s.order, br)
	}
	return s
}

// Reconfigure follows a reloaded configuration: /readyz checks the new
// backends, new series start at zero, and the Admin's own watcher, if it
// has one, counts the new listeners' ports and backends' addresses (a
// shared one is the caller's to update). admin.* itself needs a restart.
func (a *Admin) Reconfigure(cfg *config.Config) {
	if a.ownWatch {
		a.watch.Update(cfg)
	}
	a.set.Store(newBackendSet(cfg, a.set.Load()))
	a.m.initLabels(cfg)
}

// Attach gives the Admin the proxy server, once built (the server needs the
// Admin as its Observer first). Until then /readyz answers 503.
func (a *Admin) Attach(r Readiness) {
	a.attached.Store(&attachment{r: r})
}

// readiness returns the attached server, or nil.
func (a *Admin) readiness() Readiness {
	if at := a.attached.Load(); at != nil {
		return at.r
	}
	return nil
}

// SetDraining turns /readyz to 503 at once (SIGTERM or POST /drain).
func (a *Admin) SetDraining() { a.draining.Store(true) }

// handler returns the admin endpoints.
func (a *Admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.serveReady)
	mux.HandleFunc("POST /drain", a.serveDrain)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(a.log), Registry: a.reg,
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", ServerHeader) // healthcheck and drain know who answered
		mux.ServeHTTP(w, r)
	})
}

// ServerHeader names the admin listener in every answer's Server header:
// `closeproxy healthcheck` and `drain` take a 200 from anything else (the
// web server, at a wrong -admin) for a failure, not for a drain done.
const ServerHeader = "closeproxy-admin"

// Serve serves HTTP on ln, and runs the Admin's own TIME-WAIT watcher if
// it has one, until ctx ends, then shuts the HTTP server down gracefully
// (briefly) and returns nil. It closes ln. Any other failure to serve is
// returned. Clients are bounded (httpLimits): timeouts on every phase and
// at most 64 connections open at once.
func (a *Admin) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: a.limits.readHeader,
		ReadTimeout:       a.limits.read,
		WriteTimeout:      a.limits.write,
		IdleTimeout:       a.limits.idle,
		ErrorLog:          zap.NewStdLog(a.log),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ln = newLimitListener(ln, a.limits.maxConns)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if a.ownWatch {
		wg.Go(func() { a.watch.Run(sctx) })
	}
	defer func() { stop(); wg.Wait() }()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("admin: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sdctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sdctx); err != nil {
		a.log.Warn("admin: graceful shutdown cut short", zap.Error(err))
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve %s: %w", ln.Addr(), err)
	}
	return nil
}
