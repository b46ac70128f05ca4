//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"
)

// result is one candidate's figures; NaN where a figure does not apply or
// its load failed.
type result struct {
	name      string
	err       error   // the first failure, if any
	shortRate float64 // connections/s, one request each
	shortErrs float64 // errors during that load
	cpuPer10k float64 // proxy CPU seconds per 10,000 short connections (ab)
	kaRate    float64 // keep-alive requests/s
	kaCPU     float64 // proxy CPU µs per keep-alive request (ab -k)
	bulk1     float64 // MB/s, one stream
	bulk64    float64 // MB/s, 64 streams
	p50, p99  float64 // µs at the fixed rate
	idleKiB   float64 // proxy RSS per idle proxied connection
	idleFDs   float64 // proxy descriptors per idle proxied connection
	tw        float64 // the most TIME-WAIT sockets in its namespace before one of its loads
}

func newResult(name string) result {
	n := math.NaN()
	return result{name: name, shortRate: n, shortErrs: n, cpuPer10k: n, kaRate: n, kaCPU: n, bulk1: n, bulk64: n, p50: n, p99: n, idleKiB: n, idleFDs: n, tw: n}
}

func (r *result) fail(what string, err error) {
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%s: %w", what, err)
	}
}

// started is a candidate running for the whole run.
type started struct {
	target
	name   string
	check  func(*env) error // the candidate's, or nil
	rounds []result
	first  result // start failure and idle figures
}

// startAll starts every candidate (with s.isolate, each in a namespace
// of its own with a backend of its own) and measures idle memory on each
// fresh process, before any load leaves heap behind that would hide the
// growth.
func startAll(ctx context.Context, e *env, s settings, log io.Writer) []*started {
	var out []*started
	all := candidates
	if s.prototype {
		all = append(slices.Clip(all), prototypeCandidates...)
	}
	for _, c := range all {
		st := &started{name: c.name, check: c.check, first: newResult(c.name)}
		out = append(out, st)
		addr, p, err := e.start(c, s.isolate)
		if err != nil {
			st.first.fail("start", err)
			fmt.Fprintf(log, "%s: %v\n", c.name, err)
			continue
		}
		st.target = target{dir: e.dir, addr: addr, p: p, ns: e.ns}
		if p == nil || ctx.Err() != nil {
			continue
		}
		time.Sleep(300 * time.Millisecond) // let the warm pool fill
		st.first.idleKiB, st.first.idleFDs, err = idleMemory(ctx, e.ns, addr, p.pid(), s.idle)
		st.first.fail("idle connections", err)
	}
	// The idle sessions end by their close policies before the loads begin
	// (the next candidate's idle figure is its memory, which the CPU they
	// take meanwhile does not change).
	time.Sleep(1500 * time.Millisecond)
	return out
}

// start starts c; with isolate, first a namespace of its own (named for
// this process, so that runs never share one) and a backend in it.
func (e *env) start(c candidate, isolate bool) (string, *proc, error) {
	if isolate {
		i := len(e.spaces)
		n, err := newNetns(fmt.Sprintf("cpbench%d-%d", os.Getpid(), i))
		if err != nil {
			return "", nil, err
		}
		e.spaces = append(e.spaces, n)
		e.ns = n
		p, err := e.startBackend(fmt.Sprintf("backend-%d", i))
		if err != nil {
			return "", nil, err
		}
		n.pid = p.pid()
	}
	return c.start(e)
}

// round runs every load once against st.
func (st *started) round(ctx context.Context, s settings) {
	r := newResult(st.name)
	steps := []func(context.Context, target, settings, *result) error{shortLoad, cpuLoad, keepAliveLoad, kaCPULoad, bulkLoad, latencyLoad}
	names := []string{"short connections", "CPU per short connection", "keep-alive", "CPU per keep-alive request", "bulk", "latency"}
	for i, step := range steps {
		if ctx.Err() != nil {
			break
		}
		if tw, err := st.ns.timeWait(); err == nil && (math.IsNaN(r.tw) || float64(tw) > r.tw) {
			r.tw = float64(tw)
		}
		r.fail(names[i], step(ctx, st.target, s, &r))
		if p := st.target.p; p != nil && p.exited() {
			// Whatever answered its loads, it was not the candidate:
			// nothing of this round counts.
			r = newResult(st.name)
			r.fail(names[i], fmt.Errorf("%s exited (see its log in the scratch directory, -keep)", p.name))
			break
		}
	}
	st.rounds = append(st.rounds, r)
}

// result is the median of the rounds' figures, beside the idle figures.
func (st *started) result() result {
	r := st.first
	for i, f := range r.figures() {
		var vs []float64
		for _, rr := range st.rounds {
			if v := *rr.figures()[i]; !math.IsNaN(v) {
				vs = append(vs, v)
			}
		}
		if len(vs) > 0 {
			slices.Sort(vs)
			*f = vs[len(vs)/2]
		}
	}
	for _, rr := range st.rounds {
		r.fail("round", rr.err)
	}
	return r
}

// figures are the fields measured in rounds.
func (r *result) figures() []*float64 {
	return []*float64{&r.shortRate, &r.shortErrs, &r.cpuPer10k, &r.kaRate, &r.kaCPU, &r.bulk1, &r.bulk64, &r.p50, &r.p99, &r.tw}
}

// target is where a load goes, the process it measures (nil: direct)
// and the namespace both are in (nil: the bench's).
type target struct {
	dir, addr string
	p         *proc
	ns        *netns
}

func shortLoad(ctx context.Context, t target, s settings, r *result) error {
	w, err := wrk(ctx, t.ns, t.dir, t.addr, smallPath, s.shortConc, s.duration, true)
	if err != nil {
		return err
	}
	r.shortRate, r.shortErrs = w.rate(), float64(w.errors())
	return nil
}

// cpuLoad measures the proxy's CPU (its process tree's user and system
// time) per short connection over a fixed count of them (ab): the
// figure repeats within a few per cent from round to round, where over
// wrk's timed load, whose intensity (and so the proxies' batching)
// varies, it moved by a quarter.
func cpuLoad(ctx context.Context, t target, s settings, r *result) error {
	cpu, err := abCPU(ctx, t, s.cpuConns, s.shortConc, false)
	r.cpuPer10k = cpu * 1e4
	return err
}

// kaCPULoad measures the proxy's CPU per keep-alive request over a fixed
// count of them (ab -k over kaConc connections), for the reason cpuLoad
// does: wrk's keep-alive rate moves with the load's intensity.
func kaCPULoad(ctx context.Context, t target, s settings, r *result) error {
	cpu, err := abCPU(ctx, t, s.kaCPUReqs, s.kaConc, true)
	r.kaCPU = cpu * 1e6
	return err
}

// abCPU runs ab (n requests over c connections, keepAlive: -k) against t
// and returns the proxy's CPU seconds per completed request: NaN for
// direct (no proxy) or when none completed. Failed requests are an error,
// the figure kept.
func abCPU(ctx context.Context, t target, n, c int, keepAlive bool) (perRequest float64, err error) {
	perRequest = math.NaN()
	if t.p == nil {
		return perRequest, nil
	}
	before, err := treeUsage(t.p.pid())
	if err != nil {
		return perRequest, err
	}
	a, err := ab(ctx, t.ns, t.addr, smallPath, n, c, keepAlive)
	if err != nil {
		return perRequest, err
	}
	after, err := treeUsage(t.p.pid())
	if err != nil {
		return perRequest, err
	}
	if a.complete == 0 {
		return perRequest, fmt.Errorf("ab: no request of %d completed", n)
	}
	perRequest = (after.cpu - before.cpu).Seconds() / float64(a.complete)
	if a.failed+a.non2xx > 0 {
		return perRequest, fmt.Errorf("ab: %d of %d requests failed, %d not 2xx", a.failed, a.complete, a.non2xx)
	}
	return perRequest, nil
}

func keepAliveLoad(ctx context.Context, t target, s settings, r *result) error {
	w, err := wrk(ctx, t.ns, t.dir, t.addr, smallPath, s.kaConc, s.duration, false)
	if err != nil {
		return err
	}
	r.kaRate = w.rate()
	if w.errors() > 0 {
		return fmt.Errorf("%d errors", w.errors())
	}
	return nil
}

func bulkLoad(ctx context.Context, t target, s settings, r *result) error {
	var err1, err64 error
	r.bulk1, err1 = bulk(ctx, t.ns, t.addr, 1, s.duration)
	r.bulk64, err64 = bulk(ctx, t.ns, t.addr, 64, s.duration)
	if err1 != nil {
		return err1
	}
	return err64
}

func latencyLoad(ctx context.Context, t target, s settings, r *result) error {
	p50, p99, err := latencies(ctx, t.ns, t.addr, s.rate, s.rateConns, s.duration)
	r.p50, r.p99 = float64(p50.Microseconds()), float64(p99.Microseconds())
	return err
}

// idleMemory opens n idle proxied connections and returns the growth of
// the proxy's RSS (its whole process tree) per connection, in KiB, and of
// its open descriptors.
func idleMemory(ctx context.Context, ns *netns, addr string, pid, n int) (kib, fds float64, err error) {
	before, err := treeUsage(pid)
	if err != nil {
		return math.NaN(), math.NaN(), err
	}
	conns, err := idleConns(ctx, ns, addr, n)
	defer closeAll(conns)
	if err != nil {
		return math.NaN(), math.NaN(), err
	}
	time.Sleep(time.Second) // let the proxy finish setting up the last sessions
	after, err := treeUsage(pid)
	if err != nil {
		return math.NaN(), math.NaN(), err
	}
	return float64(after.rss-before.rss) / 1024 / float64(n), float64(after.fds-before.fds) / float64(n), nil
}
