package config

import (
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
		{"negative warm", "[backend.pool]\nwarm = -1\n", `c.toml:9: backend "app": pool.warm: -1 is out of range`},
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
