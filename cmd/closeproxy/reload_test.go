package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
)

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
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
	log := zaptest.NewLogger(t)
	hup := make(chan os.Signal, 1)
	started := make(chan parts, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		lg := &logs{log: log, level: zap.NewAtomicLevel()}
		done <- serve(ctx, cfg, lg, func(bg context.Context, p parts) {
			started <- p
			reloadOnHUP(bg, hup, path, p, lg)
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	p := <-started
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
