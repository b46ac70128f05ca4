package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/pool"
)

// handedOut holds the ports freePort returned in this test binary: the
// kernel may give a port just closed to the next bind on port 0, and two
// listeners of one configuration on the same port make it invalid.
var handedOut struct {
	sync.Mutex
	ports map[uint16]bool
}

// freePort returns a loopback port nothing listens on now and that it
// never returned before.
func freePort(t *testing.T) uint16 {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
		_ = ln.Close()
		if !handedOut.ports[port] {
			if handedOut.ports == nil {
				handedOut.ports = map[uint16]bool{}
			}
			handedOut.ports[port] = true
			return port
		}
	}
}

func configText(port uint16, backends ...string) string {
	text := fmt.Sprintf("[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:%d\"\nbackend = \"app\"\n", port)
	text += "[[backend]]\nname = \"app\"\nservers = ["
	for i, b := range backends {
		if i > 0 {
			text += ", "
		}
		text += fmt.Sprintf("%q", b)
	}
	return text + "]\n"
}

// One watcher serves the proxy and the admin, and a SIGHUP reload gives it
// the new configuration's targets.
func TestReloadUpdatesWatcherTargets(t *testing.T) {
	p1, p2 := freePort(t), freePort(t)
	path := writeConfig(t, configText(p1, "127.0.0.1:9"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, hup := serveReloading(t, path, cfg)
	if got := p.tw.Targets().FrontPorts(); !slices.Equal(got, []uint16{p1}) {
		t.Fatalf("front ports %v, want [%d]", got, p1)
	}
	if err := os.WriteFile(path, []byte(configText(p2, "127.0.0.1:9", "127.0.0.1:10")), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- os.Interrupt // any signal value: the channel is the SIGHUP's
	wantBack := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:10")}
	// The reload runs on serve's goroutine: poll its effect, with a deadline.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ports, back := p.tw.Targets().FrontPorts(), p.tw.Targets().Backends()
		if slices.Equal(ports, []uint16{p2}) && slices.Equal(back, wantBack) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reload: front ports %v backends %v, want [%d] %v", ports, back, p2, wantBack)
		}
	}
}

// The reload's confirmation is written after the new level applies, at a
// level it lets through: it used to be an info line written before, lost
// whenever the running level was above info.
func TestReloadConfirmedAtEveryLevel(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, `level = "warn"`) })
	confirmed := func(l []logLine) []logLine { return withMsg(l, "configuration reloaded") }
	for i, level := range []string{"error", "info", "warn"} {
		if err := os.WriteFile(d.path, []byte(daemonConfig(d.port, backend, fmt.Sprintf("level = %q", level))), 0o600); err != nil {
			t.Fatal(err)
		}
		d.hup <- os.Interrupt
		got := waitLines(t, "reload confirmations", d.stderr.String, confirmed, i+1)[i]
		if got.str("level") != level { // info, or the least severe level that passes
			t.Errorf("reload to %s: confirmation at level %q, want %q", level, got.str("level"), level)
		}
	}
}

// A reload's confirmation says what it changed, by name: here a backend
// moved to another address and one added that no listener uses, which is
// warned of as check does; a reload of the same file names nothing, and
// a later one is compared with the configuration then in force.
func TestReloadSaysWhatChanged(t *testing.T) {
	backend, moved := loopback.Serve(t, loopback.Echo), loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, "") })
	confirmed := func(l []logLine) []logLine { return withMsg(l, "configuration reloaded") }
	next := daemonConfig(d.port, moved, "") + "[[backend]]\nname = \"spare\"\naddress = \"127.0.0.1:9\"\n"
	want := []string{"backends_added=[spare] backends_changed=[app]", "", "backends_removed=[spare]"}
	for i, text := range []string{next, next, daemonConfig(d.port, moved, "")} {
		if err := os.WriteFile(d.path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		d.hup <- os.Interrupt
		got := waitLines(t, "reload confirmations", d.stderr.String, confirmed, i+1)[i]
		var said []string
		for _, k := range []string{"listeners_added", "listeners_changed", "listeners_removed", "backends_added", "backends_changed", "backends_removed"} {
			if v, ok := got[k]; ok {
				said = append(said, fmt.Sprintf("%s=%v", k, v))
			}
		}
		if strings.Join(said, " ") != want[i] {
			t.Errorf("reload %d: confirmation says %q, want %q", i+1, strings.Join(said, " "), want[i])
		}
	}
	if n := len(withMsg(jsonLines(t, d.stderr.String()), `reload: backend "spare" is used by no listener: nothing dials, checks or waits for it until one names it`)); n != 2 {
		t.Errorf("%d warnings of the unused backend, want 2 (one a reload that has it)", n)
	}
}

// A reload names each changed key it cannot apply; what it applies (here a
// listener's address) goes unmentioned. The warnings go out at the level
// in force before the reload, which here also raises log.level to error,
// and the confirmation names the keys again.
func TestReloadWarnsOfRestartOnlyKeys(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, "") })
	next := daemonConfig(freePort(t), backend, "records = \"stdout\"\nlevel = \"error\"")
	next = strings.Replace(next, `shutdown_timeout = "2s"`, `shutdown_timeout = "3s"`, 1)
	next = strings.Replace(next, `listen = "off"`, `listen = "127.0.0.1:0"`, 1)
	if err := os.WriteFile(d.path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	d.hup <- os.Interrupt
	waitLines(t, "reload confirmation", d.stderr.String, func(l []logLine) []logLine { return withMsg(l, "configuration reloaded") }, 1)
	var warned []string
	for _, l := range jsonLines(t, d.stderr.String()) {
		if l.str("msg") == "configuration reloaded" {
			if got := fmt.Sprint(l["restart_needed"]); got != "[shutdown_timeout log.records admin.listen]" {
				t.Errorf("confirmation's restart_needed %s, want the three keys", got)
			}
		}
		if strings.HasPrefix(l.str("msg"), "reload: ") {
			warned = append(warned, l.str("key"))
			if want := "reload: " + l.str("key") + " changed; it takes effect after a restart"; l.str("msg") != want || l.str("level") != "warn" {
				t.Errorf("line %v, want a warning %q", l, want)
			}
			if l.str("key") == "shutdown_timeout" && (l.str("running") != "2s" || l.str("file") != "3s") {
				t.Errorf("line %v, want the running value 2s and the file's 3s", l)
			}
		}
	}
	if want := "shutdown_timeout log.records admin.listen"; strings.Join(warned, " ") != want {
		t.Errorf("restart-only keys named %q, want %q", warned, want)
	}
}

// A backend whose settings a reload changes gets new pools; its pool
// counters go on from where they were (they used to restart from zero, a
// counter reset Prometheus reads as a process restart).
func TestReloadKeepsPoolCounters(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	port := freePort(t)
	path := writeConfig(t, daemonConfig(port, backend, ""))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, hup := serveReloading(t, path, cfg)
	d := &daemonRun{port: port}
	for i := range 3 {
		d.session(t, fmt.Sprint("hello ", i))
	}
	before := p.srv.PoolStats()["app"]
	if before.Dialed < 3 {
		t.Fatalf("dialed %d before the reload, want ≥ 3", before.Dialed)
	}
	changed := strings.Replace(daemonConfig(port, backend, ""), "warm = 1", "warm = 2", 1)
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- os.Interrupt
	// The new pool warms two connections in the background: poll, with a
	// deadline, until it has.
	var after pool.Stats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if after = p.srv.PoolStats()["app"]; after.Dialed >= before.Dialed+2 {
			break
		}
	}
	if after.Dialed < before.Dialed+2 || after.Pooled < before.Pooled || after.Evicted < before.Evicted {
		t.Errorf("pool counters after the reload %+v, before %+v: want none lower, dialed up by the new pool's 2", after, before)
	}
	d.session(t, "after")
	if got := p.srv.PoolStats()["app"]; got.Pooled <= after.Pooled {
		t.Errorf("pooled %d after a session on the new pool, want > %d", got.Pooled, after.Pooled)
	}
}

// serveReloading runs serve on cfg, loaded from path, with SIGHUP reloads
// from the returned channel, until the test ends; it returns the parts
// once serving.
func serveReloading(t *testing.T, path string, cfg *config.Config) (parts, chan<- os.Signal) {
	t.Helper()
	hup := make(chan os.Signal, 1)
	started := make(chan parts, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		lg := &logs{log: zaptest.NewLogger(t), level: zap.NewAtomicLevel()}
		done <- serve(ctx, cfg, lg, func(bg context.Context, p parts) {
			started <- p
			reloadOnHUP(bg, hup, path, p, lg)
		}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return <-started, hup
}
