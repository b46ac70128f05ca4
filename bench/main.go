//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the run's fixed loads.
type settings struct {
	duration    time.Duration // each timed load
	shortConc   int           // concurrent connections, short-connection loads
	cpuConns    int           // connections of the CPU-per-connection load (ab)
	kaConc      int           // wrk connections, keep-alive load
	kaCPUReqs   int           // requests of the CPU-per-keep-alive-request load (ab -k, kaConc connections)
	rate        int           // requests/s of the latency load
	rateConns   int           // connections it spreads over
	idleWant    int           // idle connections for the memory figure
	idle        int           // what the file limit allows
	rounds      int           // each load runs once a round; the table has medians
	quick, keep bool
	proxyCPUs   string // taskset CPU list for every proxy; "": not pinned
	loadCPUs    string // CPU list for the bench, its clients, wrk and the backend; "": not pinned
	prototype   bool   // add the event-loop prototype's two modes (internal/evloop) as candidates
	isolate     bool   // each candidate, its backend and its loads in a network namespace of their own
	teardown    string // closeproxy's log.teardown: "all" or "errors"
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := settings{shortConc: 50, cpuConns: 20000, kaConc: 64, kaCPUReqs: 60000, rate: 1000, rateConns: 10, idleWant: 10000}
	fs.DurationVar(&s.duration, "duration", 2*time.Second, "length of each timed load")
	fs.IntVar(&s.rounds, "rounds", 3, "rounds over all candidates; each figure is the median")
	fs.BoolVar(&s.quick, "quick", false, "about 50 s: one round of 1 s loads, 5,000 connections for the CPU figure, 1,000 idle connections")
	fs.BoolVar(&s.keep, "keep", false, "keep the scratch directory (configs and logs)")
	fs.StringVar(&s.proxyCPUs, "proxy-cpus", "", "run every proxy on these CPUs only (a taskset list, e.g. 0 or 0-1): the short-connection rate against cores")
	fs.StringVar(&s.loadCPUs, "load-cpus", "", "run the load generators and the nginx backend on these CPUs only (needs -proxy-cpus, e.g. -proxy-cpus 1 -load-cpus 0): each proxy's CPU per connection apart from the load's")
	fs.BoolVar(&s.isolate, "netns", true, "run each candidate with a backend of its own in a network namespace of its own, where its loads run too (needs root and ip(8); without, all share this one): no candidate meets another's TIME-WAIT sockets")
	fs.BoolVar(&s.prototype, "prototype", false, "add two columns for the event-loop prototype (internal/evloop: accept, dial and relay on one loop, no policy, records or kernel readings; and its http1 mode, exchanges on the loop): what a bare Go event loop costs here")
	fs.StringVar(&s.teardown, "teardown", "all", `closeproxy's log.teardown: "all" (its default: a record for every connection, written to its log file) or "errors" (records of failures only; HAProxy and nginx here log nothing)`)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0 // -h: the usage, as closeproxy's commands
	} else if err != nil {
		return 2
	}
	if s.teardown != "all" && s.teardown != "errors" {
		fmt.Fprintf(stderr, "bench: -teardown %q: want \"all\" or \"errors\"\n", s.teardown)
		return 2
	}
	if s.loadCPUs != "" && s.proxyCPUs == "" {
		fmt.Fprintln(stderr, "bench: -load-cpus needs -proxy-cpus: the proxies would run on the load's CPUs")
		return 2
	}
	for name, list := range map[string]string{"-proxy-cpus": s.proxyCPUs, "-load-cpus": s.loadCPUs} {
		if _, err := parseCPUs(list); list != "" && err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", name, err)
			return 2
		}
	}
	if s.quick {
		s.duration, s.idleWant, s.rounds, s.cpuConns, s.kaCPUReqs = time.Second, 1000, 1, 5000, 10000
	}
	if s.isolate && !canIsolate() {
		fmt.Fprintln(stderr, "bench: not root or no ip(8): every candidate runs in this network namespace (-netns=false)")
		s.isolate = false
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, s, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, s settings, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "closeproxy-bench-")
	if err != nil {
		return err
	}
	if s.keep {
		fmt.Fprintln(stderr, "scratch directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if s.loadCPUs != "" {
		if err := pinSelf(s.loadCPUs); err != nil {
			return err
		}
	}
	e := &env{dir: dir, procs: &procs{}, proxyCPUs: s.proxyCPUs, teardown: s.teardown}
	defer func() {
		e.procs.stopAll() // first: a namespace is gone once its last process is
		for _, n := range e.spaces {
			n.remove()
		}
	}()
	e.nofile = raiseNoFile(200000)
	s.idle = min(s.idleWant, int(e.nofile-1000)/2) // every candidate: 2 sockets a session
	if e.closeproxy, err = build(ctx, dir, "closeproxy", "./cmd/closeproxy"); err != nil {
		return err
	}
	if s.prototype {
		if e.prototype, err = build(ctx, dir, "evrun", "./internal/evloop/evrun"); err != nil {
			return err
		}
	}
	if err := e.writeBodies(); err != nil {
		return err
	}
	if !s.isolate {
		if _, err := e.startBackend("backend"); err != nil {
			return err
		}
	}
	all := startAll(ctx, e, s, stderr)
	for i := range s.rounds {
		// Each round starts one candidate further on, so that no candidate
		// is always measured right after the same neighbour's loads (and,
		// without -netns, the TIME-WAIT sockets they leave on the host).
		for j := range all {
			st := all[(i+j)%len(all)]
			if st.first.err != nil && st.addr == "" {
				continue
			}
			fmt.Fprintf(stderr, "round %d/%d: %s\n", i+1, s.rounds, st.name)
			st.round(ctx, s)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	var results []result
	for _, st := range all {
		r := st.result()
		if st.check == nil || st.addr == "" {
		} else if err := st.check(e); err != nil { // said even after a failed load
			r.err = errors.Join(r.err, fmt.Errorf("check: %w", err))
		}
		results = append(results, r)
	}
	printReport(stdout, s, results)
	return nil
}

// raiseNoFile sets RLIMIT_NOFILE (soft and hard) to want, for the bench
// and every process it starts; without privilege it raises the soft limit
// to the hard one. It returns the limit in force.
func raiseNoFile(want uint64) uint64 {
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Max < want && unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}) == nil {
		return want
	}
	lim.Cur = lim.Max
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// build builds the package pkg of this module into dir as name.
func build(ctx context.Context, dir, name, pkg string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", errors.New("run the bench inside the closeproxy module (go run ./bench)")
	}
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w: %s", name, err, out)
	}
	return bin, nil
}

// machine says what the figures came from.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d cores, %s, Linux %s, %s", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), runtime.Version())
}
