package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
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
	var raw rawConfig
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return nil, decodeError(name, err)
	}
	sites := scanSites(string(data))
	p := &problems{file: name, pos: newPositions(sites), seen: map[string]bool{}}
	p.unknownKeys(md.Undecoded(), sites)
	c := convert(&raw, p)
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
func (p *problems) add(label string, at []string, key string, err error) {
	if p.seen[seenID(at, key)] {
		return
	}
	p.seen[seenID(at, key)] = true
	if whole, _, isElem := strings.Cut(key, "["); isElem {
		p.seen[seenID(at, whole)] = true
	}
	path := slices.Concat(at, strings.Split(strings.ReplaceAll(key, "[", ".["), "."))
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

// unknownKeys reports each key the schema does not have, once per place it
// is written: the keys the decoder left undecoded, and those it matched to
// a field only by ignoring case (TOML keys are case-sensitive).
func (p *problems) unknownKeys(undecoded []toml.Key, sites []site) {
	unknown := map[string]bool{}
	for _, k := range undecoded {
		if !handRead[k.String()] {
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
	for _, k := range undecoded { // never expected: a key the scan missed
		if !handRead[k.String()] && !slices.ContainsFunc(prefixes(k), func(pre toml.Key) bool { return named[pre.String()] }) {
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
	if guess := nearest(parent, key[len(key)-1]); guess != "" {
		err = fmt.Errorf("%w (did you mean %s?)", err, guess)
	}
	return err
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

// schema holds every key path the raw structs declare, such as
// "listener.close.time_wait"; arrays of tables are not numbered.
var schema = schemaOf(reflect.TypeFor[rawConfig](), "", maps.Clone(handRead))

// handRead holds the keys read by hand from a decoded value, which the
// decoder reports as undecoded: those of a server's inline table.
var handRead = map[string]bool{"backend.servers.address": true, "backend.servers.weight": true}

func schemaOf(t reflect.Type, prefix string, keys map[string]bool) map[string]bool {
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("toml")
		keys[key] = true
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			schemaOf(ft, key+".", keys)
		}
	}
	return keys
}

// decodeError turns the decoder's one error into an *Error naming the line.
func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Err: &tomlError{pe.Message, err}}
	}
	// A table or array of tables written as some other type. The raw
	// structs' leaves take any value, so nothing else reaches here.
	m := decodeMessage.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: file, Err: fmt.Errorf("decode: %w", err)}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[3]
	if found := foundType.FindStringSubmatch(msg); found != nil {
		want := "a table"
		if strings.HasSuffix(msg, "destination has type slice") {
			want = "an array of tables"
		}
		msg = fmt.Sprintf("expected %s, found %s", want, goTypes.Replace(found[1]))
	}
	return &Error{File: file, Line: line, Key: m[2], Err: &tomlError{msg, err}}
}

var (
	decodeMessage = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*)"\): (.*)$`)
	foundType     = regexp.MustCompile(`(?:but found|TOML value has type) ([^;]+)`)
	goTypes       = strings.NewReplacer("int64", "integer", "float64", "float", "bool", "boolean",
		"time.Time", "date-time", "[]any", "array", "map[string]any", "table", "[]map[string]any", "array of tables")
)

// tomlError is the decoder's error, with the message rewritten.
type tomlError struct {
	msg string
	err error
}

func (e *tomlError) Error() string { return e.msg }
func (e *tomlError) Unwrap() error { return e.err }
