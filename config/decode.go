package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// object converts the keys of one table, reporting problems against it.
type object struct {
	p     *problems
	label string   // `listener "web"`; empty at top level
	at    []string // indexed path of the table: listener.0
}

// convert turns doc, the decoded TOML document, into a Config, starting
// from the defaults. Only types and spellings are checked here; Validate
// checks the values.
func convert(doc map[string]any, p *problems) *Config {
	d := Defaults()
	c := &Config{ShutdownTimeout: d.ShutdownTimeout, Relay: d.Relay, Log: d.Log, Admin: d.Admin, Auto: d.Auto}
	top := object{p: p}
	top.decodeKeys("", doc, c)
	for i, t := range p.tables(doc, "listener") {
		l := d.Listener
		p.object("listener", i, name(t["name"])).decodeKeys("listener", t, &l)
		c.Listeners = append(c.Listeners, l)
	}
	for i, t := range p.tables(doc, "backend") {
		b := d.Backend
		p.object("backend", i, name(t["name"])).decodeKeys("backend", t, &b)
		c.Backends = append(c.Backends, b)
	}
	return c
}

// tables returns the tables of the array of tables at key of doc.
func (p *problems) tables(doc map[string]any, key string) []map[string]any {
	switch v := doc[key].(type) {
	case nil:
		return nil
	case []map[string]any:
		return v
	case []any:
		out := make([]map[string]any, len(v))
		for i, item := range v {
			t, ok := item.(map[string]any)
			if !ok {
				p.tableType([]string{key}, "an array of tables", v)
				return nil
			}
			out[i] = t
		}
		return out
	case map[string]any:
		p.seen[seenID(nil, key)] = true // not also "none defined"
		p.errs = append(p.errs, &Error{File: p.file, Line: p.pos.line([]string{key}), Key: key,
			Err: fmt.Errorf("written as [%s], a single table; write [[%s]], once before each %s's keys", key, key, key)})
		return nil
	default:
		p.tableType([]string{key}, "an array of tables", v)
		return nil
	}
}

// tableType reports a table, or array of tables, at path written as some
// other type.
func (p *problems) tableType(path []string, want string, v any) {
	var key []string
	for _, part := range path {
		if !isIndex(part) {
			key = append(key, part)
		}
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: p.pos.line(path), Key: strings.Join(key, "."),
		Err: fmt.Errorf("expected %s, found %s", want, typeName(v))})
}

// decodeKeys converts the keys of scope written in t into obj.
func (o object) decodeKeys(scope string, t map[string]any, obj any) {
	for _, k := range keysIn(scope) {
		v, ok := valueAt(t, k.rel())
		switch {
		case !ok || k.kind == array:
		case k.kind == table:
			if _, isTable := v.(map[string]any); !isTable {
				// on its own line: [[listener.close]] is the array's first
				// element, the key alone the parent's header
				o.problemOn(k.rel()+index(0), k.rel(), fmt.Errorf("expected a table, found %s", typeName(v)))
			}
		default:
			o.decode(k, t, v, obj)
		}
	}
}

// valueAt returns the value at the dotted path rel of t, if written.
func valueAt(t map[string]any, rel string) (any, bool) {
	parts := strings.Split(rel, ".")
	for _, part := range parts[:len(parts)-1] {
		next, ok := t[part].(map[string]any)
		if !ok {
			return nil, false
		}
		t = next
	}
	v, ok := t[parts[len(parts)-1]]
	return v, ok
}

// decode converts v, the value written for k in table t, into obj.
func (o object) decode(k *key, t map[string]any, v any, obj any) {
	rel := k.rel()
	switch dst := k.at(obj).(type) {
	case *time.Duration:
		o.duration(rel, v, dst)
	case *int:
		o.integer(rel, v, dst)
	case *float64:
		o.float(rel, v, dst)
	case *bool:
		o.boolean(rel, v, dst)
	case *[]netip.Prefix:
		o.prefixes(rel, v, dst)
	case *[]Server:
		_, address := t["address"]
		o.servers(address, v, obj.(*Backend))
	case *policy.Target:
		o.parse(rel, v, func(s string) error {
			t, err := policy.ParseTarget(leg(k.scope()), s)
			if err == nil {
				*dst = t
			}
			return err
		})
	case *policy.Fallback:
		o.parse(rel, v, func(s string) error {
			f, err := policy.ParseFallback(s)
			if err == nil {
				*dst = f
			}
			return err
		})
	default: // a string, or a word of a string type
		o.parse(rel, v, func(s string) error {
			reflect.ValueOf(dst).Elem().SetString(s)
			return nil
		})
	}
}

// servers reads servers = ["host:port", { address = "host:port", weight = 2 }]
// and picks the default health check, which depends on how many servers
// there are.
func (o object) servers(address bool, v any, b *Backend) {
	if address {
		o.problem("servers", errors.New("give either address or servers, not both"))
	}
	list, ok := v.([]any)
	if !ok {
		o.reported("address") // no second problem for the same backend's servers
		o.problem("servers", fmt.Errorf(`expected an array such as ["10.0.0.11:80", { address = "10.0.0.12:80", weight = 2 }], found %s`, describe(v)))
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

// name is a table's name for labels, if it was written as a string.
func name(v any) string {
	s, _ := v.(string)
	return s
}

func (o object) problem(key string, err error) { o.p.add(o.label, o.at, key, key, err) }

// problemOn adds a problem of key placed on the line of another key of
// the object, the one an operator would change.
func (o object) problemOn(lineKey, key string, err error) { o.p.add(o.label, o.at, lineKey, key, err) }

// written says whether key of the object is in the source.
func (o object) written(key string) bool {
	_, ok := o.p.pos[pathKey(slices.Concat(o.at, strings.Split(key, ".")))]
	return ok
}

// failed says whether key of the object had a problem already: a check
// across keys skips a value that is wrong on its own, rather than add a
// second error (on a key perhaps not even written) about it.
func (o object) failed(key string) bool { return o.p.seen[seenID(o.at, key)] }

// reported marks key as having had its problem, so validation adds none.
func (o object) reported(key string) { o.p.seen[seenID(o.at, key)] = true }

// parse hands the string at key, if one was written, to set.
func (o object) parse(key string, v any, set func(string) error) {
	s, ok := v.(string)
	if !ok {
		o.problem(key, fmt.Errorf("expected a string, found %s", describe(v)))
		return
	}
	if err := set(s); err != nil {
		o.problem(key, err)
	}
}

// float sets *dst to the number at key, if one was written.
func (o object) float(key string, v any, dst *float64) {
	switch n := v.(type) {
	case float64:
		*dst = n
	case int64:
		*dst = float64(n)
	default:
		o.problem(key, fmt.Errorf("expected a number such as 0.8, found %s", describe(v)))
	}
}

// integer sets *dst to the integer at key, if one was written.
func (o object) integer(key string, v any, dst *int) {
	n, ok := v.(int64)
	if !ok {
		o.problem(key, fmt.Errorf("expected an integer, found %s", describe(v)))
		return
	}
	if int64(int(n)) != n { // a 32-bit int; elsewhere each key's own check says its range
		o.problem(key, fmt.Errorf("%d is out of range", n))
		return
	}
	*dst = int(n)
}

// duration sets *dst to the duration at key, if one was written.
func (o object) boolean(key string, v any, dst *bool) {
	b, ok := v.(bool)
	if !ok {
		o.problem(key, fmt.Errorf("expected true or false, found %s", describe(v)))
		return
	}
	*dst = b
}

func (o object) duration(key string, v any, dst *time.Duration) {
	s, ok := v.(string)
	if !ok {
		o.problem(key, fmt.Errorf("expected a duration string such as \"1s\" or \"250ms\", found %s", describe(v)))
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, notNumber := strconv.ParseFloat(s, 64); notNumber == nil {
			o.problem(key, fmt.Errorf("%q has no unit; write %q or %q", s, s+"s", s+"ms"))
			return
		}
		o.problem(key, fmt.Errorf("%q is not a duration such as \"1s\" or \"250ms\"", s))
		return
	}
	*dst = d
}

// prefixes reads an array of CIDR prefixes or bare addresses.
func (o object) prefixes(key string, v any, dst *[]netip.Prefix) {
	list, ok := v.([]any)
	if !ok {
		o.problem(key, fmt.Errorf("expected an array of strings such as [\"10.0.0.0/8\"], found %s", describe(v)))
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
// An IPv4-mapped IPv6 one (::ffff:10.0.0.1, as ss shows a dual-stack
// socket's peer) is read as the IPv4 address or prefix it maps: the proxy
// compares a client's address unmapped, and a mapped prefix would never
// contain it.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		addr = addr.Unmap()
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
	if a := pfx.Addr(); a.Is4In6() { // masked: Bits() is 96 or more
		return netip.PrefixFrom(a.Unmap(), pfx.Bits()-96), nil
	}
	return pfx, nil
}

// typeName names a decoded TOML value's type.
func typeName(v any) string {
	name, _, _ := strings.Cut(describe(v), " ")
	return name
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
