package twwatch

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func autoLeg() config.Close { return config.Close{TimeWait: policy.TargetAuto} }

func TestInterval(t *testing.T) {
	cases := []struct {
		name   string
		cfg    config.Config
		every  time.Duration // Run's period
		maxAge time.Duration // Current's
	}{
		{"metrics only, kernel_sample_interval unset: on demand, its default", config.Config{}, 0, time.Second},
		{"metrics only: on demand", config.Config{Admin: config.Admin{KernelSample: 10 * time.Millisecond}}, 0, 10 * time.Millisecond},
		{"auto and metrics", config.Config{
			Admin: config.Admin{KernelSample: time.Second}, Auto: config.Auto{SampleInterval: 250 * time.Millisecond},
			Listeners: []config.Listener{{Close: autoLeg()}}}, 250 * time.Millisecond, time.Second},
		{"auto slower than the metrics: each its own", config.Config{
			Admin: config.Admin{KernelSample: time.Second}, Auto: config.Auto{SampleInterval: 5 * time.Second},
			Backends: []config.Backend{{Close: autoLeg()}}}, 5 * time.Second, time.Second},
		{"auto below its floor", config.Config{
			Admin: config.Admin{Listen: "off"}, Auto: config.Auto{SampleInterval: 10 * time.Millisecond},
			Backends: []config.Backend{{Close: autoLeg()}}}, MinAutoInterval, 0},
		{"admin off, auto only", config.Config{
			Admin: config.Admin{Listen: "off"}, Auto: config.Auto{SampleInterval: 2 * time.Second},
			Listeners: []config.Listener{{Close: autoLeg()}}}, 2 * time.Second, 0},
		{"admin off, no auto: no one needs samples", config.Config{Admin: config.Admin{Listen: "off"}}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Interval(&tc.cfg); got != tc.every {
				t.Errorf("Interval: %v, want %v", got, tc.every)
			}
			if got := MaxAge(&tc.cfg); got != tc.maxAge {
				t.Errorf("MaxAge: %v, want %v", got, tc.maxAge)
			}
		})
	}
}

// run runs w until the test ends and waits for Run to return.
func run(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// subscribe delivers each sample on a channel.
func subscribe(t *testing.T, w *Watcher) <-chan *Sample {
	ch := make(chan *Sample, 100)
	t.Cleanup(w.Subscribe(func(s *Sample) { ch <- s }))
	return ch
}

func next(t *testing.T, ch <-chan *Sample) *Sample {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no sample within 5s")
		return nil
	}
}

func backendAt(addr string) config.Backend { return config.Backend{Name: "app", Address: addr} }

func TestRunSamplesEveryInterval(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{Listen: "off"}, Auto: config.Auto{SampleInterval: MinAutoInterval},
		Backends: []config.Backend{backendAt("10.0.0.2:80"), {Name: "b", Address: "10.0.0.3:80", Close: autoLeg()}}}
	w := New(cfg, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	if w.Latest() != nil {
		t.Fatal("a sample before Run")
	}
	ch := subscribe(t, w)
	run(t, w)
	first, second := next(t, ch), next(t, ch)
	if first.Seq != 1 || second.Seq != 2 || w.Latest().Seq < 2 {
		t.Errorf("samples %d, %d, latest %d; want 1, 2, ≥ 2", first.Seq, second.Seq, w.Latest().Seq)
	}
	if first.Host != have(1234) || !first.Back.OK {
		t.Errorf("first sample: host %+v back %+v", first.Host, first.Back)
	}
}

// A reload's targets are sampled at once, not an interval later.
func TestUpdateTargets(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.3:80")
	cfg := &config.Config{Admin: config.Admin{KernelSample: time.Hour}, Backends: []config.Backend{backendAt(a.String())}}
	w := New(cfg, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	ch := subscribe(t, w)
	run(t, w)
	if _, ok := next(t, ch).Toward(a); !ok {
		t.Fatalf("first sample: %v not a destination", a)
	}
	reloaded := &config.Config{Admin: config.Admin{KernelSample: time.Hour},
		Listeners: []config.Listener{{Listen: ":8080"}}, Backends: []config.Backend{backendAt(b.String())}}
	w.Update(reloaded)
	s := next(t, ch)
	if _, ok := s.Toward(b); !ok || !s.Front.OK {
		t.Errorf("after Update: %v a destination %v, front read %v; want both", b, ok, s.Front.OK)
	}
	if _, ok := s.Toward(a); ok {
		t.Errorf("after Update: %v still a destination", a)
	}
	if got := w.Targets().FrontPorts(); len(got) != 1 || got[0] != 8080 {
		t.Errorf("targets' front ports %v, want [8080]", got)
	}
}

// With no user, Run takes no sample until a reload brings one.
func TestRunIdleUntilNeeded(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{Listen: "off"}}
	w := New(cfg, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	ch := subscribe(t, w)
	run(t, w)
	select {
	case s := <-ch:
		t.Fatalf("sample %d with no user", s.Seq)
	case <-time.After(50 * time.Millisecond): // outlasts a sampling that should not happen
	}
	w.Update(&config.Config{Admin: config.Admin{Listen: "off"}, Listeners: []config.Listener{{Close: autoLeg()}}})
	if s := next(t, ch); s.Seq != 1 || w.Interval() != MinAutoInterval {
		t.Errorf("sample %d, interval %v after auto came in", s.Seq, w.Interval())
	}
}

// Without auto, Run samples once at its start (figures missing are
// logged then) and after each Update; the metrics take theirs on demand.
func TestRunMetricsOnlySamplesOnce(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{KernelSample: 10 * time.Millisecond}}
	w := New(cfg, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	ch := subscribe(t, w)
	run(t, w)
	if s := next(t, ch); s.Seq != 1 {
		t.Fatalf("first sample %d, want 1", s.Seq)
	}
	select {
	case s := <-ch:
		t.Fatalf("sample %d without auto and without a scrape", s.Seq)
	case <-time.After(100 * time.Millisecond): // ten kernel_sample_intervals
	}
	w.Update(cfg)
	if s := next(t, ch); s.Seq != 2 {
		t.Errorf("after Update: sample %d, want 2", s.Seq)
	}
}

// aged makes w's latest sample look taken by ago.
func aged(w *Watcher, by time.Duration) {
	s := *w.Latest()
	s.At = s.At.Add(-by)
	w.latest.Store(&s)
}

// Current samples when the latest is older than the maximum age or its
// targets changed, and serves the latest otherwise.
func TestCurrentSamplesOnDemand(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("10.0.0.3:80")
	cfg := &config.Config{Admin: config.Admin{KernelSample: time.Minute}, Backends: []config.Backend{backendAt(a.String())}}
	w := New(cfg, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	first := w.Current()
	if first.Seq != 1 || first.Host != have(1234) {
		t.Fatalf("first Current: sample %d, host %+v; want 1, 1234", first.Seq, first.Host)
	}
	if s := w.Current(); s != first {
		t.Errorf("Current within the maximum age: sample %d, want the latest (1)", s.Seq)
	}
	aged(w, 2*time.Minute)
	if s := w.Current(); s.Seq != 2 {
		t.Errorf("Current past the maximum age: sample %d, want a new one (2)", s.Seq)
	}
	w.Update(&config.Config{Admin: config.Admin{KernelSample: time.Minute}, Backends: []config.Backend{backendAt(b.String())}})
	s := w.Current()
	if _, ok := s.Toward(b); s.Seq != 3 || !ok {
		t.Errorf("Current after Update: sample %d, %v a destination %v; want 3, true", s.Seq, b, ok)
	}
}

// A sample that cost d of CPU is served for at least 100 × d, however
// short the maximum age: scrapes keep the 1 % bound too.
func TestCurrentKeepsTheCostBound(t *testing.T) {
	w := New(&config.Config{Admin: config.Admin{KernelSample: time.Millisecond}}, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	w.Current()
	w.cost.Store(int64(time.Second)) // as if the walk had taken a second
	aged(w, 10*time.Second)
	if s := w.Current(); s.Seq != 1 {
		t.Errorf("sample %d 10 s after one that cost 1 s, want the latest (1)", s.Seq)
	}
	aged(w, 100*time.Second)
	if s := w.Current(); s.Seq != 2 {
		t.Errorf("sample %d 110 s after one that cost 1 s, want a new one (2)", s.Seq)
	}
}

// Scrapes at once share one sample.
func TestCurrentConcurrentShareOneSample(t *testing.T) {
	w := New(&config.Config{Admin: config.Admin{KernelSample: time.Minute}}, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	seqs := make(chan uint64, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); seqs <- w.Current().Seq }()
	}
	wg.Wait()
	close(seqs)
	for seq := range seqs {
		if seq != 1 {
			t.Errorf("a concurrent Current got sample %d, want all the one sample (1)", seq)
		}
	}
}

// One sampler goroutine: a second Run returns at once; a cancelled
// subscription is not called again.
func TestOneRunAndCancel(t *testing.T) {
	w := New(&config.Config{Admin: config.Admin{KernelSample: time.Hour}}, zaptest.NewLogger(t), WithKernel(stockHost().kernel()))
	ch := subscribe(t, w)
	calls := 0
	cancel := w.Subscribe(func(*Sample) { calls++ })
	run(t, w)
	next(t, ch)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(context.Background()) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a second Run did not return")
	}
	cancel()
	w.Refresh()
	next(t, ch)
	if calls != 1 {
		t.Errorf("cancelled subscriber called %d times, want 1", calls)
	}
}

// Sampling costs at most 1 % of one core: a sample that took 40 ms puts
// the next 4 s away, whatever the interval; a cheap one keeps the interval.
func TestNextSampleBoundsTheCost(t *testing.T) {
	for _, c := range []struct{ every, took, want time.Duration }{
		{250 * time.Millisecond, 200 * time.Microsecond, 250 * time.Millisecond},
		{250 * time.Millisecond, 40 * time.Millisecond, 4 * time.Second},
		{time.Second, 10 * time.Millisecond, time.Second},
		{time.Second, 15 * time.Millisecond, 1500 * time.Millisecond},
	} {
		if got := nextSample(c.every, c.took); got != c.want {
			t.Errorf("every %v, a sample took %v: next in %v, want %v", c.every, c.took, got, c.want)
		}
	}
}
