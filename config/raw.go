package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// The raw structs mirror the TOML schema. Every leaf is a *value: nil when
// the key is absent, otherwise whatever TOML value was written, so that a
// wrong type becomes a problem reported with its own line rather than the
// decoder's first and only error.

type rawConfig struct {
	ShutdownTimeout *value        `toml:"shutdown_timeout"`
	Log             rawLog        `toml:"log"`
	Admin           rawAdmin      `toml:"admin"`
	Auto            rawAuto       `toml:"auto"`
	Listener        []rawListener `toml:"listener"`
	Backend         []rawBackend  `toml:"backend"`
}

type rawLog struct {
	Level    *value `toml:"level"`
	Teardown *value `toml:"teardown"`
	Records  *value `toml:"records"`
}

type rawAdmin struct {
	Listen       *value `toml:"listen"`
	KernelSample *value `toml:"kernel_sample_interval"`
}

type rawAuto struct {
	TWBudget       *value `toml:"tw_budget"`
	TWResume       *value `toml:"tw_resume"`
	PortShare      *value `toml:"port_share"`
	PortResume     *value `toml:"port_resume"`
	SampleInterval *value `toml:"sample_interval"`
}

type rawListener struct {
	Name                 *value   `toml:"name"`
	Listen               *value   `toml:"listen"`
	Backend              *value   `toml:"backend"`
	ProxyProtocol        *value   `toml:"proxy_protocol"`
	ProxyProtocolTrusted *value   `toml:"proxy_protocol_trusted"`
	ProxyProtocolTimeout *value   `toml:"proxy_protocol_timeout"`
	IdleTimeout          *value   `toml:"idle_timeout"`
	MaxConnections       *value   `toml:"max_connections"`
	Intercept            *value   `toml:"intercept"`
	Close                rawClose `toml:"close"`
}

type rawBackend struct {
	Name              *value    `toml:"name"`
	Address           *value    `toml:"address"`
	Servers           *value    `toml:"servers"`
	Balance           *value    `toml:"balance"`
	Health            rawHealth `toml:"health"`
	Protocol          *value    `toml:"protocol"`
	ConnectTimeout    *value    `toml:"connect_timeout"`
	SendProxyProtocol *value    `toml:"send_proxy_protocol"`
	Source            *value    `toml:"source"`
	Pool              rawPool   `toml:"pool"`
	Close             rawClose  `toml:"close"`
}

type rawHealth struct {
	Check        *value `toml:"check"`
	Interval     *value `toml:"interval"`
	Timeout      *value `toml:"timeout"`
	Rise         *value `toml:"rise"`
	Fall         *value `toml:"fall"`
	HTTPRequest  *value `toml:"http_request"`
	ExpectStatus *value `toml:"expect_status"`
	EjectAfter   *value `toml:"eject_after"`
	EaseIn       *value `toml:"ease_in"`
}

type rawPool struct {
	Warm       *value `toml:"warm"`
	MaxIdleAge *value `toml:"max_idle_age"`
	MaxConns   *value `toml:"max_conns"`
}

type rawClose struct {
	TimeWait         *value `toml:"time_wait"`
	PeerFinGrace     *value `toml:"peer_fin_grace"`
	AdaptiveGrace    *value `toml:"adaptive_grace"`
	Fallback         *value `toml:"fallback"`
	HalfCloseTimeout *value `toml:"half_close_timeout"`
	DrainTimeout     *value `toml:"drain_timeout"`
}

// value holds one TOML value as decoded, of any type.
type value struct{ v any }

// UnmarshalTOML implements toml.Unmarshaler; it accepts anything.
func (v *value) UnmarshalTOML(data any) error {
	v.v = data
	return nil
}

// object converts the keys of one table, reporting problems against it.
type object struct {
	p     *problems
	label string   // `listener "web"`; empty at top level
	at    []string // indexed path of the table: listener.0
}

// convert turns raw into a Config, starting from the defaults. Only types
// and spellings are checked here; Validate checks the values.
func convert(raw *rawConfig, p *problems) *Config {
	d := Defaults()
	c := &Config{ShutdownTimeout: d.ShutdownTimeout, Log: d.Log, Admin: d.Admin, Auto: d.Auto}
	top := object{p: p}
	top.duration("shutdown_timeout", raw.ShutdownTimeout, &c.ShutdownTimeout)
	top.str("log.level", raw.Log.Level, &c.Log.Level)
	top.str("log.teardown", raw.Log.Teardown, &c.Log.Teardown)
	top.str("log.records", raw.Log.Records, &c.Log.Records)
	top.str("admin.listen", raw.Admin.Listen, &c.Admin.Listen)
	top.duration("admin.kernel_sample_interval", raw.Admin.KernelSample, &c.Admin.KernelSample)
	top.integer("auto.tw_budget", raw.Auto.TWBudget, &c.Auto.TWBudget)
	top.float("auto.tw_resume", raw.Auto.TWResume, &c.Auto.TWResume)
	top.float("auto.port_share", raw.Auto.PortShare, &c.Auto.PortShare)
	top.float("auto.port_resume", raw.Auto.PortResume, &c.Auto.PortResume)
	top.duration("auto.sample_interval", raw.Auto.SampleInterval, &c.Auto.SampleInterval)
	for i, r := range raw.Listener {
		l := d.Listener
		o := p.object("listener", i, name(r.Name))
		o.str("name", r.Name, &l.Name)
		o.str("listen", r.Listen, &l.Listen)
		o.str("backend", r.Backend, &l.Backend)
		o.str("proxy_protocol", r.ProxyProtocol, (*string)(&l.ProxyProtocol))
		o.prefixes("proxy_protocol_trusted", r.ProxyProtocolTrusted, &l.ProxyProtocolTrusted)
		o.duration("proxy_protocol_timeout", r.ProxyProtocolTimeout, &l.ProxyProtocolTimeout)
		o.duration("idle_timeout", r.IdleTimeout, &l.IdleTimeout)
		o.integer("max_connections", r.MaxConnections, &l.MaxConnections)
		o.str("intercept", r.Intercept, (*string)(&l.Intercept))
		o.close(policy.Front, &r.Close, &l.Close)
		c.Listeners = append(c.Listeners, l)
	}
	for i, r := range raw.Backend {
		b := d.Backend
		o := p.object("backend", i, name(r.Name))
		o.str("name", r.Name, &b.Name)
		o.str("address", r.Address, &b.Address)
		o.servers(r.Address, r.Servers, &b)
		o.str("balance", r.Balance, (*string)(&b.Balance))
		o.health(&r.Health, &b.Health)
		o.str("protocol", r.Protocol, (*string)(&b.Protocol))
		o.duration("connect_timeout", r.ConnectTimeout, &b.ConnectTimeout)
		o.str("send_proxy_protocol", r.SendProxyProtocol, (*string)(&b.SendProxyProtocol))
		o.str("source", r.Source, (*string)(&b.Source))
		o.integer("pool.warm", r.Pool.Warm, &b.Pool.Warm)
		o.duration("pool.max_idle_age", r.Pool.MaxIdleAge, &b.Pool.MaxIdleAge)
		o.integer("pool.max_conns", r.Pool.MaxConns, &b.Pool.MaxConns)
		o.close(policy.Back, &r.Close, &b.Close)
		c.Backends = append(c.Backends, b)
	}
	return c
}

// servers reads servers = ["host:port", { address = "host:port", weight = 2 }]
// and picks the default health check, which depends on how many servers
// there are.
func (o object) servers(address, v *value, b *Backend) {
	if v != nil && address != nil {
		o.problem("servers", errors.New("give either address or servers, not both"))
	}
	if v == nil {
		return
	}
	list, ok := v.v.([]any)
	if !ok {
		o.reported("address") // no second problem for the same backend's servers
		o.problem("servers", fmt.Errorf(`expected an array such as ["10.0.0.11:80", { address = "10.0.0.12:80", weight = 2 }], found %s`, describe(v.v)))
		return
	}
	for i, item := range list {
		at := "servers[" + strconv.Itoa(i) + "]"
		srv, ok := Server{Weight: 1}, true
		switch s := item.(type) {
		case string:
			srv.Address = s
		case map[string]any:
			srv, ok = o.server(at, s)
		default:
			o.problem(at, fmt.Errorf(`expected "host:port" or { address = "host:port", weight = 2 }, found %s`, describe(item)))
			ok = false
		}
		if !ok { // keep the indexes; validation says nothing more of it
			o.reported(at)
			srv = Server{Weight: 1}
		}
		b.Servers = append(b.Servers, srv)
	}
	if len(b.Servers) > 1 {
		b.Health.Check = Defaults().SeveralServersCheck
	}
}

// server reads one inline table of servers.
func (o object) server(at string, t map[string]any) (Server, bool) {
	srv := Server{Weight: 1}
	ok := true
	for k, v := range t {
		switch k {
		case "address":
			s, isStr := v.(string)
			if !isStr {
				o.problem(at+".address", fmt.Errorf("expected a string, found %s", describe(v)))
				ok = false
			}
			srv.Address = s
		case "weight":
			n, isInt := v.(int64)
			if !isInt || n < 1 || n > maxWeight {
				o.problem(at+".weight", fmt.Errorf("expected an integer from 1 to %d, found %s", maxWeight, describe(v)))
				ok = false
			}
			srv.Weight = int(n)
		} // other keys are reported as unknown with their line by Parse

	}
	return srv, ok
}

// maxWeight bounds a server's weight: shares finer than 1 in 1000 mean nothing.
const maxWeight = 1000

func (o object) health(r *rawHealth, h *Health) {
	o.str("health.check", r.Check, (*string)(&h.Check))
	o.duration("health.interval", r.Interval, &h.Interval)
	o.duration("health.timeout", r.Timeout, &h.Timeout)
	o.integer("health.rise", r.Rise, &h.Rise)
	o.integer("health.fall", r.Fall, &h.Fall)
	o.str("health.http_request", r.HTTPRequest, &h.HTTPRequest)
	o.integer("health.expect_status", r.ExpectStatus, &h.ExpectStatus)
	o.integer("health.eject_after", r.EjectAfter, &h.EjectAfter)
	o.duration("health.ease_in", r.EaseIn, &h.EaseIn)
}

func (o object) close(leg policy.Leg, r *rawClose, c *Close) {
	o.parse("close.time_wait", r.TimeWait, func(s string) error {
		t, err := policy.ParseTarget(leg, s)
		if err == nil {
			c.TimeWait = t
		}
		return err
	})
	o.duration("close.peer_fin_grace", r.PeerFinGrace, &c.PeerFinGrace)
	o.boolean("close.adaptive_grace", r.AdaptiveGrace, &c.AdaptiveGrace)
	o.parse("close.fallback", r.Fallback, func(s string) error {
		f, err := policy.ParseFallback(s)
		if err == nil {
			c.Fallback = f
		}
		return err
	})
	o.duration("close.half_close_timeout", r.HalfCloseTimeout, &c.HalfCloseTimeout)
	o.duration("close.drain_timeout", r.DrainTimeout, &c.DrainTimeout)
}

// name is a table's name for labels, if it was written as a string.
func name(v *value) string {
	if v == nil {
		return ""
	}
	s, _ := v.v.(string)
	return s
}

func (o object) problem(key string, err error) { o.p.add(o.label, o.at, key, err) }

// reported marks key as having had its problem, so validation adds none.
func (o object) reported(key string) { o.p.seen[seenID(o.at, key)] = true }

// str sets *dst to the string at key, if one was written.
func (o object) str(key string, v *value, dst *string) {
	o.parse(key, v, func(s string) error { *dst = s; return nil })
}

// parse hands the string at key, if one was written, to set.
func (o object) parse(key string, v *value, set func(string) error) {
	if v == nil {
		return
	}
	s, ok := v.v.(string)
	if !ok {
		o.problem(key, fmt.Errorf("expected a string, found %s", describe(v.v)))
		return
	}
	if err := set(s); err != nil {
		o.problem(key, err)
	}
}

// float sets *dst to the number at key, if one was written.
func (o object) float(key string, v *value, dst *float64) {
	if v == nil {
		return
	}
	switch n := v.v.(type) {
	case float64:
		*dst = n
	case int64:
		*dst = float64(n)
	default:
		o.problem(key, fmt.Errorf("expected a number such as 0.8, found %s", describe(v.v)))
	}
}

// integer sets *dst to the integer at key, if one was written.
func (o object) integer(key string, v *value, dst *int) {
	if v == nil {
		return
	}
	n, ok := v.v.(int64)
	if !ok {
		o.problem(key, fmt.Errorf("expected an integer, found %s", describe(v.v)))
		return
	}
	if n < 0 || n > 1<<20 {
		o.problem(key, fmt.Errorf("%d is out of range 0 to %d", n, 1<<20))
		return
	}
	*dst = int(n)
}

// duration sets *dst to the duration at key, if one was written.
func (o object) boolean(key string, v *value, dst *bool) {
	if v == nil {
		return
	}
	b, ok := v.v.(bool)
	if !ok {
		o.problem(key, fmt.Errorf("expected true or false, found %s", describe(v.v)))
		return
	}
	*dst = b
}

func (o object) duration(key string, v *value, dst *time.Duration) {
	if v == nil {
		return
	}
	s, ok := v.v.(string)
	if !ok {
		o.problem(key, fmt.Errorf("expected a duration string such as \"1s\" or \"250ms\", found %s", describe(v.v)))
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		o.problem(key, fmt.Errorf("%q is not a duration such as \"1s\" or \"250ms\"", s))
		return
	}
	*dst = d
}

// prefixes reads an array of CIDR prefixes or bare addresses.
func (o object) prefixes(key string, v *value, dst *[]netip.Prefix) {
	if v == nil {
		return
	}
	list, ok := v.v.([]any)
	if !ok {
		o.problem(key, fmt.Errorf("expected an array of strings such as [\"10.0.0.0/8\"], found %s", describe(v.v)))
		return
	}
	var out []netip.Prefix
	for i, item := range list {
		at := key + "[" + strconv.Itoa(i) + "]"
		s, ok := item.(string)
		if !ok {
			o.problem(at, fmt.Errorf("expected a string, found %s", describe(item)))
			continue
		}
		pfx, err := parsePrefix(s)
		if err != nil {
			o.problem(at, err)
			continue
		}
		out = append(out, pfx)
	}
	*dst = out
}

// parsePrefix reads "10.0.0.0/8" or a bare address, taken as a single host.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	if pfx.Masked() != pfx {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length; did you mean %q or %q?",
			s, pfx.Masked().String(), netip.PrefixFrom(pfx.Addr(), pfx.Addr().BitLen()).String())
	}
	return pfx, nil
}

// describe names a decoded TOML value's type for messages.
func describe(v any) string {
	switch v := v.(type) {
	case int64:
		return "integer " + strconv.FormatInt(v, 10)
	case float64:
		return "float " + strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case time.Time:
		return "date-time"
	case []any:
		return "array"
	case []map[string]any:
		return "array of tables"
	case map[string]any:
		return "table"
	case string:
		return "string"
	}
	return fmt.Sprintf("%T", v)
}
