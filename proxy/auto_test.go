package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
)

// leaveTimeWait makes this host hold a TIME-WAIT socket: a loopback
// connection the client closes first.
func leaveTimeWait(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	io.Copy(io.Discard, s) // the client's FIN
	s.Close()
	// The client's socket enters TIME-WAIT when our FIN reaches it, which a
	// loaded host may do after Close returns (softirq deferred): wait until
	// the figure auto samples shows it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n, err := procnet.ReadTimeWait()
		if err != nil {
			t.Skipf("no TIME-WAIT figure here: %v", err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no TIME-WAIT socket on this host 5s after a client-first close")
		}
	}
}

func TestAutoChoosesPerClose(t *testing.T) {
	cases := []struct {
		name                      string
		backendFirst, clientFirst bool
		pressure                  bool
		wantTW                    policy.Side
		wantReason                string
	}{
		{"no pressure, backend ends first: the proxy takes it", true, false, false, policy.SideProxy, policy.ReasonAccepting},
		{"no pressure, client ends first: spare the client", false, true, false, policy.SideNone, policy.ReasonSpareDialer},
		{"host over budget, client ends first: safe reset", false, true, true, policy.SideNone, policy.ReasonHostBudget},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			budget := 1 << 30
			if tc.pressure {
				budget = 1
				leaveTimeWait(t) // the host holds at least one: over a budget of 1
			}
			be := httpBackend(t, tc.backendFirst)
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetAuto, policy.FallbackFIN)},
				config.Backend{Address: be, Close: testClose(policy.TargetAuto, policy.FallbackReset)},
				func(c *config.Config) { c.Auto.TWBudget = budget })
			if got, err := get(t, h.addr, tc.clientFirst); got != response {
				t.Fatalf("response %q, %v", got, err)
			}
			td := h.record(t)
			if td.Front.TimeWait != tc.wantTW || td.Front.AutoReason != tc.wantReason || td.Front.Wanted != "auto" {
				t.Errorf("front: time_wait %s reason %q wanted %s", td.Front.TimeWait, td.Front.AutoReason, td.Front.Wanted)
			}
			if td.Back.AutoReason == "" {
				t.Error("back leg with auto records no reason")
			}
		})
	}
}
