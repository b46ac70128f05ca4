package config

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// The schema is one table, keys (keys.go): every key's path, default,
// whether a reload applies it, its documentation and its own checks. The
// decoder, the defaults, the TOML writer, the per-key validation,
// config.example.toml and docs/configuration.md all follow it; checks
// that relate several keys stay in validate.go.

// key is one entry of the schema: a key with a value, or a table.
type key struct {
	path string // as TOML names it, arrays of tables unnumbered: "listener.close.time_wait"
	// kind is a table's: table or array (of tables); empty for a key with
	// a value.
	kind string
	// at returns a pointer to the key's field in its object: a *Config
	// for top-level keys, a *Listener or *Backend for theirs. nil for a
	// table.
	at func(obj any) any
	// def is the default, of the field's type; nil, with example set,
	// when the key must be written.
	def any
	// example is the value config.example.toml shows for a key without a
	// default.
	example any
	// restart: a reload leaves the running value as it was; only a
	// restart applies a change.
	restart bool
	// check is the key's own validation, of its value alone; nil: none
	// beyond its type.
	check func(v any) error
	// doc is the key's documentation, wrapped as it reads in
	// config.example.toml; "- " starts a list item, a blank line a new
	// paragraph.
	doc string
	// apart: config.example.toml shows the key in a second element of its
	// array of tables, after the first one's tables.
	apart bool
}

// field returns at for keys of objects of type T.
func field[T any](f func(*T) any) func(any) any {
	return func(obj any) any { return f(obj.(*T)) }
}

const (
	table = "table"
	array = "array"
)

// scope is the array of tables the key belongs to, "listener" or
// "backend", or "" for a top-level key or table.
func (k *key) scope() string {
	first, _, nested := strings.Cut(k.path, ".")
	if nested && (first == "listener" || first == "backend") {
		return first
	}
	return ""
}

// rel is the key's path within its object: "close.time_wait".
func (k *key) rel() string {
	if s := k.scope(); s != "" {
		return k.path[len(s)+1:]
	}
	return k.path
}

// leg is the leg whose close policy a key of this scope configures.
func leg(scope string) policy.Leg {
	if scope == "backend" {
		return policy.Back
	}
	return policy.Front
}

// value reads the key's field of obj.
func (k *key) value(obj any) any { return reflect.ValueOf(k.at(obj)).Elem().Interface() }

// set writes v, of the field's type, to the key's field of obj.
func (k *key) set(obj any, v any) {
	dst := reflect.ValueOf(k.at(obj)).Elem()
	if v == nil {
		dst.SetZero()
		return
	}
	dst.Set(reflect.ValueOf(v).Convert(dst.Type()))
}

// keysIn returns the keys of scope, tables included, in schema order.
func keysIn(scope string) []*key {
	var out []*key
	for i := range keys {
		if k := &keys[i]; k.scope() == scope {
			out = append(out, k)
		}
	}
	return out
}

// schema holds every key path the schema has, tables included, such as
// "listener.close.time_wait"; arrays of tables are not numbered.
var schema = func() map[string]bool {
	s := maps.Clone(handRead)
	for _, k := range keys {
		s[k.path] = true
	}
	return s
}()

// handRead holds the keys of a server's inline table, which servers reads
// itself.
var handRead = map[string]bool{"backend.servers.address": true, "backend.servers.weight": true}

// defaults is Defaults' result, built once from the schema.
var defaults = sync.OnceValue(func() Default {
	var c Config
	var l Listener
	var b Backend
	objs := map[string]any{"": &c, "listener": &l, "backend": &b}
	for i := range keys {
		if k := &keys[i]; k.at != nil {
			k.set(objs[k.scope()], k.def)
		}
	}
	return Default{
		ShutdownTimeout: c.ShutdownTimeout, Relay: c.Relay, Log: c.Log, Admin: c.Admin, Auto: c.Auto,
		Listener: l, Backend: b,
		SeveralServersCheck: HealthTCP,
	}
})

// format writes v, the value of a key of scope, as a TOML value.
func format(v any, scope string) string {
	switch v := v.(type) {
	case time.Duration:
		return quote(formatDuration(v))
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case policy.Target:
		return quote(v.Word(leg(scope)))
	case []netip.Prefix:
		items := make([]string, len(v))
		for i, p := range v {
			items[i] = quote(p.String())
			if p.IsSingleIP() {
				items[i] = quote(p.Addr().String())
			}
		}
		return "[" + strings.Join(items, ", ") + "]"
	case []Server:
		items := make([]string, len(v))
		for i, srv := range v {
			items[i] = quote(srv.Address)
			if srv.Weight != 1 {
				items[i] = fmt.Sprintf("{ address = %s, weight = %d }", quote(srv.Address), srv.Weight)
			}
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		return quote(rv.String())
	}
	panic(fmt.Sprintf("config: no TOML form for %T", v))
}
