package config

import (
	"reflect"
	"strings"
	"testing"
)

// servers reads strings and inline tables; the health check defaults to
// tcp only with more than one server; check written wins.
func TestServers(t *testing.T) {
	const head = "[[listener]]\nname = \"web\"\nlisten = \":8080\"\nbackend = \"app\"\n[[backend]]\nname = \"app\"\n"
	tests := []struct {
		name      string
		src       string
		servers   []Server
		check     HealthCheck
		serverLst []Server
	}{
		{"address", `address = "10.0.0.1:80"`, nil, HealthOff, []Server{{"10.0.0.1:80", 1}}},
		{"one server", `servers = ["10.0.0.1:80"]`, []Server{{"10.0.0.1:80", 1}}, HealthOff, nil},
		{"mixed", `servers = ["10.0.0.1:80", { address = "10.0.0.2:80", weight = 3 }]`,
			[]Server{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 3}}, HealthTCP, nil},
		{"check written", "servers = [\"10.0.0.1:80\", \"10.0.0.2:80\"]\n[backend.health]\ncheck = \"off\"",
			[]Server{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 1}}, HealthOff, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustParse(t, head+tt.src+"\n").Backends[0]
			if !reflect.DeepEqual(b.Servers, tt.servers) || b.Health.Check != tt.check {
				t.Fatalf("servers %v check %s, want %v %s", b.Servers, b.Health.Check, tt.servers, tt.check)
			}
			want := tt.serverLst
			if want == nil {
				want = tt.servers
			}
			if got := b.ServerList(); !reflect.DeepEqual(got, want) {
				t.Errorf("ServerList %v, want %v", got, want)
			}
		})
	}
	_, err := Parse([]byte(head+"servers = []\n"), "c.toml")
	if err == nil || !strings.Contains(err.Error(), "address: missing") {
		t.Errorf("empty servers: %v, want address missing", err)
	}
}
