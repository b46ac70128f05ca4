package admin

import (
	"net/netip"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
)

func TestKernelTargetsCountOnlyTimeWait(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: ":8080"}, {Name: "any", Listen: "127.0.0.1:0"}},
		Backends:  []config.Backend{{Name: "app", Address: "[::ffff:10.0.0.2]:80"}},
	}
	tg := newKernelTargets(cfg, zaptest.NewLogger(t))
	sock := func(st sockdiag.State, local, peer string) sockdiag.Socket {
		return sockdiag.Socket{State: st, Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
	}
	socks := []sockdiag.Socket{
		sock(sockdiag.TimeWait, "10.0.0.9:8080", "10.0.0.5:40000"), // front
		sock(sockdiag.FinWait2, "10.0.0.9:8080", "10.0.0.5:40001"), // orphaned FIN-WAIT-2: not TIME-WAIT
		sock(sockdiag.TimeWait, "10.0.0.5:40002", "10.0.0.9:8080"), // a client's, on this host
		sock(sockdiag.TimeWait, "10.0.0.9:50000", "10.0.0.2:80"),   // back
		sock(sockdiag.TimeWait, "10.0.0.2:80", "10.0.0.9:50001"),   // the backend's own
		sock(sockdiag.FinWait2, "10.0.0.9:50002", "10.0.0.2:80"),
	}
	front, back := tg.count(socks)
	if front != have(1) || back != have(1) {
		t.Fatalf("front %+v back %+v, want 1 and 1", front, back)
	}
}

func TestKernelTargetsUnknowableLegsUnread(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: "127.0.0.1:0"}},
		Backends:  []config.Backend{{Name: "app", Address: "app-without-port"}},
	}
	front, back := newKernelTargets(cfg, zaptest.NewLogger(t)).count(nil)
	if front.ok || back.ok {
		t.Fatalf("front %+v back %+v, want both unread", front, back)
	}
}

func TestKernelTargetsResolveName(t *testing.T) {
	cfg := &config.Config{Backends: []config.Backend{{Name: "app", Address: "localhost:8081"}}}
	tg := newKernelTargets(cfg, zaptest.NewLogger(t))
	if !tg.backAddrs[netip.MustParseAddrPort("127.0.0.1:8081")] {
		t.Fatalf("localhost not resolved to 127.0.0.1: %v", tg.backAddrs)
	}
}
