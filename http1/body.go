package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
)

const (
	maxChunkLine    = 4 << 10  // a chunk-size line with its extensions and CRLF, exclusive
	maxTrailerBytes = 64 << 10 // the trailer section with its empty line
)

// CopyBody relays a message body from br to dst unchanged (chunk sizes,
// extensions and trailers byte-identical), returning when the message ends;
// for UntilClose, at EOF. It never consumes past the end of the message, so
// a pipelined message stays in br. Chunked framing is checked strictly (see
// the package doc); its refusals wrap ErrBadRequest — use
// (*Response).CopyBody to have them wrap ErrBadResponse. A body cut short
// gives io.ErrUnexpectedEOF. The count is the bytes written to dst; a
// refusal's error also tells the bytes taken from br and not written
// (Untaken).
func CopyBody(dst io.Writer, br *bufio.Reader, f Framing, length int64) (int64, error) {
	return copyBody(dst, br, f, length, ErrBadRequest)
}

func copyBody(dst io.Writer, br *bufio.Reader, f Framing, length int64, kind error) (int64, error) {
	var n int64
	var err error
	switch f {
	case NoBody:
		return 0, nil
	case Length:
		n, err = io.CopyN(dst, br, length)
	case UntilClose:
		n, err = io.Copy(dst, br)
	case Chunked:
		c := chunkCopier{dst: dst, br: br, kind: kind}
		err = c.run()
		n = c.n
		if c.taken > 0 {
			err = &refusal{err: err, taken: c.taken}
		}
	default:
		err = fmt.Errorf("unknown framing %v", f)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && !errors.Is(err, kind) {
		err = &copyError{err: err}
	}
	return n, err
}

// copyError is a body copy's failure other than a malformed body: a read
// or a write that failed.
type copyError struct{ err error }

func (e *copyError) Error() string { return "copy body: " + e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// CopyFailed wraps err, a body copy's read or write failure, as the
// copies here do ("copy body: ..."), for a copy made elsewhere: Cause
// takes the words off again.
func CopyFailed(err error) error { return &copyError{err: err} }

// Cause returns what made a body copy fail without the copy's own words
// ("copy body: "), for a caller that names the side itself ("read request
// body: ...").
func Cause(err error) error {
	var c *copyError
	if errors.As(err, &c) {
		return c.err
	}
	return err
}

// chunkCopier relays a chunked body, checking each line before writing it.
type chunkCopier struct {
	dst     io.Writer
	br      *bufio.Reader
	kind    error
	n       int64
	scratch []byte // a line longer than br's buffer
	taken   int64  // a refused line's bytes, taken from br and not written
}

// LastWriter is a body's destination that wants to know, just before
// the write that ends a chunked body (the empty line after its
// trailers), that the message ends with it: an answer that came before
// that write answered less than the whole message (an early 413).
type LastWriter interface{ WritingLast() }

// refusal is a refused body's error that tells the bytes its copy took
// from the reader and did not write (the offending line).
type refusal struct {
	err   error
	taken int64
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

// Untaken returns the bytes a body copy that failed with err read from
// its reader without writing them: the refused line of a malformed
// chunked body (its size line, or a trailer), so that a caller counting
// what it received counts them; 0 for any other error.
func Untaken(err error) int64 {
	var r *refusal
	if errors.As(err, &r) {
		return r.taken
	}
	return 0
}

func (c *chunkCopier) run() error {
	for {
		line, err := c.line(maxChunkLine)
		if err != nil {
			return err
		}
		size, reason := parseChunkLine(line[:len(line)-2])
		if reason != "" {
			return c.refuse(line, reason)
		}
		if err := c.write(line); err != nil {
			return err
		}
		if size == 0 {
			return c.trailers()
		}
		if err := c.data(size); err != nil {
			return err
		}
	}
}

// data relays size bytes of chunk data and the CRLF after them.
func (c *chunkCopier) data(size int64) error {
	n, err := io.CopyN(c.dst, c.br, size)
	c.n += n
	if err != nil {
		return err
	}
	b, err := c.br.Peek(2)
	if len(b) < 2 {
		return err
	}
	if string(b) != "\r\n" {
		return refuse(c.kind, "no CRLF after chunk data")
	}
	if err := c.write(b); err != nil {
		return err
	}
	c.br.Discard(2)
	return nil
}

// trailers relays the trailer section through its empty line.
func (c *chunkCopier) trailers() error {
	budget := maxTrailerBytes
	for {
		line, err := c.line(budget)
		if err != nil {
			return err
		}
		budget -= len(line)
		if len(line) == 2 {
			if lw, ok := c.dst.(LastWriter); ok {
				lw.WritingLast()
			}
			return c.write(line)
		}
		if _, reason := parseField(string(line[:len(line)-2])); reason != "" {
			return c.refuse(line, "trailer: "+reason)
		}
		if err := c.write(line); err != nil {
			return err
		}
	}
}

// refuse refuses the body for reason at line, which was taken from br.
func (c *chunkCopier) refuse(line []byte, reason string) error {
	c.taken = int64(len(line))
	return refuse(c.kind, reason)
}

func (c *chunkCopier) write(b []byte) error {
	n, err := c.dst.Write(b)
	c.n += int64(n)
	return err
}

// line reads one CRLF-terminated line shorter than max bytes. The slice is
// valid until the next read from br.
func (c *chunkCopier) line(max int) ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		c.scratch = append(c.scratch[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(c.scratch) < max {
			line, err = c.br.ReadSlice('\n')
			c.scratch = append(c.scratch, line...)
		}
		line = c.scratch
	}
	switch {
	case len(line) >= max:
		return nil, c.refuse(line, "chunked line too long")
	case err != nil:
		return nil, err
	}
	switch cr := bytes.IndexByte(line, '\r'); {
	case cr < 0:
		return nil, c.refuse(line, "bare LF in chunked body")
	case cr != len(line)-2:
		return nil, c.refuse(line, "bare CR in chunked body")
	}
	return line, nil
}

// parseChunkLine parses chunk-size [chunk-ext] without its CRLF: 1 to 16
// hex digits, then extensions with no whitespace.
func parseChunkLine(p []byte) (int64, string) {
	var size uint64
	i := 0
	for ; i < len(p) && isHex(p[i]); i++ {
		if i == 16 {
			return 0, "chunk size longer than 16 hex digits"
		}
		size = size<<4 | uint64(unhex(p[i]))
	}
	switch {
	case i == 0:
		return 0, "chunk size is not hex"
	case size > math.MaxInt64:
		return 0, "chunk size overflows"
	}
	if reason := checkChunkExt(p[i:]); reason != "" {
		return 0, reason
	}
	return int64(size), ""
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// checkChunkExt accepts *( ";" token [ "=" ( token / quoted-string ) ] ).
func checkChunkExt(p []byte) string {
	for len(p) > 0 {
		if p[0] != ';' {
			return "malformed chunk size or extension"
		}
		p = p[1:]
		if p = skipToken(p); p == nil {
			return "malformed chunk extension name"
		}
		if len(p) == 0 || p[0] != '=' {
			continue
		}
		p = p[1:]
		if len(p) > 0 && p[0] == '"' {
			p = skipQuoted(p)
		} else {
			p = skipToken(p)
		}
		if p == nil {
			return "malformed chunk extension value"
		}
	}
	return ""
}

// skipToken returns p after a leading token, or nil if there is none.
func skipToken(p []byte) []byte {
	i := 0
	for i < len(p) && tchar[p[i]] {
		i++
	}
	if i == 0 {
		return nil
	}
	return p[i:]
}

// skipQuoted returns p after a leading quoted-string, or nil if it is
// malformed.
func skipQuoted(p []byte) []byte {
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return p[i+1:]
		case c == '\\' && i+1 < len(p) && isValueByte(p[i+1]):
			i++
		case c == '\\' || !isValueByte(c):
			return nil
		}
	}
	return nil
}
