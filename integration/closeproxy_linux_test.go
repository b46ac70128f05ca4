package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// Closeproxy is a running `closeproxy run`, with its log parsed as it
// arrives.
type Closeproxy struct {
	*Proc
	ConfigPath string
	Listen     []netip.AddrPort // the [[listener]] addresses, as configured
	log        *recordLog
	topo       *Topology
	ns         string // the namespace it runs in
}

// Record is one JSON log line: flat keys as zap writes them ("msg",
// "outcome", "front.time_wait", …); numbers decode as float64.
type Record map[string]any

// Str is the string at key, "" if absent or not a string.
func (r Record) Str(key string) string {
	s, _ := r[key].(string)
	return s
}

// Num is the number at key, 0 if absent or not a number.
func (r Record) Num(key string) float64 {
	f, _ := r[key].(float64)
	return f
}

// startCloseproxy builds closeproxy (once per test binary), writes
// configTOML to a temp file and runs `closeproxy run -config FILE` in
// namespace ns, waiting until every configured listener listens, and the
// admin endpoint too where the config names its address. Listener
// addresses need fixed ports: inside a fresh namespace nothing else can hold
// them, and the harness has to know where to look.
//
// Cleanup stops it: SIGTERM, then SIGKILL after stopTimeout.
func startCloseproxy(t testing.TB, topo *Topology, ns, configTOML string) *Closeproxy {
	t.Helper()
	return startCloseproxyWrapped(t, topo, ns, configTOML)
}

// startCloseproxyWrapped is startCloseproxy with the binary run under
// wrapper (which must exec it in place, as prlimit does, so the PID is
// closeproxy's own).
func startCloseproxyWrapped(t testing.TB, topo *Topology, ns, configTOML string, wrapper ...string) *Closeproxy {
	t.Helper()
	bin := buildBinary(t, "./cmd/closeproxy")
	listen, admin := configAddrs(t, configTOML)
	cp := &Closeproxy{
		ConfigPath: filepath.Join(t.TempDir(), "closeproxy.toml"),
		Listen:     listen,
		log:        newRecordLog(),
		topo:       topo,
		ns:         ns,
	}
	writeCloseproxyConfig(t, cp.ConfigPath, configTOML)
	cmd := topo.Cmd(ns, append(wrapper, bin, "run", "-config", cp.ConfigPath)...)
	cmd.Stderr = cp.log
	cp.Proc = startCmd(t, "closeproxy@"+ns, cmd)
	for _, addr := range cp.Listen {
		waitListening(t, topo, ns, addr, cp.Proc)
	}
	if admin.IsValid() {
		waitListening(t, topo, ns, admin, cp.Proc)
	}
	return cp
}

// configAddrs reads the listen addresses out of a closeproxy config, and
// the [admin] listen address where it is a fixed ip:port (not "off", not
// left to the default).
func configAddrs(t testing.TB, configTOML string) (listen []netip.AddrPort, admin netip.AddrPort) {
	t.Helper()
	var cfg struct {
		Listener []struct{ Listen string } `toml:"listener"`
		Admin    struct{ Listen string }   `toml:"admin"`
	}
	if _, err := toml.Decode(configTOML, &cfg); err != nil {
		t.Fatalf("closeproxy config: %v", err)
	}
	for _, l := range cfg.Listener {
		a, err := netip.ParseAddrPort(l.Listen)
		if err != nil || a.Port() == 0 {
			t.Fatalf("closeproxy config: listen %q: want a fixed ip:port (%v)", l.Listen, err)
		}
		listen = append(listen, a)
	}
	if a, err := netip.ParseAddrPort(cfg.Admin.Listen); err == nil && a.Port() != 0 {
		admin = a
	}
	return listen, admin
}

// Rewrite replaces the configuration file with configTOML (for a reload:
// send SIGHUP after). Cp.Listen is not changed; call waitListening for new
// addresses.
func (cp *Closeproxy) Rewrite(t testing.TB, configTOML string) {
	t.Helper()
	writeCloseproxyConfig(t, cp.ConfigPath, configTOML)
}

// testRelay is CLOSEPROXY_TEST_RELAY ("loop" or "goroutines"): every
// closeproxy the tests run relays tcp sessions that way.
// writeCloseproxyConfig, the one way a test writes a closeproxy
// configuration file (startCloseproxy, Rewrite, the README's
// configurations, the files run, check and doctor read), puts that relay
// at its top unless the text sets relay itself or is not TOML at all.
// Unset, every file is written as given: relay's default, loop.
var testRelay = func() string {
	switch r := os.Getenv("CLOSEPROXY_TEST_RELAY"); r {
	case "loop", "goroutines":
		return r
	}
	return ""
}()

// relayLoop says the tests' closeproxies relay on the event loops.
var relayLoop = testRelay != "goroutines"

// writeCloseproxyConfig writes the closeproxy configuration configTOML to
// path; see testRelay.
func writeCloseproxyConfig(t testing.TB, path, configTOML string) {
	t.Helper()
	if testRelay != "" {
		var top struct {
			Relay *string `toml:"relay"`
		}
		if _, err := toml.Decode(configTOML, &top); err == nil && top.Relay == nil {
			configTOML = "relay = \"" + testRelay + "\"\n" + configTOML
		}
	}
	writeFile(t, path, []byte(configTOML))
}

// WaitLog waits until a log line with msg appears after the first `after`
// lines and returns it with its index in Logs().
func (cp *Closeproxy) WaitLog(t testing.TB, msg string, after int, timeout time.Duration) (Record, int) {
	t.Helper()
	return cp.WaitLogMatch(t, fmt.Sprintf("%q", msg), func(r Record) bool { return r.Str("msg") == msg }, after, timeout)
}

// WaitLogMatch waits until a log line for which match holds appears after
// the first `after` lines and returns it with its index in Logs(); what
// names the line in a failure. The reader signals each new line.
func (cp *Closeproxy) WaitLogMatch(t testing.TB, what string, match func(Record) bool, after int, timeout time.Duration) (Record, int) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		all, changed := cp.log.allLines()
		for i := after; i < len(all); i++ {
			if match(all[i]) {
				return all[i], i
			}
		}
		select {
		case <-changed:
		case <-cp.done:
			t.Fatalf("closeproxy exited before logging %s: %v\n%s", what, cp.waitErr, cp.Output())
		case <-timer.C:
			t.Fatalf("closeproxy: no log line %s after %v", what, timeout)
		}
	}
}

// Logs returns every JSON log line so far.
func (cp *Closeproxy) Logs() []Record { return cp.log.lines(false) }

// Records returns the teardown records so far (msg == "teardown").
func (cp *Closeproxy) Records() []Record { return cp.log.lines(true) }

// WaitRecords waits until at least n teardown records were logged and
// returns them all. A record is logged after both legs closed, so it may
// trail the client's view of the connection; the reader signals each new
// one, and the timeout bounds the wait.
func (cp *Closeproxy) WaitRecords(t testing.TB, n int, timeout time.Duration) []Record {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		recs, changed := cp.log.teardowns()
		if len(recs) >= n {
			return recs
		}
		select {
		case <-changed:
		case <-cp.done:
			if recs, _ := cp.log.teardowns(); len(recs) < n {
				t.Fatalf("closeproxy exited after %d of %d teardown records: %v\n%s", len(recs), n, cp.waitErr, cp.Output())
			}
		case <-timer.C:
			t.Fatalf("closeproxy: %d of %d teardown records after %v", len(recs), n, timeout)
		}
	}
}

// recordLog parses closeproxy's stderr line by line as the process writes
// it; exec's copying goroutine calls Write, the test reads.
type recordLog struct {
	mu      sync.Mutex
	partial []byte
	all     []Record
	records []Record      // msg == "teardown"
	changed chan struct{} // closed and replaced on each new teardown record
	anyLine chan struct{} // closed and replaced on each new JSON line
}

func newRecordLog() *recordLog {
	return &recordLog{changed: make(chan struct{}), anyLine: make(chan struct{})}
}

func (l *recordLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.addLocked(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
}

func (l *recordLog) addLocked(line []byte) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return // plain text (a config error) stays visible in Output

	}
	l.all = append(l.all, r)
	close(l.anyLine)
	l.anyLine = make(chan struct{})
	if r.Str("msg") == "teardown" {
		l.records = append(l.records, r)
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *recordLog) lines(teardownOnly bool) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	if teardownOnly {
		return append([]Record(nil), l.records...)
	}
	return append([]Record(nil), l.all...)
}

// teardowns returns the records so far and a channel closed on the next.
func (l *recordLog) teardowns() ([]Record, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), l.records...), l.changed
}

// allLines returns every line so far and a channel closed on the next.
func (l *recordLog) allLines() ([]Record, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), l.all...), l.anyLine
}
