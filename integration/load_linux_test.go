package integration

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"
)

// LoadOpts are the load client's flags (see internal/loadclient).
type LoadOpts struct {
	Addr        string        // host:port
	Src         string        // local IP to dial from; "" lets the kernel choose
	N, C        int           // connections in all, at once (defaults 100, 10)
	Path        string        // default "/"
	Connection  string        // Connection header; "" sends keep-alive, "-" sends none
	Close       string        // client (default), server, reset, halfclose or halfclose-after
	ExpectBytes int64         // checked when > 0
	SHA256      string        // checked when set
	CloseDelay  time.Duration // pause between the response and the close
	Timeout     time.Duration
	MaxDuration time.Duration // default 20s
}

// LoadResult is the load client's JSON summary.
type LoadResult struct {
	Attempted     int            `json:"attempted"`
	OK            int            `json:"ok"`
	ConnectErrors int            `json:"connect_errors"`
	AddrNotAvail  int            `json:"addr_not_avail"`
	OtherErrors   int            `json:"other_errors"`
	ServerResets  int            `json:"server_resets"`
	Errors        map[string]int `json:"errors"`
	DeadlineHit   bool           `json:"deadline_hit"`
	ElapsedMS     int64          `json:"elapsed_ms"`
}

// runLoad runs the load client in namespace ns until it is done and
// returns its summary. It does not judge the result; the test does.
func runLoad(t testing.TB, topo *Topology, ns string, o LoadOpts) LoadResult {
	t.Helper()
	bin := buildBinary(t, "./integration/internal/loadclient")
	out := topo.Exec(t, ns, append([]string{bin}, o.args()...)...)
	var r LoadResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("load client summary %q: %v", out, err)
	}
	t.Logf("load %s → %s: %+v", ns, o.Addr, r)
	return r
}

// LoadRun is a load client running in the background (startLoad).
type LoadRun struct {
	opts LoadOpts
	ns   string
	done chan struct{}
	out  string
	err  error
}

// startLoad starts the load client in namespace ns and returns at once;
// Wait collects its summary. The client is bounded by o.N and
// o.MaxDuration, and by cmdTimeout; the test's cleanup waits for it.
func startLoad(t testing.TB, topo *Topology, ns string, o LoadOpts) *LoadRun {
	t.Helper()
	bin := buildBinary(t, "./integration/internal/loadclient")
	lr := &LoadRun{opts: o, ns: ns, done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		lr.out, lr.err = topo.run(ns, append([]string{bin}, o.args()...)...)
	}()
	t.Cleanup(func() { <-lr.done })
	return lr
}

// Wait waits for the load client to end and returns its summary.
func (lr *LoadRun) Wait(t testing.TB) LoadResult {
	t.Helper()
	<-lr.done
	if lr.err != nil {
		t.Fatalf("load client in %s: %v", lr.ns, lr.err)
	}
	var r LoadResult
	if err := json.Unmarshal([]byte(lr.out), &r); err != nil {
		t.Fatalf("load client summary %q: %v", lr.out, err)
	}
	t.Logf("load %s → %s: %+v", lr.ns, lr.opts.Addr, r)
	return r
}

func (o LoadOpts) args() []string {
	n, c := or(o.N, 100), or(o.C, 10)
	args := []string{"-addr", o.Addr, "-n", strconv.Itoa(n), "-c", strconv.Itoa(min(c, n))}
	if o.Path != "" {
		args = append(args, "-path", o.Path)
	}
	if o.Src != "" {
		args = append(args, "-src", o.Src)
	}
	switch o.Connection {
	case "":
	case "-":
		args = append(args, "-connection=")
	default:
		args = append(args, "-connection", o.Connection)
	}
	if o.Close != "" {
		args = append(args, "-close", o.Close)
	}
	if o.ExpectBytes > 0 {
		args = append(args, "-expect-bytes", strconv.FormatInt(o.ExpectBytes, 10))
	}
	if o.SHA256 != "" {
		args = append(args, "-sha256", o.SHA256)
	}
	if o.CloseDelay > 0 {
		args = append(args, "-close-delay", o.CloseDelay.String())
	}
	if o.Timeout > 0 {
		args = append(args, "-timeout", o.Timeout.String())
	}
	return append(args, "-max-duration", orDur(o.MaxDuration, 20*time.Second).String())
}

// requireAllOK fails the test unless every connection of r succeeded.
func requireAllOK(t testing.TB, r LoadResult, n int) {
	t.Helper()
	if r.Attempted != n || r.OK != n {
		t.Fatalf("load: %d of %d ok (attempted %d, connect errors %d, other %d): %v",
			r.OK, n, r.Attempted, r.ConnectErrors, r.OtherErrors, r.Errors)
	}
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orDur(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}
