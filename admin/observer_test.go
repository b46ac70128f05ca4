package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// leg fabricates a leg record.
func leg(first policy.Side, c policy.Close, tw policy.Side, fallback string) engine.LegRecord {
	return engine.LegRecord{FirstFIN: first, Close: c, TimeWait: tw, Reason: policy.Reason(fallback)}
}

func TestObserverCountsRecords(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	base := serve(t, a)
	for range 4 {
		a.Accepted("web")
	}
	records := []*engine.Teardown{
		{ // front: proxy closed first; back: backend first, TIME-WAIT on it
			Listener: "web", Backend: "app", ProxyProtocol: "v2", Outcome: engine.OutcomeOK,
			Front: leg(policy.SideProxy, policy.CloseFIN, policy.SideProxy, ""),
			Back:  leg(policy.SideBackend, policy.CloseFIN, policy.SideBackend, ""),
		},
		{ // client first, spared with a safe reset; back leg pooled
			Listener: "web", Backend: "app", ProxyProtocol: "v1", Outcome: engine.OutcomeOK,
			Front: leg(policy.SideClient, policy.CloseReset, policy.SideNone, ""),
			Back:  leg(policy.SideNone, policy.ClosePooled, policy.SideNone, ""),
		},
		{ // grace ran out on the back leg: reset
			Listener: "web", Backend: "app", ProxyProtocol: "none", Outcome: engine.OutcomeOK,
			Front: leg(policy.SideProxy, policy.CloseFIN, policy.SideProxy, ""),
			Back:  leg(policy.SideNone, policy.CloseReset, policy.SideNone, "grace_expired"),
		},
		{ // bad PROXY header: refused before any backend
			Listener: "web", Backend: "app", ProxyProtocol: "none", Outcome: engine.OutcomeBadProxyHeader,
			Front: leg(policy.SideNone, policy.CloseReset, policy.SideNone, ""),
			Back:  leg("", "", "", ""),
		},
	}
	for _, td := range records {
		a.Ended(td)
	}
	a.Accepted("web") // over max_connections: Rejected, then its record
	a.Rejected("web", "over_limit")
	a.Ended(&engine.Teardown{Listener: "web", Backend: "app", ProxyProtocol: "none", Outcome: engine.OutcomeOverLimit,
		Front: leg(policy.SideNone, policy.CloseReset, policy.SideNone, "")})

	expect(t, scrape(t, base), map[string]float64{
		`closeproxy_connections_accepted_total{listener="web"}`:                              5,
		`closeproxy_connections_active{listener="web"}`:                                      0,
		`closeproxy_connections_rejected_total{listener="web",reason="over_limit"}`:          1,
		`closeproxy_sessions_total{backend="app",listener="web",outcome="ok"}`:               3,
		`closeproxy_sessions_total{backend="app",listener="web",outcome="over_limit"}`:       1,
		`closeproxy_sessions_total{backend="app",listener="web",outcome="bad_proxy_header"}`: 1,
		`closeproxy_first_fin_total{leg="front",side="proxy"}`:                               2,
		`closeproxy_first_fin_total{leg="front",side="client"}`:                              1,
		`closeproxy_first_fin_total{leg="front",side="none"}`:                                2,
		`closeproxy_first_fin_total{leg="back",side="backend"}`:                              1,
		`closeproxy_first_fin_total{leg="back",side="none"}`:                                 4,
		`closeproxy_time_wait_placed_total{leg="front",side="proxy"}`:                        2,
		`closeproxy_time_wait_placed_total{leg="front",side="none"}`:                         3,
		`closeproxy_time_wait_placed_total{leg="back",side="backend"}`:                       1,
		`closeproxy_time_wait_placed_total{leg="back",side="none"}`:                          4,
		`closeproxy_closes_total{close="fin",leg="front"}`:                                   2,
		`closeproxy_closes_total{close="reset",leg="front"}`:                                 3,
		`closeproxy_closes_total{close="fin",leg="back"}`:                                    1,
		`closeproxy_closes_total{close="pooled",leg="back"}`:                                 1,
		`closeproxy_closes_total{close="reset",leg="back"}`:                                  1,
		`closeproxy_close_reasons_total{leg="back",reason="grace_expired"}`:                  1,
		`closeproxy_proxy_headers_total{listener="web",version="v1"}`:                        1,
		`closeproxy_proxy_headers_total{listener="web",version="v2"}`:                        1,
		`closeproxy_proxy_headers_total{listener="web",version="none"}`:                      2, // not the refused one
		`closeproxy_proxy_header_rejects_total{listener="web"}`:                              1,
	})
}

func TestObserverActiveConnections(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	base := serve(t, a)
	for range 3 {
		a.Accepted("web")
	}
	a.Ended(&engine.Teardown{Listener: "web", Backend: "app", Outcome: engine.OutcomeOK})
	expect(t, scrape(t, base), map[string]float64{`closeproxy_connections_active{listener="web"}`: 2})
}

// dialError is how a failed net.Dialer dial looks.
func dialError(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

func TestDialFailuresLocalOrBackend(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	base := serve(t, a)
	a.Dialed("app", time.Millisecond, fmt.Errorf("dial backend 127.0.0.1:1: %w", dialError(syscall.EADDRNOTAVAIL)))
	a.Dialed("app", time.Millisecond, dialError(syscall.EMFILE))
	a.Dialed("app", time.Millisecond, dialError(syscall.ECONNREFUSED))
	a.Dialed("app", time.Second, context.DeadlineExceeded)
	a.Dialed("app", time.Second, errors.New("no route"))
	a.Dialed("app", 300*time.Microsecond, nil)
	a.Dialed("app", 2*time.Millisecond, nil)
	expect(t, scrape(t, base), map[string]float64{
		`closeproxy_backend_dial_failures_total{backend="app",kind="local"}`:         2,
		`closeproxy_backend_dial_failures_total{backend="app",kind="backend"}`:       3,
		`closeproxy_backend_dial_duration_seconds_count{backend="app"}`:              2,
		`closeproxy_backend_dial_duration_seconds_bucket{backend="app",le="0.0001"}`: 0,
		`closeproxy_backend_dial_duration_seconds_bucket{backend="app",le="0.0005"}`: 1,
		`closeproxy_backend_dial_duration_seconds_bucket{backend="app",le="0.0025"}`: 2,
		`closeproxy_backend_dial_duration_seconds_bucket{backend="app",le="5"}`:      2,
	})
}

func TestConfiguredSeriesStartAtZero(t *testing.T) {
	base := serve(t, New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t)))
	got := scrape(t, base)
	expect(t, got, map[string]float64{
		`closeproxy_connections_accepted_total{listener="web"}`:                        0,
		`closeproxy_connections_active{listener="web"}`:                                0,
		`closeproxy_backend_dial_failures_total{backend="app",kind="local"}`:           0,
		`closeproxy_backend_dial_failures_total{backend="app",kind="backend"}`:         0,
		`closeproxy_backend_server_sessions_total{backend="app",server="127.0.0.1:1"}`: 0,
	})
}
