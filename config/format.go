package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TOML renders c as a TOML document in the schema Parse reads, every key
// written out, defaults included: Parse(c.TOML(), name) yields c again.
// The check subcommand prints it as the effective configuration.
func (c *Config) TOML() []byte {
	w := &tomlWriter{}
	w.keys("", c)
	for i := range c.Listeners {
		w.table("[[listener]]")
		w.keys("listener", &c.Listeners[i])
	}
	for i := range c.Backends {
		w.table("[[backend]]")
		w.keys("backend", &c.Backends[i])
	}
	return []byte(w.String())
}

type tomlWriter struct {
	strings.Builder
	indent string
}

// keys writes the keys of scope of obj, opening each table of the scope
// as it comes; arrays of tables are the caller's.
func (w *tomlWriter) keys(scope string, obj any) {
	for _, k := range keysIn(scope) {
		switch {
		case k.kind == table:
			w.table("[" + k.path + "]")
		case k.kind == array:
		case !k.written(obj):
		default:
			w.kv(k.path[strings.LastIndex(k.path, ".")+1:], format(k.value(obj), scope))
		}
	}
}

// written reports whether the TOML form of obj has key k: address and
// servers are two spellings of a backend's servers, and one is written.
func (k *key) written(obj any) bool {
	switch k.path {
	case "backend.address":
		return len(obj.(*Backend).Servers) == 0
	case "backend.servers":
		return len(obj.(*Backend).Servers) > 0
	}
	return true
}

func (w *tomlWriter) table(header string) {
	w.indent = strings.Repeat("  ", strings.Count(header, "."))
	fmt.Fprintf(w, "\n%s%s\n", w.indent, header)
}

// kv writes key = val, val in its TOML form.
func (w *tomlWriter) kv(key, val string) {
	fmt.Fprintf(w, "%s%s = %s\n", w.indent, key, val)
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
