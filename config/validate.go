package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// Validate checks a Config built in code as Parse checks a file's, and
// returns every problem found, joined.
func (c *Config) Validate() error {
	p := &problems{seen: map[string]bool{}}
	c.validate(p)
	return p.err()
}

func (c *Config) validate(p *problems) {
	top := object{p: p}
	top.positive("shutdown_timeout", c.ShutdownTimeout)
	top.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	top.check("log.teardown", teardown(c.Log.Teardown))
	if c.Log.Records == "" {
		top.problem("log.records", errors.New(`empty; "stderr", "stdout" or a file path`))
	}
	if c.Admin.Listen != "off" {
		top.check("admin.listen", hostPort(c.Admin.Listen, false, "127.0.0.1:9901"))
	}
	top.positive("admin.kernel_sample_interval", c.Admin.KernelSample)
	top.validAuto(c.Auto)
	if len(c.Listeners) == 0 {
		top.problem("listener", errors.New("none defined; at least one [[listener]] is required"))
	}
	backends := map[string]int{}
	for i, b := range c.Backends {
		o := p.object("backend", i, b.Name)
		o.name(backends, i, "backend", b.Name)
		o.validServers(b)
		o.oneOf("balance", string(b.Balance), string(BalanceLeastConn), string(BalanceRoundRobin), string(BalanceHashClient))
		o.validHealth(b)
		o.positive("connect_timeout", b.ConnectTimeout)
		o.oneOf("send_proxy_protocol", string(b.SendProxyProtocol), string(SendOff), string(SendV1), string(SendV2))
		o.oneOf("protocol", string(b.Protocol), string(ProtocolTCP), string(ProtocolHTTP1))
		o.validSource(b)
		o.validPool(b)
		o.validClose(policy.Back, b.Close)
	}
	listeners := map[string]int{}
	for i, l := range c.Listeners {
		o := p.object("listener", i, l.Name)
		o.name(listeners, i, "listener", l.Name)
		o.check("listen", hostPort(l.Listen, false, "0.0.0.0:8080"))
		o.check("backend", backendRef(l.Backend, backends))
		o.oneOf("proxy_protocol", string(l.ProxyProtocol),
			string(ProxyProtocolOff), string(ProxyProtocolOptional), string(ProxyProtocolRequired))
		o.trusted(l)
		o.positive("proxy_protocol_timeout", l.ProxyProtocolTimeout)
		o.positive("idle_timeout", l.IdleTimeout)
		o.oneOf("intercept", string(l.Intercept), string(InterceptOff), string(InterceptTProxy), string(InterceptRedirect))
		o.validClose(policy.Front, l.Close)
	}
}

func (o object) validClose(leg policy.Leg, c Close) {
	o.check("close.time_wait", target(leg, c.TimeWait))
	if _, err := policy.ParseFallback(string(c.Fallback)); err != nil {
		o.problem("close.fallback", err)
	}
	o.positive("close.peer_fin_grace", c.PeerFinGrace)
	o.positive("close.half_close_timeout", c.HalfCloseTimeout)
	o.positive("close.drain_timeout", c.DrainTimeout)
}

func (o object) validPool(b Backend) {
	if b.Protocol == ProtocolHTTP1 && b.SendProxyProtocol != SendOff {
		o.problem("send_proxy_protocol", fmt.Errorf(
			"%q cannot be used with protocol = \"http1\": a reused backend connection serves many clients but its PROXY header names one; use protocol = \"tcp\" or send_proxy_protocol = \"off\"",
			b.SendProxyProtocol))
	}
	if b.Pool.Warm < 0 {
		o.problem("pool.warm", fmt.Errorf("must be 0 or more, not %d", b.Pool.Warm))
	}
	if b.Pool.MaxConns < 0 {
		o.problem("pool.max_conns", fmt.Errorf("must be 0 (no cap) or more, not %d", b.Pool.MaxConns))
	}
	if b.Pool.MaxConns > 0 && b.Pool.Warm > b.Pool.MaxConns {
		o.problem("pool.warm", fmt.Errorf("%d is more than pool.max_conns %d", b.Pool.Warm, b.Pool.MaxConns))
	}
	o.positive("pool.max_idle_age", b.Pool.MaxIdleAge)
}

// validSource checks source: a backend dialed from each client's address
// cannot share connections between clients, as http1 reuse does.
func (o object) validSource(b Backend) {
	o.oneOf("source", string(b.Source), string(SourceProxy), string(SourceClient))
	if b.Source == SourceClient && b.Protocol == ProtocolHTTP1 {
		o.problem("source", errors.New(
			`"client" cannot be used with protocol = "http1": a reused backend connection serves many clients but comes from one client's address; use protocol = "tcp" or source = "proxy"`))
	}
}

// validServers checks address or servers: exactly one, each a host:port
// written once, with a weight from 1 to maxWeight.
func (o object) validServers(b Backend) {
	switch {
	case b.Address != "" && len(b.Servers) > 0:
		o.problem("servers", errors.New("give either address or servers, not both"))
		return
	case len(b.Servers) == 0 && b.Address == "":
		o.problem("address", errors.New(`missing; give address = "host:port" such as "127.0.0.1:8081", or servers = ["host:port", …]`))
		return
	case len(b.Servers) == 0:
		o.check("address", hostPort(b.Address, true, "127.0.0.1:8081"))
		return
	}
	seen := map[string]int{}
	for i, srv := range b.Servers {
		at := fmt.Sprintf("servers[%d]", i)
		if err := hostPort(srv.Address, true, "10.0.0.11:80"); err != nil {
			o.problem(at, err)
			continue
		}
		if first, dup := seen[srv.Address]; dup {
			o.problem(at, fmt.Errorf("%q is also servers[%d]; give it a weight instead", srv.Address, first))
			continue
		}
		seen[srv.Address] = i
		if srv.Weight < 1 || srv.Weight > maxWeight {
			o.problem(at+".weight", fmt.Errorf("%d is not from 1 to %d", srv.Weight, maxWeight))
		}
	}
}

func (o object) validHealth(b Backend) {
	h := b.Health
	o.oneOf("health.check", string(h.Check), string(HealthTCP), string(HealthHTTP), string(HealthOff))
	if h.Check == HealthHTTP && b.Protocol != ProtocolHTTP1 {
		o.problem("health.check", errors.New(`"http" needs protocol = "http1": a tcp backend may not speak HTTP; use "tcp"`))
	}
	o.positive("health.interval", h.Interval)
	o.positive("health.timeout", h.Timeout)
	if h.Timeout > h.Interval && h.Interval > 0 {
		o.problem("health.timeout", fmt.Errorf("%s is longer than health.interval %s", formatDuration(h.Timeout), formatDuration(h.Interval)))
	}
	counts := []struct {
		key string
		n   int
	}{{"health.rise", h.Rise}, {"health.fall", h.Fall}}
	for _, c := range counts {
		if c.n < 1 || c.n > 100 {
			o.problem(c.key, fmt.Errorf("%d is not from 1 to 100", c.n))
		}
	}
	if h.EjectAfter > 100 {
		o.problem("health.eject_after", fmt.Errorf("%d is not from 0 (off) to 100", h.EjectAfter))
	}
	o.check("health.http_request", requestLine(h.HTTPRequest))
	if h.ExpectStatus < 100 || h.ExpectStatus > 599 {
		o.problem("health.expect_status", fmt.Errorf("%d is not an HTTP status from 100 to 599", h.ExpectStatus))
	}
	if h.EaseIn < 0 {
		o.problem("health.ease_in", fmt.Errorf("must be 0 (off) or more, not %s", formatDuration(h.EaseIn)))
	}
}

// requestLine checks a health check's request line: METHOD /path HTTP/1.x.
func requestLine(s string) error {
	f := strings.Split(s, " ")
	if len(f) != 3 || f[0] == "" || strings.ContainsAny(s, "\r\n\t") ||
		!strings.HasPrefix(f[1], "/") || f[2] != "HTTP/1.1" && f[2] != "HTTP/1.0" {
		return fmt.Errorf("%q is not a request line such as \"GET /healthz HTTP/1.1\"", s)
	}
	for _, r := range f[0] {
		if r < 'A' || r > 'Z' {
			return fmt.Errorf("%q: method %q is not upper-case letters", s, f[0])
		}
	}
	return nil
}

func (o object) validAuto(a Auto) {
	if a.TWBudget < 0 {
		o.problem("auto.tw_budget", fmt.Errorf("must be 0 (half of net.ipv4.tcp_max_tw_buckets) or more, not %d", a.TWBudget))
	}
	share := func(key string, v float64) {
		if !(v > 0 && v <= 1) {
			o.problem(key, fmt.Errorf("%g is not a share greater than 0 and at most 1", v))
		}
	}
	share("auto.tw_resume", a.TWResume)
	share("auto.port_share", a.PortShare)
	share("auto.port_resume", a.PortResume)
	if a.PortResume > a.PortShare {
		o.problem("auto.port_resume", fmt.Errorf("%g is above auto.port_share %g; switching back needs the lower figure", a.PortResume, a.PortShare))
	}
	o.positive("auto.sample_interval", a.SampleInterval)
	if a.SampleInterval > 0 && a.SampleInterval < 250*time.Millisecond {
		o.problem("auto.sample_interval", fmt.Errorf("%s is below the 250ms floor", formatDuration(a.SampleInterval)))
	}
}

func (o object) check(key string, err error) {
	if err != nil {
		o.problem(key, err)
	}
}

func (o object) positive(key string, d time.Duration) {
	if d <= 0 {
		o.problem(key, fmt.Errorf("must be greater than 0, not %s", formatDuration(d)))
	}
}

func (o object) oneOf(key, word string, words ...string) {
	if !slices.Contains(words, word) {
		o.problem(key, fmt.Errorf("%q is not one of %s", word, strings.Join(words, ", ")))
	}
}

// name checks that a listener's or backend's name is present and unique.
func (o object) name(seen map[string]int, i int, kind, name string) {
	if name == "" {
		o.problem("name", fmt.Errorf("missing; every %s needs a unique name", kind))
		return
	}
	if first, dup := seen[name]; dup {
		o.problem("name", fmt.Errorf("%q is also the name of %s #%d", name, kind, first+1))
		return
	}
	seen[name] = i
}

func (o object) trusted(l Listener) {
	for i, pfx := range l.ProxyProtocolTrusted {
		if !pfx.IsValid() || pfx.Masked() != pfx {
			o.problem(fmt.Sprintf("proxy_protocol_trusted[%d]", i), fmt.Errorf("%s is not a valid CIDR prefix", pfx))
		}
	}
	reads := l.ProxyProtocol == ProxyProtocolOptional || l.ProxyProtocol == ProxyProtocolRequired
	if reads && len(l.ProxyProtocolTrusted) == 0 {
		o.problem("proxy_protocol_trusted", errors.New(
			`empty: no source would be trusted; list the load balancers' addresses (e.g. "10.0.0.0/8")`))
	}
}

// hostPort checks a host:port; needHost for addresses that are dialed.
func hostPort(s string, needHost bool, example string) error {
	if s == "" {
		return fmt.Errorf("missing; give a host:port such as %q", example)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("%q is not a host:port such as %q: %w", s, example, err)
	}
	if needHost && host == "" {
		return fmt.Errorf("%q has no host; give a host:port such as %q", s, example)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || needHost && n == 0 {
		low := 0
		if needHost {
			low = 1
		}
		return fmt.Errorf("%q: port %q is not a number from %d to 65535", s, port, low)
	}
	return nil
}

func backendRef(name string, backends map[string]int) error {
	if name == "" {
		return errors.New("missing; name the [[backend]] this listener forwards to")
	}
	if _, ok := backends[name]; !ok {
		names := make([]string, 0, len(backends))
		for n := range backends {
			names = append(names, strconv.Quote(n))
		}
		slices.Sort(names)
		if len(names) == 0 {
			return fmt.Errorf("%q names no [[backend]]; none is defined", name)
		}
		return fmt.Errorf("%q names no [[backend]]; defined: %s", name, strings.Join(names, ", "))
	}
	return nil
}

// target checks a leg's time_wait: only the targets built so far.
func target(leg policy.Leg, t policy.Target) error {
	switch t {
	case policy.TargetProxy, policy.TargetPeer, policy.TargetNowhere, policy.TargetAuto:
		return nil
	}
	if _, err := policy.ParseTarget(leg, string(t)); err != nil {
		return err
	}
	return fmt.Errorf("%q is not one of %s", t, strings.Join(policy.Words(leg), ", "))
}

// teardown checks log.teardown: all, errors or sample:<rate in (0,1]>.
func teardown(s string) error {
	switch s {
	case "all", "errors":
		return nil
	}
	rate, ok := strings.CutPrefix(s, "sample:")
	if !ok {
		return fmt.Errorf("%q is not one of all, errors, sample:<rate>", s)
	}
	if r, err := strconv.ParseFloat(rate, 64); err != nil || !(r > 0 && r <= 1) {
		return fmt.Errorf("%q: the rate must be a number greater than 0 and at most 1, e.g. sample:0.01", s)
	}
	return nil
}
