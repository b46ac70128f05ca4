package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// TOML renders c as a TOML document in the schema Parse reads, every key
// written out, defaults included: Parse(c.TOML(), name) yields c again.
// The check subcommand prints it as the effective configuration.
func (c *Config) TOML() []byte {
	w := &tomlWriter{}
	w.kv("shutdown_timeout", formatDuration(c.ShutdownTimeout))
	w.table("[log]")
	w.kv("level", c.Log.Level)
	w.kv("teardown", c.Log.Teardown)
	w.kv("records", c.Log.Records)
	w.table("[admin]")
	w.kv("listen", c.Admin.Listen)
	w.kv("kernel_sample_interval", formatDuration(c.Admin.KernelSample))
	w.table("[auto]")
	w.raw("tw_budget", strconv.Itoa(c.Auto.TWBudget))
	w.raw("tw_resume", strconv.FormatFloat(c.Auto.TWResume, 'g', -1, 64))
	w.raw("port_share", strconv.FormatFloat(c.Auto.PortShare, 'g', -1, 64))
	w.raw("port_resume", strconv.FormatFloat(c.Auto.PortResume, 'g', -1, 64))
	w.kv("sample_interval", formatDuration(c.Auto.SampleInterval))
	for _, l := range c.Listeners {
		w.table("[[listener]]")
		w.kv("name", l.Name)
		w.kv("listen", l.Listen)
		w.kv("backend", l.Backend)
		w.kv("proxy_protocol", string(l.ProxyProtocol))
		trusted := make([]string, len(l.ProxyProtocolTrusted))
		for i, p := range l.ProxyProtocolTrusted {
			trusted[i] = p.String()
			if p.IsSingleIP() {
				trusted[i] = p.Addr().String()
			}
		}
		w.kvList("proxy_protocol_trusted", trusted)
		w.kv("proxy_protocol_timeout", formatDuration(l.ProxyProtocolTimeout))
		w.kv("idle_timeout", formatDuration(l.IdleTimeout))
		w.raw("max_connections", strconv.Itoa(l.MaxConnections))
		w.kv("intercept", string(l.Intercept))
		w.close("[listener.close]", policy.Front, l.Close)
	}
	for _, b := range c.Backends {
		w.table("[[backend]]")
		w.kv("name", b.Name)
		w.servers(b)
		w.kv("balance", string(b.Balance))
		w.kv("protocol", string(b.Protocol))
		w.kv("connect_timeout", formatDuration(b.ConnectTimeout))
		w.kv("send_proxy_protocol", string(b.SendProxyProtocol))
		w.kv("source", string(b.Source))
		w.health(b.Health)
		w.table("[backend.pool]")
		w.raw("warm", strconv.Itoa(b.Pool.Warm))
		w.kv("max_idle_age", formatDuration(b.Pool.MaxIdleAge))
		w.raw("max_conns", strconv.Itoa(b.Pool.MaxConns))
		w.close("[backend.close]", policy.Back, b.Close)
	}
	return []byte(w.String())
}

type tomlWriter struct {
	strings.Builder
	indent string
}

func (w *tomlWriter) table(header string) {
	w.indent = strings.Repeat("  ", strings.Count(header, "."))
	fmt.Fprintf(w, "\n%s%s\n", w.indent, header)
}

func (w *tomlWriter) kv(key, val string) {
	fmt.Fprintf(w, "%s%s = %s\n", w.indent, key, quote(val))
}

// raw writes a value that needs no quoting, such as an integer.
func (w *tomlWriter) raw(key, val string) {
	fmt.Fprintf(w, "%s%s = %s\n", w.indent, key, val)
}

func (w *tomlWriter) kvList(key string, vals []string) {
	quoted := make([]string, len(vals))
	for i, v := range vals {
		quoted[i] = quote(v)
	}
	fmt.Fprintf(w, "%s%s = [%s]\n", w.indent, key, strings.Join(quoted, ", "))
}

// servers writes address, or servers with the weights that are not 1.
func (w *tomlWriter) servers(b Backend) {
	if len(b.Servers) == 0 {
		w.kv("address", b.Address)
		return
	}
	items := make([]string, len(b.Servers))
	for i, srv := range b.Servers {
		items[i] = quote(srv.Address)
		if srv.Weight != 1 {
			items[i] = fmt.Sprintf("{ address = %s, weight = %d }", quote(srv.Address), srv.Weight)
		}
	}
	w.raw("servers", "["+strings.Join(items, ", ")+"]")
}

func (w *tomlWriter) health(h Health) {
	w.table("[backend.health]")
	w.kv("check", string(h.Check))
	w.kv("interval", formatDuration(h.Interval))
	w.kv("timeout", formatDuration(h.Timeout))
	w.raw("rise", strconv.Itoa(h.Rise))
	w.raw("fall", strconv.Itoa(h.Fall))
	w.kv("http_request", h.HTTPRequest)
	w.raw("expect_status", strconv.Itoa(h.ExpectStatus))
	w.raw("eject_after", strconv.Itoa(h.EjectAfter))
	w.kv("ease_in", formatDuration(h.EaseIn))
}

func (w *tomlWriter) close(header string, leg policy.Leg, c Close) {
	w.table(header)
	w.kv("time_wait", c.TimeWait.Word(leg))
	w.kv("peer_fin_grace", formatDuration(c.PeerFinGrace))
	w.raw("adaptive_grace", strconv.FormatBool(c.AdaptiveGrace))
	w.kv("fallback", string(c.Fallback))
	w.kv("half_close_timeout", formatDuration(c.HalfCloseTimeout))
	w.kv("drain_timeout", formatDuration(c.DrainTimeout))
}

// quote writes s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// formatDuration writes d in the largest of s, ms, µs (as us) and ns that
// divides it: "60s" rather than Duration.String's "1m0s".
func formatDuration(d time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "us"}} {
		if d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}
