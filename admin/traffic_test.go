package admin

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/proxy"
)

// trafficConfig has one listener "web" toward one backend "app", with a
// warm pool so that the pool series exist.
const trafficConfig = `
[admin]
kernel_sample_interval = "10ms"
[[listener]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
[[backend]]
name = "app"
address = "%s"
  [backend.pool]
  warm = 1
`

// withTraffic is a proxy with its Admin, both served until the test ends.
type withTraffic struct {
	adm     *Admin
	srv     *proxy.Server
	base    string // the admin's URL
	ended   chan *engine.Teardown
	proxied string // the listener's address
}

// startWithTraffic runs a proxy and its Admin, built with opts, on
// loopback, logging to log.
func startWithTraffic(t *testing.T, log *zap.Logger, opts ...Option) *withTraffic {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, trafficConfig, loopback.Serve(t, loopback.Echo)), "traffic.toml")
	if err != nil {
		t.Fatal(err)
	}
	w := &withTraffic{adm: New(cfg, log, append([]Option{WithVersion("v9.9.9-test")}, opts...)...), ended: make(chan *engine.Teardown, 64)}
	w.srv, err = proxy.New(cfg, log, proxy.WithObserver(w.adm),
		proxy.WithTeardownHook(func(td *engine.Teardown) { w.ended <- td }))
	if err != nil {
		t.Fatal(err)
	}
	w.adm.Attach(w.srv)
	if err := w.srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.proxied = w.srv.Addrs()[0].String()
	w.base = serve(t, w.adm)
	served := make(chan error, 1)
	go func() { served <- w.srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return w
}

// session sends msg through the proxy, half-closes, reads the echo, and
// waits for the session's record.
func (w *withTraffic) session(t *testing.T, msg string) *engine.Teardown {
	t.Helper()
	loopback.EchoThrough(t, w.proxied, msg)
	select {
	case td := <-w.ended:
		return td
	case <-time.After(5 * time.Second):
		t.Fatal("no record 5s after the session")
		return nil
	}
}

// After real sessions: bytes per leg and direction, the duration
// histogram, the build and reload gauges, all with the values the
// sessions and the start give them.
func TestMetricsAfterTraffic(t *testing.T) {
	start := time.Now()
	w := startWithTraffic(t, zaptest.NewLogger(t))
	var longest time.Duration
	for i := range 3 {
		td := w.session(t, fmt.Sprintf("hello %d", i)) // 7 bytes
		longest = max(longest, td.Duration)
	}
	got := scrape(t, w.base)
	expect(t, got, map[string]float64{
		`closeproxy_bytes_total{direction="in",leg="front",listener="web"}`:                           21,
		`closeproxy_bytes_total{direction="out",leg="front",listener="web"}`:                          21,
		`closeproxy_bytes_total{direction="in",leg="back",listener="web"}`:                            21,
		`closeproxy_bytes_total{direction="out",leg="back",listener="web"}`:                           21,
		`closeproxy_session_duration_seconds_count{listener="web"}`:                                   3,
		`closeproxy_session_duration_seconds_bucket{listener="web",le="+Inf"}`:                        3,
		`closeproxy_config_last_reload_successful`:                                                    1,
		fmt.Sprintf(`closeproxy_build_info{goversion="%s",version="v9.9.9-test"}`, runtime.Version()): 1,
	})
	if sum := got[`closeproxy_session_duration_seconds_sum{listener="web"}`]; sum < longest.Seconds() || sum > 3*longest.Seconds()+1e-6 {
		t.Errorf("duration sum %vs, want between the longest session's %v and three times it", sum, longest)
	}
	if at := got[`closeproxy_config_last_reload_success_timestamp_seconds`]; at < float64(start.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("last reload success at %v, want the start, %d", at, start.Unix())
	}
}

// A refused reload turns the success gauge to 0 and keeps the time of the
// last success; the next good one sets both.
func TestReloadGauges(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	base := serve(t, a)
	first := scrape(t, base)[`closeproxy_config_last_reload_success_timestamp_seconds`]
	a.ConfigReloaded(false)
	got := scrape(t, base)
	expect(t, got, map[string]float64{
		`closeproxy_config_last_reload_successful`:                0,
		`closeproxy_config_last_reload_success_timestamp_seconds`: first,
	})
	time.Sleep(10 * time.Millisecond) // the gauge has sub-second precision: outlast it
	a.ConfigReloaded(true)
	got = scrape(t, base)
	if got[`closeproxy_config_last_reload_successful`] != 1 || got[`closeproxy_config_last_reload_success_timestamp_seconds`] <= first {
		t.Errorf("after a good reload: successful %v, at %v (before %v); want 1 and later",
			got[`closeproxy_config_last_reload_successful`], got[`closeproxy_config_last_reload_success_timestamp_seconds`], first)
	}
}
