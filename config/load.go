package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads and parses the configuration file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data, a TOML document, fills in every default and validates
// the result. name labels errors, usually the file's path. On failure the
// error joins one *Error per problem found, each naming its line where the
// problem has one, in the order of the file.
func Parse(data []byte, name string) (*Config, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		return nil, decodeError(name, err, data)
	}
	sites := scanSites(string(data))
	p := &problems{file: name, pos: newPositions(sites), seen: map[string]bool{}}
	p.unknownKeys(keysOf(doc, nil), sites)
	c := convert(doc, p)
	c.validate(p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// problems collects every problem found, with the line of each if known.
type problems struct {
	file string
	pos  positions // nil without a source
	errs []*Error
	seen map[string]bool // object path and key of each problem added
}

// object returns the converter/validator for element i of kind.
func (p *problems) object(kind string, i int, name string) object {
	label := fmt.Sprintf("%s #%d", kind, i+1)
	if name != "" {
		label = fmt.Sprintf("%s %q", kind, name)
	}
	return object{p: p, label: label, at: []string{kind, index(i)}}
}

// add records a problem with key of the object at, unless one was already
// recorded for that key or an element of it: a value that failed to
// convert is left at its default, which is no further news.
func (p *problems) add(label string, at []string, lineKey, key string, err error) {
	if p.seen[seenID(at, key)] {
		return
	}
	p.seen[seenID(at, key)] = true
	if whole, _, isElem := strings.Cut(key, "["); isElem {
		p.seen[seenID(at, whole)] = true
	}
	path := slices.Concat(at, strings.Split(strings.ReplaceAll(lineKey, "[", ".["), "."))
	p.errs = append(p.errs, &Error{File: p.file, Line: p.pos.line(path), Object: label, Key: key, Err: err})
}

// seenID is the key of problems.seen for key of the object at.
func seenID(at []string, key string) string { return pathKey(at) + "\x00" + key }

// err joins the problems in the order of their lines, unplaced ones last.
func (p *problems) err() error {
	slices.SortStableFunc(p.errs, func(a, b *Error) int {
		return cmp.Compare(placed(a.Line), placed(b.Line))
	})
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func placed(line int) int {
	if line == 0 {
		return int(^uint(0) >> 1)
	}
	return line
}

// keysOf lists the key paths written in t, within the table at prefix;
// elements of arrays are not numbered.
func keysOf(t map[string]any, prefix toml.Key) []toml.Key {
	var out []toml.Key
	for k, v := range t {
		path := append(slices.Clip(prefix), k)
		out = append(out, path)
		switch v := v.(type) {
		case map[string]any:
			out = append(out, keysOf(v, path)...)
		case []map[string]any:
			for _, elem := range v {
				out = append(out, keysOf(elem, path)...)
			}
		case []any:
			for _, elem := range v {
				if elem, ok := elem.(map[string]any); ok {
					out = append(out, keysOf(elem, path)...)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b toml.Key) int { return cmp.Compare(a.String(), b.String()) })
	return out
}

// unknownKeys reports each key the schema does not have, once per place it
// is written; written lists every key path the document has.
func (p *problems) unknownKeys(written []toml.Key, sites []site) {
	unknown := map[string]bool{}
	for _, k := range written {
		if !schema[strings.Join(k, ".")] {
			unknown[k.String()] = true
		}
	}
	reported := map[string]bool{} // indexed paths, so a table's keys are not repeated
	named := map[string]bool{}    // key paths reported
	for _, s := range sites {
		if !unknown[toml.Key(s.key).String()] && schema[strings.Join(s.key, ".")] {
			continue
		}
		n := unknownPrefix(s.key)
		at := pathKey(s.prefix(n))
		if reported[at] {
			continue
		}
		reported[at], named[toml.Key(s.key[:n]).String()] = true, true
		p.errs = append(p.errs, &Error{File: p.file, Line: s.line, Err: unknownKey(s.key[:n])})
	}
	for _, k := range written { // never expected: a key the scan missed
		if unknown[k.String()] && !slices.ContainsFunc(prefixes(k), func(pre toml.Key) bool { return named[pre.String()] }) {
			named[k.String()] = true
			p.errs = append(p.errs, &Error{File: p.file, Err: unknownKey(k)})
		}
	}
}

func prefixes(k toml.Key) []toml.Key {
	out := make([]toml.Key, len(k))
	for n := range k {
		out[n] = k[:n+1]
	}
	return out
}

// unknownPrefix is the length of the shortest prefix of key not in the
// schema, or of key itself.
func unknownPrefix(key []string) int {
	for n := 1; n <= len(key); n++ {
		if !schema[strings.Join(key[:n], ".")] {
			return n
		}
	}
	return len(key)
}

func unknownKey(key []string) error {
	err := fmt.Errorf("%w %s", ErrUnknownKey, toml.Key(key))
	parent := strings.Join(key[:len(key)-1], ".")
	if hint := misplaced(key); hint != "" {
		return fmt.Errorf("%w (%s)", err, hint)
	}
	if guess := cmp.Or(nearest(parent, key[len(key)-1]), synonym(parent, key[len(key)-1])); guess != "" {
		err = fmt.Errorf("%w (did you mean %s?)", err, guess)
	} else if where := elsewhere(key); where != "" {
		err = fmt.Errorf("%w (%s)", err, where)
	}
	return err
}

// elsewhere names the other tables that have key's last word as a key
// (log.sample_interval: [auto]), "" when none does.
func elsewhere(key []string) string {
	word, parent := key[len(key)-1], strings.Join(key[:len(key)-1], ".")
	var tables []string
	for _, k := range keys {
		table, last, ok := strings.Cut(k.path, "."+word)
		if k.kind != "" || !ok || last != "" || table == parent || strings.Contains(table, ".") && !schema[table] {
			continue
		}
		tables = append(tables, tableHeader(strings.Split(table, ".")))
	}
	if len(tables) == 0 {
		return ""
	}
	slices.Sort(tables)
	return fmt.Sprintf("%s is a key of %s", word, strings.Join(slices.Compact(tables), " and "))
}

// misplaced says where to write key when a table above the one it was
// written in has it: TOML puts every key after [listener.close] into that
// table until the next header, so a listener's key written below it lands
// there. "" when no table above has the key.
func misplaced(key []string) string {
	word, in := key[len(key)-1], key[:len(key)-1]
	if len(in) == 0 || kinds[strings.Join(in, ".")] == "" {
		return "" // top level, or a value's inline table (servers)
	}
	for n := len(in) - 1; n >= 0; n-- {
		up := strings.Join(append(slices.Clip(in[:n]), word), ".")
		if !schema[up] || kinds[up] != "" {
			continue
		}
		if n == 0 {
			return fmt.Sprintf("%s is a top-level key: write it above %s and every other table", word, tableHeader(in))
		}
		return fmt.Sprintf("%s belongs to %s: write it above %s", word, tableHeader(in[:n]), tableHeader(in))
	}
	return ""
}

// tableHeader is how a table of the schema is opened: [log], [[listener]].
func tableHeader(table []string) string {
	name := strings.Join(table, ".")
	if kinds[name] == array {
		return "[[" + name + "]]"
	}
	return "[" + name + "]"
}

// kinds holds the kind of each table of the schema, table or array.
var kinds = func() map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		if k.kind != "" {
			m[k.path] = k.kind
		}
	}
	return m
}()

// synonyms are words for a key that other proxies' configurations use,
// too far from ours in spelling for nearest to find.
var synonyms = map[string][]string{
	"addr":    {"listen", "address"},
	"address": {"listen"},
	"bind":    {"listen"},
	"listen":  {"address"},
	"host":    {"address"},
	"server":  {"servers", "address"},
	// HAProxy's and nginx's words
	"timeout": {"connect_timeout"},
	"maxconn": {"max_connections"},
	"mode":    {"protocol"},
}

// synonym is the key of table parent that word stands for, or "".
func synonym(parent, word string) string {
	for _, leaf := range synonyms[strings.ToLower(word)] {
		k := leaf
		if parent != "" {
			k = parent + "." + leaf
		}
		if schema[k] || handRead[k] {
			return k
		}
	}
	return ""
}

// nearest returns the key of table parent closest to the misspelt word.
func nearest(parent, word string) string {
	best, bestDist := "", 3 // further than 2 edits is no guess
	for k := range schema {
		i := strings.LastIndex(k, ".")
		if k[:max(i, 0)] != parent {
			continue
		}
		d := distance(strings.ToLower(word), k[i+1:])
		if d < bestDist || d == bestDist && k < best {
			best, bestDist = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// decodeError turns the decoder's one error, TOML that does not parse,
// into an *Error naming the line.
func decodeError(file string, err error, data []byte) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) { // not expected from decoding into a map
		line := 0
		if m := lineOf.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		return &Error{File: file, Line: line, Err: fmt.Errorf("decode: %w", err)}
	}
	e := &Error{File: file, Line: pe.Position.Line, Err: &tomlError{pe.Message, err}}
	if strings.HasSuffix(pe.Message, `but got '\n' instead`) && e.Line > 1 {
		e.Line-- // a table header cut short: the decoder counted the newline that ended it
	}
	if m := arrayAfterTable.FindStringSubmatch(pe.Message); m != nil {
		k, where := m[1], fmt.Sprintf("[%s] or [%s.…]", m[1], m[1])
		if first := firstTable(data, k, e.Line); first > 0 {
			where = fmt.Sprintf("line %d", first)
		}
		e.Key, e.Err = k, &tomlError{fmt.Sprintf("[[%s]] comes after %s made %s a single table; write each [[%s]] before its subtables, such as [%s.close]", k, where, k, k, k), err}
	}
	if outOfRange.MatchString(pe.Message) && pe.LastKey != "" {
		e.Key = pe.LastKey // the number's own key: the decoder stops at it
	}
	if m := duplicate.FindStringSubmatch(pe.Message); m != nil {
		e.Key, e.Err = m[1], &tomlError{"written twice", err}
		if first := firstWritten(data, m[1], e.Line); first > 0 {
			e.Err = &tomlError{"already written on line " + strconv.Itoa(first), err}
		}
	}
	return e
}

// firstWritten is the line of the last site of key before line, or 0.
func firstWritten(data []byte, key string, line int) int {
	first := 0
	for _, s := range scanSites(string(data)) {
		if s.line < line && strings.Join(s.key, ".") == key {
			first = s.line
		}
	}
	return first
}

// firstTable is the first line before line with a [key] or [key.…]
// table header, or 0.
func firstTable(data []byte, key string, line int) int {
	header := regexp.MustCompile(`^\s*\[\s*` + regexp.QuoteMeta(key) + `\s*[.\]]`)
	for i, l := range strings.Split(string(data), "\n") {
		if i+1 >= line {
			break
		}
		if header.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

var (
	lineOf          = regexp.MustCompile(`\bline (\d+)`)
	outOfRange      = regexp.MustCompile(` is out of range for (int|float)64$`)
	duplicate       = regexp.MustCompile(`^Key '(.*)' has already been defined\.$`)
	arrayAfterTable = regexp.MustCompile(`^Key '(.*)' was already created and cannot be used as an array\.$`)
)

// tomlError is the decoder's error, with the message rewritten.
type tomlError struct {
	msg string
	err error
}

func (e *tomlError) Error() string { return e.msg }
func (e *tomlError) Unwrap() error { return e.err }
