package twwatch

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
)

// MinAutoInterval is the shortest auto.sample_interval honoured: sampling
// a large host more often would cost more than it tells.
const MinAutoInterval = 250 * time.Millisecond

// Watcher samples the kernel's TIME-WAIT figures for the whole process:
// one list of targets, one sampler goroutine (Run) for auto, samples on
// demand for the metrics (Current), one latest Sample. Its methods are
// safe for concurrent use.
type Watcher struct {
	log    *zap.Logger
	kernel Kernel
	res    Resolver

	targets  atomic.Pointer[Targets]
	interval atomic.Int64 // Run's period, a time.Duration; 0: no leg uses auto
	maxAge   atomic.Int64 // the oldest sample Current serves, a time.Duration
	cost     atomic.Int64 // the CPU the last timed sample took, a time.Duration
	stale    atomic.Bool  // the targets changed since the latest sample
	latest   atomic.Pointer[Sample]
	changed  chan struct{} // Update tells Run: new targets or interval
	running  atomic.Bool

	mu      sync.Mutex // one sample at a time; guards the fields below
	seq     uint64
	failing bool // the last sample had an error
	subs    map[uint64]func(*Sample)
	nextSub uint64
}

// Option adjusts a Watcher.
type Option func(*Watcher)

// WithResolver resolves backend host names with r instead of
// net.DefaultResolver.
func WithResolver(r Resolver) Option { return func(w *Watcher) { w.res = r } }

// WithKernel reads the figures from k instead of this host.
func WithKernel(k Kernel) Option { return func(w *Watcher) { w.kernel = k } }

// New builds the Watcher of cfg: its targets, with the backends' host
// names resolved now, and its interval. It starts nothing and reads no
// figure: Run samples, or Refresh once.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) *Watcher {
	if log == nil {
		log = zap.NewNop()
	}
	w := &Watcher{log: log, changed: make(chan struct{}, 1), subs: map[uint64]func(*Sample){}}
	for _, o := range opts {
		o(w)
	}
	w.set(cfg)
	return w
}

// Update follows a reloaded configuration: new targets (host names
// resolved again, now), interval and maximum age. A running Run samples
// with them at once; Current, at its next call.
func (w *Watcher) Update(cfg *config.Config) {
	w.set(cfg)
	w.stale.Store(true)
	select {
	case w.changed <- struct{}{}:
	default: // Run has a change to read already
	}
}

func (w *Watcher) set(cfg *config.Config) {
	w.targets.Store(BuildTargets(cfg, w.res, w.log))
	w.interval.Store(int64(Interval(cfg)))
	w.maxAge.Store(int64(MaxAge(cfg)))
}

// Interval is how often Run samples for cfg: auto.sample_interval (at
// least MinAutoInterval) when some leg uses auto, which decides from
// samples as sessions end; 0 otherwise. The metrics take theirs on demand
// (Current): a proxy without auto that nobody scrapes reads nothing.
func Interval(cfg *config.Config) time.Duration {
	if cfg.UsesAuto() {
		return max(cfg.Auto.SampleInterval, MinAutoInterval)
	}
	return 0
}

// MaxAge is the oldest sample Current serves for cfg:
// admin.kernel_sample_interval (its default when a Config built in code
// leaves it unset); 0 when admin.listen is "off" and no metrics ask.
func MaxAge(cfg *config.Config) time.Duration {
	if cfg.Admin.Listen == "off" {
		return 0
	}
	if k := cfg.Admin.KernelSample; k > 0 {
		return k
	}
	return config.Defaults().Admin.KernelSample
}

// Interval returns how often Run samples; 0: only at its start and after
// an Update.
func (w *Watcher) Interval() time.Duration { return time.Duration(w.interval.Load()) }

// Targets returns the current targets.
func (w *Watcher) Targets() *Targets { return w.targets.Load() }

// Latest returns the last sample, or nil before the first. The Sample is
// shared: read it, never change it.
func (w *Watcher) Latest() *Sample { return w.latest.Load() }

// Subscribe calls f with each new sample, on the goroutine that took it,
// one sample at a time, until cancel is called. f must be quick and must
// not call the Watcher's Refresh, Subscribe or cancel.
func (w *Watcher) Subscribe(f func(*Sample)) (cancel func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.nextSub
	w.nextSub++
	w.subs[id] = f
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs, id)
	}
}

// Refresh takes a sample now, on the caller's goroutine, publishes it
// (Latest, subscribers) and returns it, as Run and Current do; a user may call it
// once to have figures before its first decision.
func (w *Watcher) Refresh() *Sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refreshLocked()
}

// Current returns a sample no older than the maximum age
// (admin.kernel_sample_interval) of the current targets: the latest, or
// one taken now on the caller's goroutine and published as Refresh does.
// A sample is older than that when taking one costs much: as Run's, a
// sample that cost d of CPU is served for at least 100 × d. Concurrent
// callers wait for one sample and share it.
func (w *Watcher) Current() *Sample {
	if s := w.fresh(); s != nil {
		return s
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.fresh(); s != nil {
		return s
	}
	s, _ := w.timedRefreshLocked()
	return s
}

// timedRefreshLocked is refreshLocked, its CPU kept as the cost that
// spaces the next sample (Run) or keeps this one served (Current).
func (w *Watcher) timedRefreshLocked() (*Sample, time.Duration) {
	var s *Sample
	took := cpuOf(func() { s = w.refreshLocked() })
	w.cost.Store(int64(took))
	return s, took
}

// fresh returns the latest sample if Current may serve it, nil if not.
func (w *Watcher) fresh() *Sample {
	s := w.Latest()
	if s == nil || w.stale.Load() {
		return nil
	}
	if time.Since(s.At) < nextSample(time.Duration(w.maxAge.Load()), time.Duration(w.cost.Load())) {
		return s
	}
	return nil
}

func (w *Watcher) refreshLocked() *Sample {
	w.stale.Store(false) // before the targets are read: an Update after them marks it again
	s := w.kernel.Read(w.targets.Load())
	w.seq++
	s.Seq, s.At = w.seq, time.Now()
	w.latest.Store(&s)
	w.logLocked(s.Err)
	for _, f := range w.subs {
		f(&s)
	}
	return &s
}

// logLocked says when figures stop or start being read, not at every
// sample. Off Linux no figure is expected.
func (w *Watcher) logLocked(err error) {
	switch {
	case err != nil && !w.failing && kernelFigures:
		w.log.Warn("kernel TIME-WAIT figures incomplete", zap.Error(err))
	case err != nil:
		w.log.Debug("kernel TIME-WAIT figures incomplete", zap.Error(err))
	case w.failing:
		w.log.Info("kernel TIME-WAIT figures read again")
	}
	w.failing = err != nil
}

// Run samples at once when anyone needs samples (so that figures the
// kernel does not give are logged at start), then every Interval (longer when a sample costs much:
// see sampleShare) until ctx ends; an Update takes effect at once, with a
// sample. Run is the one sampler goroutine of a Watcher: a second Run
// while one runs returns at once.
func (w *Watcher) Run(ctx context.Context) {
	if !w.running.CompareAndSwap(false, true) {
		w.log.Warn("twwatch: Run called while running; the second returns")
		return
	}
	defer w.running.Store(false)
	for {
		every := w.Interval()
		if every > 0 || w.maxAge.Load() > 0 {
			w.mu.Lock()
			_, took := w.timedRefreshLocked()
			w.mu.Unlock()
			if every > 0 {
				every = nextSample(every, took)
			}
		}
		if !w.wait(ctx, every) {
			return
		}
	}
}

// sampleShare bounds what sampling may cost: a sample that took d of CPU
// waits at least sampleShare × d for the next, so the watcher never takes
// more than 1 % of one core. Listing TIME-WAIT sockets walks the kernel's whole
// socket table (every namespace's), tens of milliseconds on a host with
// 100,000 of them; between samples auto counts the TIME-WAITs the proxy
// places itself.
const sampleShare = 100

// nextSample is the wait before the next sample: every, or longer when
// the last one took long.
func nextSample(every, took time.Duration) time.Duration {
	return max(every, sampleShare*took)
}

// wait waits for the next sample: every (forever when 0) or an Update. It
// returns false when ctx ended.
func (w *Watcher) wait(ctx context.Context, every time.Duration) bool {
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTimer(every)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-w.changed:
	case <-tick:
	}
	return true
}
