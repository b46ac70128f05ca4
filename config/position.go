package config

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// BurntSushi/toml v1.6.0 keeps the position of every key internally but
// exports none (MetaData has no position API, and its type errors carry the
// line of the last table of an array, not the one at fault). So positions
// are recovered here by a second, structural pass over text the TOML parser
// has already accepted: it only needs to find keys, skip values, and count
// elements of arrays of tables, not to check anything.

// site is one key written in the document.
type site struct {
	key  []string // as TOML names it: listener.close.time_wait
	path []string // with array elements numbered: listener.[1].close.time_wait
	line int
}

// positions maps indexed key paths to the line where each is written.
type positions map[string]int

func pathKey(path []string) string { return strings.Join(path, "\x00") }

// index is the path element for element n of an array.
func index(n int) string { return "[" + strconv.Itoa(n) + "]" }

func isIndex(part string) bool { return strings.HasPrefix(part, "[") && strings.HasSuffix(part, "]") }

// prefix returns the part of s.path that writes the first n parts of s.key.
func (s site) prefix(n int) []string {
	for i, part := range s.path {
		if !isIndex(part) {
			if n--; n == 0 {
				return s.path[:i+1]
			}
		}
	}
	return s.path
}

func newPositions(sites []site) positions {
	p := make(positions, len(sites))
	for _, s := range sites {
		if _, ok := p[pathKey(s.path)]; !ok {
			p[pathKey(s.path)] = s.line
		}
	}
	return p
}

// line returns where path, or failing that its nearest written ancestor
// (such as the [[listener]] header of a key left to its default), is
// written; 0 if none is.
func (p positions) line(path []string) int {
	for n := len(path); n > 0; n-- {
		if l, ok := p[pathKey(path[:n])]; ok {
			return l
		}
	}
	return 0
}

type scanner struct {
	src    string
	i      int
	line   int
	sites  []site
	arrays map[string]int // elements seen so far per array of tables
}

// scanSites lists every key of a valid TOML document in document order.
func scanSites(src string) []site {
	for _, bom := range []string{"\xff\xfe", "\xfe\xff", "\xef\xbb\xbf"} { // as the parser does
		src = strings.TrimPrefix(src, bom)
	}
	s := &scanner{src: src, line: 1, arrays: map[string]int{}}
	var table site // the current [table]
	for s.skipSpace(true); s.i < len(s.src); s.skipSpace(true) {
		start := s.i
		if s.peek() == '[' {
			table = s.header()
		} else {
			s.keyValue(table.key, table.path)
		}
		if s.i == start { // not valid TOML after all; never loop forever
			s.i++
		}
	}
	return s.sites
}

func (s *scanner) peek() byte {
	if s.i < len(s.src) {
		return s.src[s.i]
	}
	return 0
}

// skipSpace skips blanks, and also newlines and comments if multiline.
func (s *scanner) skipSpace(multiline bool) {
	for s.i < len(s.src) {
		switch c := s.src[s.i]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.i++
		case c == '\n' && multiline:
			s.i++
			s.line++
		case c == '#' && multiline:
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		default:
			return
		}
	}
}

// header reads [a.b] or [[a.b]] and returns the table it opens.
func (s *scanner) header() site {
	line := s.line
	s.i++
	array := s.peek() == '['
	if array {
		s.i++
	}
	key := s.key()
	for s.i < len(s.src) && s.src[s.i] != '\n' && s.src[s.i] != '#' {
		s.i++ // the closing brackets
	}
	var path []string
	for n, part := range key {
		path = append(path, part)
		count, seen := s.arrays[pathKey(path)]
		switch {
		case array && n == len(key)-1:
			s.arrays[pathKey(path)] = count + 1
			path = append(path, index(count))
		case seen:
			path = append(path, index(count-1))
		}
	}
	table := site{key: key, path: path, line: line}
	s.sites = append(s.sites, table)
	return table
}

// keyValue reads key = value inside the table at key and path.
func (s *scanner) keyValue(tableKey, tablePath []string) {
	line := s.line
	parts := s.key()
	key := append(slices.Clone(tableKey), parts...)
	path := append(slices.Clone(tablePath), parts...)
	s.sites = append(s.sites, site{key: key, path: path, line: line})
	s.skipSpace(false)
	if s.peek() == '=' {
		s.i++
	}
	s.skipSpace(false)
	s.value(key, path)
}

func (s *scanner) value(key, path []string) {
	switch s.peek() {
	case '"', '\'':
		s.str()
	case '[':
		s.i++
		for n := 0; ; n++ {
			s.skipSpace(true)
			if c := s.peek(); c == ']' || c == 0 {
				s.i++
				return
			}
			start := s.i
			s.value(key, append(slices.Clone(path), index(n)))
			s.skipSpace(true)
			if s.peek() == ',' {
				s.i++
			} else if s.i == start {
				s.i++
			}
		}
	case '{':
		s.i++
		for {
			s.skipSpace(true)
			if c := s.peek(); c == '}' || c == 0 {
				s.i++
				return
			}
			start := s.i
			s.keyValue(key, path)
			s.skipSpace(true)
			if s.peek() == ',' {
				s.i++
			} else if s.i == start {
				s.i++
			}
		}
	default: // number, boolean, date-time: runs to a delimiter
		for s.i < len(s.src) && !strings.ContainsRune(",]}#\n", rune(s.src[s.i])) {
			s.i++
		}
	}
}

// key reads a dotted key: bare or quoted parts separated by dots.
func (s *scanner) key() []string {
	var parts []string
	for {
		s.skipSpace(false)
		switch s.peek() {
		case '"', '\'':
			parts = append(parts, s.str())
		default:
			start := s.i
			for s.i < len(s.src) && !strings.ContainsRune(" \t\r\n.=]#", rune(s.src[s.i])) {
				s.i++
			}
			parts = append(parts, s.src[start:s.i])
		}
		s.skipSpace(false)
		if s.peek() != '.' {
			return parts
		}
		s.i++
	}
}

// str reads a basic, literal or multi-line string and returns its value.
func (s *scanner) str() string {
	q := s.src[s.i]
	delim := string(q)
	if strings.HasPrefix(s.src[s.i:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	s.i += len(delim)
	start := s.i
	for s.i < len(s.src) && !strings.HasPrefix(s.src[s.i:], delim) {
		if s.src[s.i] == '\\' && q == '"' && s.i+1 < len(s.src) {
			s.i++ // an escaped character, possibly a line ending
		}
		if s.src[s.i] == '\n' {
			s.line++
		}
		s.i++
	}
	end := s.i
	s.i += len(delim)
	if len(delim) == 3 { // up to two quotes may end the content
		for n := 0; n < 2 && s.peek() == q; n++ {
			s.i++
			end++
		}
	}
	end = min(end, len(s.src))
	s.i = min(s.i, len(s.src))
	if q == '\'' {
		return s.src[start:end]
	}
	return unescape(s.src[start:end])
}

// unescape decodes a basic string's escapes, as far as keys need them.
func unescape(raw string) string {
	if !strings.Contains(raw, `\`) {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			b.WriteByte(c)
			continue
		}
		i++

		if r, ok := simpleEscapes[raw[i]]; ok {
			b.WriteString(r)
			continue
		}
		width := map[byte]int{'x': 2, 'u': 4, 'U': 8}[raw[i]]
		if width == 0 || i+1+width > len(raw) {
			b.WriteByte(raw[i])
			continue
		}
		n, err := strconv.ParseUint(raw[i+1:i+1+width], 16, 32)
		if err != nil || !utf8.ValidRune(rune(n)) {
			b.WriteByte(raw[i])
			continue
		}
		b.WriteRune(rune(n))
		i += width
	}
	return b.String()
}

var simpleEscapes = map[byte]string{
	'b': "\b", 't': "\t", 'n': "\n", 'f': "\f", 'r': "\r", 'e': "\x1b", '"': `"`, '\\': `\`,
}
