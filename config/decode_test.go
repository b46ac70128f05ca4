package config

import (
	"errors"
	"slices"
	"testing"
)

// The TOML library's own errors name their file and line too.
func TestTOMLErrorsNameTheirLine(t *testing.T) {
	tests := []struct {
		name, src, want string
		line            int
	}{
		{"key written twice in one listener", "[[listener]]\nname = \"a\"\nlisten = \":1\"\nname = \"b\"\n",
			`config.toml:4: listener.name: already written on line 2`, 4},
		{"table opened twice", "[log]\nlevel = \"info\"\n\n[log]\nteardown = \"all\"\n",
			`config.toml:4: log: already written on line 1`, 4},
		{"key twice in an inline table", minimal + "  [backend.pool]\n  warm = 1\n\nx = { a = 1, a = 2 }\n",
			`config.toml:13: backend.pool.x.a: written twice`, 13},
		// A number no int64 holds: the decoder stops at it, before any
		// key's own range check could name it.
		{"number past int64", "[[listener]]\nname = \"web\"\nidle_timeout = 99999999999999999999\n",
			`config.toml:3: listener.idle_timeout: 99999999999999999999 is out of range for int64`, 3},
		{"unterminated string", "[[listener]]\nname = \"web\nlisten = \":1\"\n",
			`config.toml:2: strings cannot contain newlines`, 2},
		{"value missing", "shutdown_timeout =\n",
			`config.toml:1: expected value but found '\n' instead`, 1},
		// The decoder counts the newline that cut the header short.
		{"table header cut short", "shutdown_timeout = \"1s\"\n[backend.close\nx = 1\n",
			`config.toml:2: expected '.' or ']' to end table name, but got '\n' instead`, 2},
		{"array table header cut short", "[[listener]\nname = \"w\"\n",
			`config.toml:1: expected end of table array name delimiter ']', but got '\n' instead`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrors(t, tt.src)
			if !slices.Equal(got, []string{tt.want}) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
			_, err := Parse([]byte(tt.src), "config.toml")
			var e *Error
			if !errors.As(err, &e) || e.File != "config.toml" || e.Line != tt.line {
				t.Errorf("errors.As: %+v, want file config.toml line %d", e, tt.line)
			}
		})
	}
}
