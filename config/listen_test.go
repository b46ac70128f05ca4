package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Two listeners cannot bind one address; the error names both lines.
func TestDuplicateListen(t *testing.T) {
	const backend = "\n[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:8081\"\n"
	listener := func(name, listen string) string {
		return "\n[[listener]]\nname = \"" + name + "\"\nlisten = \"" + listen + "\"\nbackend = \"app\"\n"
	}
	tests := []struct {
		name   string
		listen [2]string
		want   []string
	}{
		{"same address", [2]string{"127.0.0.1:8080", "127.0.0.1:8080"},
			[]string{`config.toml:9: listener "b": listen: "127.0.0.1:8080" is already used by listener "a" (line 4)`}},
		{"empty host and 0.0.0.0 are one", [2]string{":8080", "0.0.0.0:8080"},
			[]string{`config.toml:9: listener "b": listen: "0.0.0.0:8080" is already used by listener "a" (line 4)`}},
		{"[::] is every address too", [2]string{"0.0.0.0:8080", "[::]:8080"},
			[]string{`config.toml:9: listener "b": listen: "[::]:8080" is already used by listener "a" (line 4)`}},
		{"a wildcard overlaps an address on its port", [2]string{"127.0.0.1:8080", "0.0.0.0:8080"},
			[]string{`config.toml:9: listener "b": listen: "0.0.0.0:8080" overlaps listener "a" (line 4, "127.0.0.1:8080"): a wildcard address takes the port on every address`}},
		{"and the other way round", [2]string{":8080", "[::1]:8080"},
			[]string{`config.toml:9: listener "b": listen: "[::1]:8080" overlaps listener "a" (line 4, ":8080"): a wildcard address takes the port on every address`}},
		{"localhost is 127.0.0.1", [2]string{"localhost:8080", "127.0.0.1:8080"},
			[]string{`config.toml:9: listener "b": listen: "127.0.0.1:8080" is already used by listener "a" (line 4)`}},
		{"port 0 picks a free port each time", [2]string{"127.0.0.1:0", "127.0.0.1:0"}, nil},
		{"other address, same port", [2]string{"127.0.0.1:8080", "127.0.0.2:8080"}, nil},
		{"same address, other port", [2]string{":8080", ":8081"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := listener("a", tt.listen[0]) + listener("b", tt.listen[1]) + backend
			_, err := Parse([]byte(src), "config.toml")
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
	c := mustParse(t, minimal)
	c.Listeners = append(c.Listeners, c.Listeners[0])
	c.Listeners[1].Name = "api"
	if err := c.Validate(); err == nil || err.Error() != `listener "api": listen: ":8080" is already used by listener "web"` {
		t.Errorf("Validate: %v", err)
	}
}

// admin.listen where a listener listens passes nowhere: run would bind the
// listener, then fail on the admin port without naming what holds it.
func TestAdminListenApartFromListeners(t *testing.T) {
	const rest = "\n[[listener]]\nname = \"web\"\nlisten = \"0.0.0.0:8080\"\nbackend = \"app\"\n\n[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:8081\"\n"
	for admin, want := range map[string]string{
		"127.0.0.1:8080": `config.toml:2: admin.listen: "127.0.0.1:8080" overlaps listener "web" (line 6, "0.0.0.0:8080"): a wildcard address takes the port on every address`,
		":8080":          `config.toml:2: admin.listen: ":8080" is already used by listener "web" (line 6)`,
		"127.0.0.1:9901": "",
		"off":            "",
	} {
		_, err := Parse([]byte("[admin]\nlisten = \""+admin+"\"\n"+rest), "config.toml")
		if got := fmt.Sprint(err); want == "" && err != nil || want != "" && got != want {
			t.Errorf("admin.listen %q: %v, want %q", admin, err, want)
		}
	}
}
