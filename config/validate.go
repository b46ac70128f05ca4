package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	top.checkKeys("", c)
	if c.Auto.PortResume > c.Auto.PortShare && !top.failed("auto.port_share") && !top.failed("auto.port_resume") {
		top.problem("auto.port_resume", fmt.Errorf("%g is above auto.port_share %g; switching back needs the lower figure", c.Auto.PortResume, c.Auto.PortShare))
	}
	if len(c.Listeners) == 0 {
		top.problem("listener", errors.New("none defined; at least one [[listener]] is required"))
	}
	backends := map[string]int{}
	for i := range c.Backends {
		b := &c.Backends[i]
		o := p.object("backend", i, b.Name)
		o.name(backends, i, "backend", b.Name)
		o.checkKeys("backend", b)
		o.validServers(*b)
		o.validHealth(*b)
		o.validSource(*b)
		o.validPool(*b)
	}
	listeners := map[string]int{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		o := p.object("listener", i, l.Name)
		o.name(listeners, i, "listener", l.Name)
		o.checkKeys("listener", l)
		o.check("backend", backendRef(l.Backend, backends))
		o.trusted(*l)
		o.uniqueListen(c.Listeners, i)
	}
	top.adminApart(c)
}

// checkKeys runs the schema's own check of every key of scope on obj.
func (o object) checkKeys(scope string, obj any) {
	for _, k := range keysIn(scope) {
		if k.check != nil {
			o.check(k.rel(), k.check(k.value(obj)))
		}
	}
}

func (o object) validPool(b Backend) {
	if b.Protocol == ProtocolHTTP1 && b.SendProxyProtocol != SendOff {
		o.problem("send_proxy_protocol", fmt.Errorf(
			"%q cannot be used with protocol = \"http1\": a reused backend connection serves many clients but its PROXY header names one; use protocol = \"tcp\" or send_proxy_protocol = \"off\"",
			b.SendProxyProtocol))
	}
	if b.Pool.MaxConns > 0 && b.Pool.Warm > b.Pool.MaxConns {
		o.problem("pool.warm", fmt.Errorf("%d is more than pool.max_conns %d", b.Pool.Warm, b.Pool.MaxConns))
	}
}

// validSource checks source: a backend dialed from each client's address
// cannot share connections between clients, as http1 reuse does.
func (o object) validSource(b Backend) {
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
	if h.Check == HealthHTTP && b.Protocol != ProtocolHTTP1 {
		o.problem("health.check", errors.New(`"http" needs protocol = "http1": a tcp backend may not speak HTTP; use "tcp"`))
	}
	if h.Timeout > h.Interval && h.Interval > 0 && !o.failed("health.interval") && !o.failed("health.timeout") {
		o.problem("health.timeout", fmt.Errorf("%s is longer than health.interval %s", formatDuration(h.Timeout), formatDuration(h.Interval)))
	}
}

// checkRequestLine checks a health check's request line: METHOD /path HTTP/1.x.
func checkRequestLine(s string) error {
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

func (o object) check(key string, err error) {
	if err != nil {
		o.problem(key, err)
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
		if o.p.pos != nil && !o.written("proxy_protocol_trusted") {
			// The line to fix is the one that asks for a header.
			o.problemOn("proxy_protocol", "proxy_protocol_trusted", fmt.Errorf(
				`missing: proxy_protocol = %q trusts no source without it; list the load balancers' addresses (e.g. "10.0.0.0/8")`, l.ProxyProtocol))
			return
		}
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
		if i := strings.LastIndex(s, ":"); i > 0 {
			if ip, perr := netip.ParseAddr(s[:i]); perr == nil && ip.Is6() {
				return fmt.Errorf("%q: an IPv6 address goes in brackets: %q", s, "["+s[:i]+"]"+s[i:])
			}
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
			return fmt.Errorf("%q names no [[backend]]; none with a name is defined", name)
		}
		return fmt.Errorf("%q names no [[backend]]; defined: %s", name, strings.Join(names, ", "))
	}
	return nil
}

// target checks a leg's time_wait: only the targets built so far.
func target(leg policy.Leg) func(any) error {
	return checkOf(func(t policy.Target) error {
		switch t {
		case policy.TargetProxy, policy.TargetPeer, policy.TargetNowhere, policy.TargetAuto:
			return nil
		}
		if _, err := policy.ParseTarget(leg, string(t)); err != nil {
			return err
		}
		return fmt.Errorf("%q is not one of %s", t, strings.Join(policy.Words(leg), ", "))
	})
}

// checkTeardown checks log.teardown: all, errors or sample:<rate in (0,1]>.
func checkTeardown(s string) error {
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

// The checks the schema's keys name: each of one value, of the key's type.
var (
	teardown    = checkOf(checkTeardown)
	requestLine = checkOf(checkRequestLine)
	adminListen = checkOf(func(s string) error {
		if s == "off" {
			return nil
		}
		return hostPort(s, false, "127.0.0.1:9901")
	})
	records = checkOf(func(s string) error {
		if s == "" {
			return errors.New(`empty; "stderr", "stdout" or a file path`)
		}
		return nil
	})
	recordsFlush = checkOf(func(d time.Duration) error {
		if d > 10*time.Second {
			return fmt.Errorf("%s is above the 10s ceiling: a crash loses what waits", formatDuration(d))
		}
		return notNegative(d)
	})
	listenAddress = checkOf(func(s string) error { return hostPort(s, false, "0.0.0.0:8080") })
	positive      = checkOf(func(d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("must be greater than 0, not %s", formatDuration(d))
		}
		return nil
	})
	notNegative = checkOf(func(d time.Duration) error {
		if d < 0 {
			return fmt.Errorf("must be 0 (off) or more, not %s", formatDuration(d))
		}
		return nil
	})
	sampleInterval = floor(250 * time.Millisecond)
	// A health check dials each server every interval: below 100ms it
	// becomes load on the backend (1ms: 900 connects a second a server)
	// and a busy core here, and a 1ns timeout fails every check.
	healthInterval = floor(100 * time.Millisecond)
	healthTimeout  = floor(time.Millisecond)
	share          = checkOf(func(v float64) error {
		if !(v > 0 && v <= 1) {
			return fmt.Errorf("%g is not a share greater than 0 and at most 1", v)
		}
		return nil
	})
	fallback = checkOf(func(f policy.Fallback) error {
		_, err := policy.ParseFallback(string(f))
		return err
	})
)

// checkOf adapts a check of a T to the schema's check of any value.
func checkOf[T any](f func(T) error) func(any) error {
	return func(v any) error { return f(v.(T)) }
}

// oneOf accepts only words.
func oneOf[T ~string](words ...T) func(any) error {
	return checkOf(func(w T) error {
		if slices.Contains(words, w) {
			return nil
		}
		list := make([]string, len(words))
		for i, w := range words {
			list[i] = string(w)
		}
		return fmt.Errorf("%q is not one of %s", w, strings.Join(list, ", "))
	})
}

// between accepts integers from lo to hi; phrase says so in the error.
func between(lo, hi int, phrase string) func(any) error {
	return checkOf(func(n int) error {
		if n < lo || n > hi {
			return fmt.Errorf("%d is not %s", n, phrase)
		}
		return nil
	})
}

// atLeast0 accepts integers from 0 to maxCount; zero, if set, says what
// 0 means.
func atLeast0(zero string) func(any) error { return upTo(maxCount, zero) }

// floor accepts durations of at least min.
func floor(min time.Duration) func(any) error {
	return checkOf(func(d time.Duration) error {
		if d > 0 && d < min {
			return fmt.Errorf("%s is below the %s floor", formatDuration(d), formatDuration(min))
		}
		return positive(d)
	})
}

// maxCount bounds counts of connections and sessions: far above what a
// host holds, low enough that a typo does not have the pool dial without
// end.
const maxCount = 1 << 20

// upTo accepts integers from 0 to hi; zero, if set, says what 0 means.
func upTo(hi int, zero string) func(any) error {
	if zero != "" {
		zero = " (" + zero + ")"
	}
	return checkOf(func(n int) error {
		if n < 0 || n > hi {
			return fmt.Errorf("%d is not from 0%s to %d", n, zero, hi)
		}
		return nil
	})
}

// uniqueListen checks that listener i does not listen where an earlier one
// does (the first such, in the file's order). A wildcard address takes its
// port on every address, so it and any other address on that port cannot
// both be bound either.
func (o object) uniqueListen(ls []Listener, i int) {
	for j := range ls[:i] {
		if o.listenClash("listen", ls[i].Listen, ls, j) {
			return
		}
	}
}

// adminApart checks that admin.listen is not where a listener listens:
// run would bind the listeners, then fail on the admin port.
func (o object) adminApart(c *Config) {
	if c.Admin.Listen == "off" {
		return
	}
	for j := range c.Listeners {
		if o.listenClash("admin.listen", c.Admin.Listen, c.Listeners, j) {
			return
		}
	}
}

// listenClash reports, as a problem of key, that addr cannot be bound
// beside listener j: the same spot, or a wildcard on the same port.
func (o object) listenClash(key, addr string, ls []Listener, j int) bool {
	spot, ok := ListenSpot(addr)
	other, ok2 := ListenSpot(ls[j].Listen)
	host, port, _ := strings.Cut(spot, " ")
	h, p, _ := strings.Cut(other, " ")
	if !ok || !ok2 || p != port || (other != spot && h != "" && host != "") {
		return false
	}
	what, why, at := "is already used by", "", []string{}
	if line := o.p.pos.line([]string{"listener", index(j), "listen"}); line > 0 {
		at = append(at, fmt.Sprintf("line %d", line))
	}
	if other != spot {
		what, why = "overlaps", ": a wildcard address takes the port on every address"
		at = append(at, strconv.Quote(ls[j].Listen))
	}
	msg := fmt.Sprintf("%q %s %s", addr, what, o.p.object("listener", j, ls[j].Name).label)
	if len(at) > 0 {
		msg += " (" + strings.Join(at, ", ") + ")"
	}
	o.problem(key, errors.New(msg+why))
	return true
}

// ListenSpot spells a listen address so that two that bind the same
// socket are equal: every wildcard host ("", 0.0.0.0, ::) is one, as Go
// listens on both families for each; an IPv4-mapped address is its IPv4
// one; "localhost" is 127.0.0.1. A reload keeps a listener's socket when its spot is unchanged.
// Port 0 picks a free port each time: it is no spot (ok false), nor is an
// address that does not parse.
func ListenSpot(listen string) (string, bool) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
		if ip.IsUnspecified() {
			host = ""
		}
	} else if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1" // where Go listens for it: the first IPv4 address it resolves to
	}
	return strings.ToLower(host) + " " + strconv.FormatUint(n, 10), true
}
