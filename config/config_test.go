package config

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// minimal is the smallest valid file: only the keys without a default.
const minimal = `
[[listener]]
name = "web"
listen = ":8080"
backend = "app"

[[backend]]
name = "app"
address = "127.0.0.1:8081"
`

func mustParse(t testing.TB, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "config.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// parseErrors returns the lines of Parse's error, failing if there is none.
func parseErrors(t testing.TB, src string) []string {
	t.Helper()
	c, err := Parse([]byte(src), "config.toml")
	if err == nil {
		t.Fatalf("Parse succeeded; want an error. Effective config:\n%s", c.TOML())
	}
	if c != nil {
		t.Errorf("Parse returned a Config along with an error")
	}
	return strings.Split(err.Error(), "\n")
}

func TestEveryDefault(t *testing.T) {
	c := mustParse(t, minimal)
	d := Defaults()
	wantListener := d.Listener
	wantListener.Name, wantListener.Listen, wantListener.Backend = "web", ":8080", "app"
	wantBackend := d.Backend
	wantBackend.Name, wantBackend.Address = "app", "127.0.0.1:8081"
	want := &Config{
		ShutdownTimeout: d.ShutdownTimeout,
		Relay:           d.Relay,
		Log:             d.Log,
		Admin:           d.Admin,
		Auto:            d.Auto,
		Listeners:       []Listener{wantListener},
		Backends:        []Backend{wantBackend},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("minimal config:\ngot  %+v\nwant %+v", c, want)
	}

	// The defaults themselves, as documented in config.example.toml.
	tests := []struct {
		key       string
		got, want any
	}{
		{"shutdown_timeout", c.ShutdownTimeout, 30 * time.Second},
		{"relay", c.Relay, "loop"},
		{"log.level", c.Log.Level, "info"},
		{"log.teardown", c.Log.Teardown, "all"},
		{"log.records_flush", c.Log.RecordsFlush, 100 * time.Millisecond},
		{"listener.proxy_protocol", c.Listeners[0].ProxyProtocol, ProxyProtocolOff},
		{"listener.proxy_protocol_trusted", len(c.Listeners[0].ProxyProtocolTrusted), 0},
		{"listener.proxy_protocol_timeout", c.Listeners[0].ProxyProtocolTimeout, 3 * time.Second},
		{"listener.idle_timeout", c.Listeners[0].IdleTimeout, 60 * time.Second},
		{"listener.close.time_wait", c.Listeners[0].Close.TimeWait, policy.TargetProxy},
		{"listener.close.peer_fin_grace", c.Listeners[0].Close.PeerFinGrace, time.Second},
		{"listener.close.fallback", c.Listeners[0].Close.Fallback, policy.FallbackFIN},
		{"listener.close.half_close_timeout", c.Listeners[0].Close.HalfCloseTimeout, 30 * time.Second},
		{"listener.close.drain_timeout", c.Listeners[0].Close.DrainTimeout, time.Second},
		{"backend.connect_timeout", c.Backends[0].ConnectTimeout, 2 * time.Second},
		{"backend.send_proxy_protocol", c.Backends[0].SendProxyProtocol, SendOff},
		{"backend.tcp_keepalive", c.Backends[0].TCPKeepAlive, false},
		{"backend.close.time_wait", c.Backends[0].Close.TimeWait, policy.TargetPeer},
		{"backend.close.peer_fin_grace", c.Backends[0].Close.PeerFinGrace, time.Second},
		{"backend.close.fallback", c.Backends[0].Close.Fallback, policy.FallbackReset},
		{"backend.close.half_close_timeout", c.Backends[0].Close.HalfCloseTimeout, 30 * time.Second},
		{"backend.close.drain_timeout", c.Backends[0].Close.DrainTimeout, time.Second},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s defaults to %v, want %v", tt.key, tt.got, tt.want)
		}
	}
}

func TestUnknownKeyNamesItsLine(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "misspelt table under the second of two listeners",
			src: minimal + `
[[listener]]
name = "api"
listen = ":8081"
backend = "app"
  [listener.clsoe]
  time_wait = "client"
`,
			want: []string{`config.toml:15: unknown key listener.clsoe (did you mean listener.close?)`},
		},
		{
			name: "same misspelling in two listeners is reported at both",
			src: `
[[listener]]
name = "web"
listen = ":8080"
backend = "app"
idel_timeout = "1s"
[[listener]]
name = "api"
listen = ":8081"
backend = "app"
idel_timeout = "1s"
[[backend]]
name = "app"
address = "127.0.0.1:8081"
`,
			want: []string{
				`config.toml:6: unknown key listener.idel_timeout (did you mean listener.idle_timeout?)`,
				`config.toml:11: unknown key listener.idel_timeout (did you mean listener.idle_timeout?)`,
			},
		},
		{
			name: "top-level key after a multi-line string that looks like keys",
			src: minimal + `
[log]
level = """
shutdown_timeout = "1s"
"""
` + "\nshutdown = 1\n",
			want: []string{
				`config.toml:12: log.level: "shutdown_timeout = \"1s\"\n" is not one of debug, info, warn, error`,
				`config.toml:16: unknown key log.shutdown`,
			},
		},
		{
			name: "dotted key inside a table",
			src:  minimal + "  close.peer_fin = \"1s\"\n",
			want: []string{`config.toml:10: unknown key backend.close.peer_fin`},
		},
		{
			name: "key differing only in case",
			src:  minimal + "Connect_Timeout = \"1s\"\n",
			want: []string{`config.toml:10: unknown key backend.Connect_Timeout (did you mean backend.connect_timeout?)`},
		},
		{
			name: "unknown key in an inline table of an inline array",
			src: `
listener = [
  { name = "web", listen = ":8080", backend = "app" },
  { name = "api", listen = ":8081", backend = "app",
    close = { time_wait = "client", grace = "1s" } },
]
[[backend]]
name = "app"
address = "127.0.0.1:8081"
`,
			want: []string{`config.toml:5: unknown key listener.close.grace`},
		},
		{
			name: "misspelt admin key",
			src:  "[admin]\nlisten_addr = \"127.0.0.1:9901\"\n" + minimal,
			want: []string{`config.toml:2: unknown key admin.listen_addr`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrors(t, tt.src)
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestUnknownKeyIsErrUnknownKey(t *testing.T) {
	_, err := Parse([]byte(minimal+"colour = true\n"), "config.toml")
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("errors.Is(%v, ErrUnknownKey) = false", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 10 || e.File != "config.toml" {
		t.Fatalf("errors.As: %+v", e)
	}
}

func TestWrongTypeNamesItsLine(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{
			name: "number where a duration string is expected",
			src:  "shutdown_timeout = 30\n" + minimal,
			want: `config.toml:1: shutdown_timeout: expected a duration string such as "1s" or "250ms", found integer 30`,
		},
		{
			name: "boolean where a word is expected, second backend",
			src:  minimal + "[[backend]]\nname = \"b\"\naddress = \"h:1\"\nsend_proxy_protocol = true\n",
			want: `config.toml:13: backend "b": send_proxy_protocol: expected a string, found boolean true`,
		},
		{
			name: "string where a list of prefixes is expected",
			src:  strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nproxy_protocol_trusted = \"10.0.0.0/8\"", 1),
			want: `config.toml:6: listener "web": proxy_protocol_trusted: expected an array of strings such as ["10.0.0.0/8"], found string`,
		},
		{
			name: "string where the close table is expected",
			src:  minimal + "close = \"reset\"\n",
			want: `config.toml:10: backend "app": close: expected a table, found string`,
		},
		{
			name: "an array of tables where the close table is expected",
			src:  minimal + "[[backend.close]]\ntime_wait = \"proxy\"\n",
			want: `config.toml:10: backend "app": close: expected a table, found array`,
		},
		{
			name: "TOML syntax error",
			src:  minimal + "address = \n",
			want: `config.toml:10: expected value but found '\n' instead`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrors(t, tt.src)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// log.records_flush bounds what a crash can lose: 0 or more, at most 10s.
func TestRecordsFlushBounds(t *testing.T) {
	if c := mustParse(t, "[log]\nrecords_flush = \"250ms\"\n"+minimal); c.Log.RecordsFlush != 250*time.Millisecond {
		t.Errorf("records_flush 250ms parsed as %v", c.Log.RecordsFlush)
	}
	if c := mustParse(t, "[log]\nrecords_flush = \"0s\"\n"+minimal); c.Log.RecordsFlush != 0 {
		t.Errorf("records_flush 0s (one write per record) parsed as %v", c.Log.RecordsFlush)
	}
	for src, want := range map[string]string{
		`"1m"`:  `config.toml:2: log.records_flush: 60s is above the 10s ceiling: a crash loses what waits`,
		`"-1s"`: `config.toml:2: log.records_flush: must be 0 (off) or more, not -1s`,
	} {
		if got := parseErrors(t, "[log]\nrecords_flush = "+src+"\n"+minimal); len(got) != 1 || got[0] != want {
			t.Errorf("records_flush = %s: errors %q, want %q", src, got, want)
		}
	}
}

func TestAutoIsAccepted(t *testing.T) {
	src := minimal + "  [backend.close]\n  time_wait = \"auto\"\n"
	c := mustParse(t, src)
	if c.Backends[0].Close.TimeWait != policy.TargetAuto || c.Auto != Defaults().Auto {
		t.Errorf("time_wait %q auto %+v", c.Backends[0].Close.TimeWait, c.Auto)
	}
	lines := parseErrors(t, "[auto]\nport_share = 0.3\nport_resume = 0.6\nsample_interval = \"10ms\"\n"+minimal)
	want := []string{
		`config.toml:3: auto.port_resume: 0.6 is above auto.port_share 0.3; switching back needs the lower figure`,
		`config.toml:4: auto.sample_interval: 10ms is below the 250ms floor`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", lines, want)
	}
	// A share wrong on its own is one error, not also one about
	// port_resume (not written) measured against it.
	lines = parseErrors(t, "[auto]\nport_share = 0\n"+minimal)
	want = []string{`config.toml:2: auto.port_share: 0 is not a share greater than 0 and at most 1`}
	if !slices.Equal(lines, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", lines, want)
	}
}

func TestValidationCollectsEveryProblem(t *testing.T) {
	src := `
shutdown_timeout = "0s"
[[listener]]
name = "web"
listen = "nowhere"
backend = "db"
proxy_protocol = "required"
[[listener]]
name = "web"
listen = ":1"
backend = "app"
[[backend]]
name = "app"
address = "127.0.0.1:8081"
send_proxy_protocol = "v3"
`
	want := []string{
		`config.toml:2: shutdown_timeout: must be greater than 0, not 0s`,
		`config.toml:5: listener "web": listen: "nowhere" is not a host:port such as "0.0.0.0:8080": missing port in address`,
		`config.toml:6: listener "web": backend: "db" names no [[backend]]; defined: "app"`,
		`config.toml:7: listener "web": proxy_protocol_trusted: missing: proxy_protocol = "required" trusts no source without it; list the load balancers' addresses (e.g. "10.0.0.0/8")`,
		`config.toml:9: listener "web": name: "web" is also the name of listener #1`,
		`config.toml:15: backend "app": send_proxy_protocol: "v3" is not one of off, v1, v2`,
	}
	if got := parseErrors(t, src); !slices.Equal(got, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", got, want)
	}
}

func TestProxyProtocolTrusted(t *testing.T) {
	tests := []struct {
		name    string
		trusted string
		want    []netip.Prefix
		err     string
	}{
		{"CIDR prefixes of both families", `["10.0.0.0/8", "2001:db8::/32"]`,
			[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}, ""},
		{"bare addresses trust one host each", `["192.0.2.7", "::1"]`,
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("::1/128")}, ""},
		{"IPv4-mapped entries are the IPv4 ones (clients are compared unmapped)", `["::ffff:192.0.2.7", "::ffff:10.0.0.0/104", "::ffff:0:0/96"]`,
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0")}, ""},
		{"host bits set past the prefix", `["10.0.0.1/8"]`, nil,
			`proxy_protocol_trusted[0]: "10.0.0.1/8" has bits set past the prefix length; did you mean "10.0.0.0/8" or "10.0.0.1/32"?`},
		{"a name is not an address", `["lb.internal"]`, nil,
			`proxy_protocol_trusted[0]: "lb.internal" is not an IP address or CIDR prefix`},
		{"empty while reading headers", `[]`, nil,
			`proxy_protocol_trusted: empty: no source would be trusted; list the load balancers' addresses (e.g. "10.0.0.0/8")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(minimal, `backend = "app"`,
				"backend = \"app\"\nproxy_protocol = \"optional\"\nproxy_protocol_trusted = "+tt.trusted, 1)
			c, err := Parse([]byte(src), "config.toml")
			if tt.err != "" {
				if err == nil || !strings.HasSuffix(err.Error(), tt.err) {
					t.Fatalf("error %v, want one ending %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Listeners[0].ProxyProtocolTrusted; !slices.Equal(got, tt.want) {
				t.Errorf("trusted = %v, want %v", got, tt.want)
			}
			assertRoundTrip(t, c)
		})
	}
}

func TestTeardown(t *testing.T) {
	for _, tt := range []struct {
		value string
		ok    bool
	}{
		{"all", true}, {"errors", true}, {"sample:0.01", true}, {"sample:1", true},
		{"sample:0", false}, {"sample:1.5", false}, {"sample:NaN", false}, {"sample:", false},
		{"some", false}, {"", false},
	} {
		t.Run(tt.value, func(t *testing.T) {
			_, err := Parse([]byte("[log]\nteardown = \""+tt.value+"\"\n"+minimal), "config.toml")
			if (err == nil) != tt.ok {
				t.Errorf("teardown %q: error %v, want ok=%v", tt.value, err, tt.ok)
			}
		})
	}
}

func TestRelay(t *testing.T) {
	for _, word := range []string{"goroutines", "loop"} {
		if c := mustParse(t, "relay = \""+word+"\"\n"+minimal); c.Relay != word {
			t.Errorf("relay = %q decodes as %q", word, c.Relay)
		}
	}
	want := []string{`config.toml:2: relay: "epoll" is not one of goroutines, loop`}
	if got := parseErrors(t, "shutdown_timeout = \"5s\"\nrelay = \"epoll\"\n"+minimal); !slices.Equal(got, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", got, want)
	}
	want = []string{`config.toml:1: relay: expected a string, found boolean true`}
	if got := parseErrors(t, "relay = true\n"+minimal); !slices.Equal(got, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", got, want)
	}
}

func TestValidateConfigBuiltInCode(t *testing.T) {
	c := mustParse(t, minimal)
	if err := c.Validate(); err != nil {
		t.Fatalf("a parsed config does not validate: %v", err)
	}
	c.Listeners[0].Close.TimeWait = "sometimes"
	c.Backends[0].Close.Fallback = ""
	c.Listeners = append(c.Listeners, c.Listeners[0])
	want := []string{
		`listener "web": close.time_wait: "sometimes" is not one of proxy, client, nowhere, auto`,
		`backend "app": close.fallback: "" is not one of fin, reset`,
		`listener "web": name: "web" is also the name of listener #1`,
		`listener "web": listen: ":8080" is already used by listener "web"`,
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	got := strings.Split(err.Error(), "\n")
	slices.Sort(got)
	slices.Sort(want)
	// The second listener repeats the first's auto target.
	want = append(want, `listener "web": close.time_wait: "sometimes" is not one of proxy, client, nowhere, auto`)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("errors:\ngot  %q\nwant %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Fatalf("error %v, want one starting %q", err, "read config: ")
	}
}

// TestExample loads ../config.example.toml: it must validate, document
// every key the schema has, and show each default as its value.
func TestExample(t *testing.T) {
	c, err := Load("../config.example.toml")
	if err != nil {
		t.Fatalf("config.example.toml does not validate: %v", err)
	}
	d := Defaults()
	if c.ShutdownTimeout != d.ShutdownTimeout || c.Relay != d.Relay || c.Log != d.Log {
		t.Errorf("example top level differs from the defaults: %+v %q %+v", c.ShutdownTimeout, c.Relay, c.Log)
	}
	for _, l := range c.Listeners {
		l.Name, l.Listen, l.Backend = "", "", ""
		if !reflect.DeepEqual(l, d.Listener) {
			t.Errorf("example listener differs from the defaults:\ngot  %+v\nwant %+v", l, d.Listener)
		}
	}
	for _, b := range c.Backends {
		want := d.Backend
		if len(b.Servers) > 1 {
			want.Health.Check = d.SeveralServersCheck
		}
		b.Name, b.Address, b.Servers = "", "", nil
		if !reflect.DeepEqual(b, want) {
			t.Errorf("example backend differs from the defaults:\ngot  %+v\nwant %+v", b, d.Backend)
		}
	}
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	for _, s := range scanSites(string(data)) {
		written[strings.Join(s.key, ".")] = true
	}
	for key := range schema {
		if !written[key] {
			t.Errorf("config.example.toml does not document %s", key)
		}
	}
}

func TestNeedsNetAdmin(t *testing.T) {
	cases := []struct {
		name string
		toml string
		want []string
	}{
		{"defaults need nothing", "", nil},
		{"redirect needs nothing", `intercept = "redirect"`, nil},
		{"tproxy listener", `intercept = "tproxy"`, []string{`listener "web": intercept = "tproxy"`}},
		{"client source", "[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:80\"\nsource = \"client\"",
			[]string{`backend "app": source = "client"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := "[[listener]]\nname = \"web\"\nlisten = \":8080\"\nbackend = \"app\"\n" + tc.toml
			if !strings.Contains(tc.toml, "[[backend]]") {
				doc += "\n[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:80\"\n"
			}
			c, err := Parse([]byte(doc), "t.toml")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.NeedsNetAdmin(); !slices.Equal(got, tc.want) {
				t.Errorf("NeedsNetAdmin() = %q, want %q", got, tc.want)
			}
		})
	}
}
