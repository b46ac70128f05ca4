package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"
)

// parseHead reads one head (see readHead) and parses its start line with
// parseLine, whose non-empty reason is refused as kind, then its fields.
func parseHead(br *bufio.Reader, lim Limits, strict bool, kind error, parseLine func(string) string) ([]byte, []Field, error) {
	lim = lim.withDefaults()
	raw, err := readHead(br, lim.MaxHeadBytes, strict, kind)
	if err != nil {
		return raw, nil, err // what it consumed, if anything: the caller counts it
	}
	parsed, fields, err := parseRaw(raw, lim, kind, parseLine, nil)
	if err != nil {
		return raw, nil, err // the bytes it took, for the caller's count
	}
	return parsed, fields, nil
}

// parseHeadIn is parseHead over the head at b's start, which the caller
// read already, copied into raw's storage and its fields into fields'
// where they have room: n is the head's length. Until b holds a whole head
// it returns io.EOF (b is empty) or io.ErrUnexpectedEOF.
func parseHeadIn(b []byte, lim Limits, strict bool, kind error, parseLine func(string) string, raw []byte, fields []Field) (n int, _ []byte, _ []Field, err error) {
	lim = lim.withDefaults()
	n, _, err = headEnd(b, 0, strict, kind)
	switch {
	case err != nil:
		return 0, nil, nil, err
	case n > lim.MaxHeadBytes || n == 0 && len(b) > lim.MaxHeadBytes:
		return 0, nil, nil, tooLarge(kind, fmt.Sprintf("head larger than %d bytes", lim.MaxHeadBytes))
	case len(b) == 0:
		return 0, nil, nil, io.EOF
	case n == 0:
		return 0, nil, nil, io.ErrUnexpectedEOF
	}
	raw, fields, err = parseRaw(append(raw[:0], b[:n]...), lim, kind, parseLine, fields)
	return n, raw, fields, err
}

// parseRaw parses a head's start line with parseLine, whose non-empty
// reason is refused as kind, then its fields into fields' storage.
func parseRaw(raw []byte, lim Limits, kind error, parseLine func(string) string, fields []Field) ([]byte, []Field, error) {
	// The start line and fields are strings over raw's own bytes (a copy
	// nothing writes to: see Request.Raw), not over a second copy of them.
	line, rest := cutLine(unsafe.String(unsafe.SliceData(raw), len(raw)))
	if reason := parseLine(line); reason != "" {
		return nil, nil, refuse(kind, reason)
	}
	fields, err := parseFields(rest, lim.MaxHeaderFields, kind, fields)
	if err != nil {
		return nil, nil, err
	}
	return raw, fields, nil
}

// parseVersion reads the HTTP-version of a start line: HTTP/1.1 or
// HTTP/1.0, nothing else.
func parseVersion(v string) (major, minor int, reason string) {
	switch v {
	case "HTTP/1.1":
		return 1, 1, ""
	case "HTTP/1.0":
		return 1, 0, ""
	}
	return 0, 0, "unsupported HTTP version"
}

// readHead reads one head, start line through the empty line, and returns a
// copy of exactly its bytes; nothing after the empty line is consumed. strict
// refuses a bare LF line ending; a bare CR is always refused. io.EOF means
// the peer closed before sending a byte. With any other error it returns
// what it consumed of br (nil if nothing: a head refused while it fitted
// br's buffer stays there).
func readHead(br *bufio.Reader, max int, strict bool, kind error) ([]byte, error) {
	from := 0 // start of the first line not yet scanned
	for {
		b, _ := br.Peek(br.Buffered())
		n, next, err := headEnd(b, from, strict, kind)
		switch {
		case err != nil:
			return nil, err
		case n > max || n == 0 && len(b) > max:
			return nil, tooLarge(kind, fmt.Sprintf("head larger than %d bytes", max))
		case n > 0:
			raw := bytes.Clone(b[:n])
			br.Discard(n)
			return raw, nil
		case len(b) == br.Size():
			return readHeadSlow(br, max, strict, kind)
		}
		from = next
		if err := fill(br, len(b)); err != nil {
			return nil, err
		}
	}
}

// readHeadSlow reads a head longer than br's buffer, line by line.
func readHeadSlow(br *bufio.Reader, max int, strict bool, kind error) ([]byte, error) {
	raw := make([]byte, 0, 2*br.Size())
	from := 0
	for {
		chunk, err := br.ReadSlice('\n')
		raw = append(raw, chunk...)
		if len(raw) > max { // raw: what it consumed, for the caller's count
			return raw, tooLarge(kind, fmt.Sprintf("head larger than %d bytes", max))
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return raw, unexpected(err)
		}
		n, next, err := headEnd(raw, from, strict, kind)
		if err != nil || n > 0 {
			return raw, err
		}
		from = next
	}
}

// fill waits for more than have bytes in br.
func fill(br *bufio.Reader, have int) error {
	_, err := br.Peek(have + 1)
	if err == nil || br.Buffered() > have {
		return nil
	}
	if err == io.EOF && have == 0 {
		return io.EOF
	}
	return unexpected(err)
}

func unexpected(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read head: %w", err)
}

// headEnd scans the complete lines of b from offset from (a line start). It
// returns the length of the head when its empty line is in b, else 0 and the
// start of the first incomplete line.
func headEnd(b []byte, from int, strict bool, kind error) (n, next int, err error) {
	for i := from; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0, i, nil
		}
		line := b[i : i+j+1]
		cr := bytes.IndexByte(line, '\r')
		switch {
		case cr >= 0 && cr != len(line)-2:
			return 0, 0, refuse(kind, "bare CR in head")
		case cr < 0 && strict:
			return 0, 0, refuse(kind, "bare LF in head")
		}
		start := i
		i += j + 1
		if len(line) > 2 || len(line) == 2 && line[0] != '\r' {
			continue
		}
		if start == 0 {
			return 0, 0, refuse(kind, "empty start line")
		}
		return i, 0, nil // the empty line ends the head
	}
}

func tooLarge(kind error, reason string) error {
	return fmt.Errorf("%w: %w: %s", kind, ErrHeadTooLarge, reason)
}

// cutLine returns the first line of s without its line ending, and the rest.
// The head has been checked by headEnd, so every line ends in LF.
func cutLine(s string) (line, rest string) {
	line, rest, _ = strings.Cut(s, "\n")
	return strings.TrimSuffix(line, "\r"), rest
}

// parseFields parses the field lines of s, which follows the start line and
// ends with the empty line, into into's storage when it has room.
func parseFields(s string, max int, kind error, into []Field) ([]Field, error) {
	n := strings.Count(s, "\n") - 1
	if n > max {
		return nil, tooLarge(kind, fmt.Sprintf("more than %d header fields", max))
	}
	fields := into[:0]
	if cap(fields) < n {
		fields = make([]Field, 0, n)
	}
	for s[0] != '\r' && s[0] != '\n' { // headEnd let CR in only before LF
		f, rest, ok := cutField(s)
		if !ok {
			line, _ := cutLine(s)
			_, reason := parseField(line) // the slow path names the reason
			return nil, refuse(kind, reason)
		}
		fields, s = append(fields, f), rest
	}
	return fields, nil
}

// cutField parses the field line at the start of s in one pass over its
// bytes, and returns the rest of s after its line ending; a line it does
// not accept (ok false) parseField refuses. Every line of s ends in LF
// and holds a CR only just before it (headEnd checked).
func cutField(s string) (f Field, rest string, ok bool) {
	i := 0
	for i < len(s) && tchar[s[i]] {
		i++
	}
	if i == 0 || i == len(s) || s[i] != ':' {
		return Field{}, "", false
	}
	name := s[:i]
	for i++; i < len(s) && isOWS(s[i]); i++ {
	}
	start, end := i, i
	for ; i < len(s); i++ {
		c := valueByte[s[i]]
		if c == 0 {
			break
		}
		if c == vchar {
			end = i + 1
		}
	}
	switch {
	case i == len(s):
		return Field{}, "", false
	case s[i] == '\n':
		i++
	case s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n':
		i += 2
	default:
		return Field{}, "", false
	}
	return Field{Name: name, Value: s[start:end]}, s[i:], true
}

// parseField parses one field line (without its line ending); a non-empty
// reason says why it is refused.
func parseField(line string) (Field, string) {
	if line[0] == ' ' || line[0] == '\t' {
		return Field{}, "obs-fold (line starting with whitespace)"
	}
	name, value, ok := strings.Cut(line, ":")
	switch {
	case !ok:
		return Field{}, "field line without colon"
	case name == "":
		return Field{}, "empty field name"
	case isOWS(name[len(name)-1]):
		return Field{}, "whitespace between field name and colon"
	case !isToken(name):
		return Field{}, "invalid character in field name"
	}
	value = trimOWS(value)
	for i := 0; i < len(value); i++ {
		if !isValueByte(value[i]) {
			return Field{}, "control character in field value"
		}
	}
	return Field{Name: name, Value: value}, ""
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(s string) string {
	for len(s) > 0 && isOWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isOWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// isValueByte: field-vchar, SP, HTAB and obs-text; no other control.
func isValueByte(c byte) bool { return c == '\t' || c >= ' ' && c != 0x7f }

// valueByte sorts the bytes of a field value: 0 for those refused, ows
// for the whitespace trimmed from its ends, vchar for every other.
var valueByte = func() (t [256]uint8) {
	for c := range t {
		switch {
		case isOWS(byte(c)):
			t[c] = ows
		case isValueByte(byte(c)):
			t[c] = vchar
		}
	}
	return t
}()

const (
	ows = 1 + iota
	vchar
)

var tchar = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789") {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	return t
}()

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return s != ""
}

// hasToken reports whether the comma-separated list v holds tok (any case).
func hasToken(v, tok string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(trimOWS(t), tok) {
			return true
		}
	}
	return false
}

// connOptions are the Connection options the proxy acts on.
type connOptions uint8

const (
	connClose connOptions = 1 << iota
	connKeepAlive
	connUpgrade
)

// connectionOptions reads the options of one Connection value.
func connectionOptions(v string) connOptions {
	var o connOptions
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		switch t = trimOWS(t); {
		case strings.EqualFold(t, "close"):
			o |= connClose
		case strings.EqualFold(t, "keep-alive"):
			o |= connKeepAlive
		case strings.EqualFold(t, "upgrade"):
			o |= connUpgrade
		}
	}
	return o
}

// closes reports whether a message's sender will close after it:
// "Connection: close", or HTTP/1.0 without "Connection: keep-alive".
func closes(conn connOptions, minor int) bool {
	return conn&connClose != 0 || minor == 0 && conn&connKeepAlive == 0
}

// headFacts are the fields of a head that framing and the connection
// depend on, gathered in one pass over its fields.
type headFacts struct {
	cl, te   string // the Content-Length value; the last Transfer-Encoding line's value
	nCL, nTE int    // how many lines of each
	clDiffer string // a refusal if Content-Length lines differ in value (identical lines count as one)
	conn     connOptions
	host     string // the last Host value
	nHost    int
	upgrade  bool   // an Upgrade field
	expect   string // the last Expect value
}

// scanFields gathers the facts of fields. Names are told apart by length
// first: most fields are none of these.
func scanFields(fields []Field) headFacts {
	var h headFacts
	for _, f := range fields {
		switch n := f.Name; len(n) {
		case len("Host"):
			if strings.EqualFold(n, "Host") {
				h.host, h.nHost = f.Value, h.nHost+1
			}
		case len("Expect"):
			if strings.EqualFold(n, "Expect") {
				h.expect = f.Value
			}
		case len("Upgrade"):
			h.upgrade = h.upgrade || strings.EqualFold(n, "Upgrade")
		case len("Connection"):
			if strings.EqualFold(n, "Connection") {
				h.conn |= connectionOptions(f.Value)
			}
		case len("Content-Length"):
			if strings.EqualFold(n, "Content-Length") {
				if h.nCL > 0 && f.Value != h.cl {
					h.clDiffer = "differing Content-Length values"
				}
				h.cl, h.nCL = f.Value, h.nCL+1
			}
		case len("Transfer-Encoding"):
			if strings.EqualFold(n, "Transfer-Encoding") {
				h.te, h.nTE = f.Value, h.nTE+1
			}
		}
	}
	return h
}

// parseLength parses a Content-Length value: 1*DIGIT within int64.
func parseLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		d := int64(s[i]) - '0'
		if d < 0 || d > 9 || n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
