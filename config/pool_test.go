package config

import (
	"strconv"
	"strings"
	"testing"
)

func TestPoolAndProtocol(t *testing.T) {
	base := "[[listener]]\nname = \"web\"\nlisten = \":8080\"\nbackend = \"app\"\n[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:80\"\n"
	cases := []struct {
		name, extra, want string
	}{
		{"http1 reuse with a PROXY header to send", "protocol = \"http1\"\nsend_proxy_protocol = \"v2\"\n",
			`c.toml:9: backend "app": send_proxy_protocol: "v2" cannot be used with protocol = "http1"`},
		{"unknown protocol", "protocol = \"http2\"\n", `c.toml:8: backend "app": protocol: "http2" is not one of tcp, http1`},
		{"warm above the cap", "[backend.pool]\nwarm = 20\nmax_conns = 10\n", `c.toml:9: backend "app": pool.warm: 20 is more than pool.max_conns 10`},
		{"negative warm", "[backend.pool]\nwarm = -1\n", `c.toml:9: backend "app": pool.warm: -1 is not from 0 to 1048576`},
		{"a warm count past the cap", "[backend.pool]\nwarm = 2000000\nmax_conns = 0\n", `c.toml:9: backend "app": pool.warm: 2000000 is not from 0 to 1048576`},
		{"warm as a string", "[backend.pool]\nwarm = \"8\"\n", `c.toml:9: backend "app": pool.warm: expected an integer, found string`},
		{"zero idle age", "[backend.pool]\nmax_idle_age = \"0s\"\n", `c.toml:9: backend "app": pool.max_idle_age: must be greater than 0`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base+tc.extra), "c.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
	cfg, err := Parse([]byte(base+"protocol = \"http1\"\n[backend.pool]\nwarm = 0\nmax_conns = 0\n"), "c.toml")
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Backends[0]; b.Protocol != ProtocolHTTP1 || b.Pool.Warm != 0 || b.Pool.MaxConns != 0 || b.Pool.MaxIdleAge != Defaults().Backend.Pool.MaxIdleAge {
		t.Errorf("backend %+v", b)
	}
}

// An integer out of its key's range says the key's own range, not a
// blanket one; tw_budget may exceed 2^20, as tcp_max_tw_buckets may.
func TestIntegerRangesAreTheKeys(t *testing.T) {
	for src, want := range map[string]string{
		"[backend.health]\nrise = -1\n":             `config.toml:11: backend "app": health.rise: -1 is not from 1 to 100`,
		"[backend.health]\nexpect_status = -200\n":  `config.toml:11: backend "app": health.expect_status: -200 is not an HTTP status from 100 to 599`,
		"[backend.health]\neject_after = 5000000\n": `config.toml:11: backend "app": health.eject_after: 5000000 is not from 0 (off) to 100`,
		"[backend.health]\nfall = 9999999999\n":     `config.toml:11: backend "app": health.fall: 9999999999 is not from 1 to 100`,
		"[backend.health]\ninterval = \"1ms\"\n":    `config.toml:11: backend "app": health.interval: 1ms is below the 100ms floor`,
		"[backend.health]\ntimeout = \"1ns\"\n":     `config.toml:11: backend "app": health.timeout: 1ns is below the 1ms floor`,
	} {
		if strings.Contains(src, "9999999999") && strconv.IntSize == 32 {
			want = `config.toml:11: backend "app": health.fall: 9999999999 is out of range` // no int holds it
		}
		got := parseErrors(t, minimal+src)
		if len(got) != 1 || got[0] != want {
			t.Errorf("%q: %q, want %q", src, got, want)
		}
	}
	if got := parseErrors(t, strings.Replace(minimal, "backend = \"app\"", "backend = \"app\"\nmax_connections = -1", 1)); len(got) != 1 ||
		got[0] != `config.toml:6: listener "web": max_connections: -1 is not from 0 (no cap) to 1048576` {
		t.Errorf("max_connections = -1: %q", got)
	}
	if got := parseErrors(t, "[auto]\ntw_budget = 2147483648\n"+minimal); strconv.IntSize == 64 &&
		(len(got) != 1 || got[0] != `config.toml:2: auto.tw_budget: 2147483648 is not from 0 (half of net.ipv4.tcp_max_tw_buckets) to 2147483647`) {
		t.Errorf("tw_budget = 2147483648: %q", got)
	}
	c := mustParse(t, "[auto]\ntw_budget = 4000000\n"+minimal)
	if c.Auto.TWBudget != 4000000 {
		t.Errorf("auto.tw_budget %d, want 4000000", c.Auto.TWBudget)
	}
}
