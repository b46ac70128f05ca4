package http1

import (
	"bufio"
	"io"
	"net/url"
	"strings"
)

// ReadRequest reads one request head from br, leaving its body (and any
// pipelined request after it) in br. It returns io.EOF when the client closed
// between requests (before any byte, or after the one empty line it skips);
// every refusal wraps ErrBadRequest; other errors are I/O errors. A head
// refused once read whole, or past br's buffer, comes back with the error
// as a Request holding only the bytes consumed (Raw); nothing else of it
// is of use.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	if b, err := br.Peek(2); string(b) == "\r\n" {
		br.Discard(2) // RFC 9112 §2.2: ignore at least one empty line
	} else if len(b) == 0 && err != nil {
		return nil, err
	}
	r := &Request{}
	var err error
	if r.Raw, r.Header, err = parseHead(br, lim, true, ErrBadRequest, r.parseLine); err != nil {
		return refused(r.Raw), err
	}
	if reason := r.frame(); reason != "" {
		return refused(r.Raw), refuse(ErrBadRequest, reason)
	}
	return r, nil
}

// refused is what ReadRequest returns with an error: nil if no whole head
// was read, else a Request holding only the head's bytes (Raw), which the
// reader consumed, for the caller's count of what came.
func refused(raw []byte) *Request {
	if raw == nil {
		return nil
	}
	return &Request{Raw: raw}
}

// ReadRequestIn is ReadRequest for a request at b's start that the caller
// read already, without a reader, into r: n is the bytes it took (an empty
// line skipped first included). The head goes into the storage of r's Raw
// and Header where it has room, so whatever still used the request r held
// before (its strings share that storage) must be done with it; a caller
// that serves one request at a time reads each without an allocation.
// Until b holds a whole head it returns io.EOF (b is empty, or holds the
// empty line only) or io.ErrUnexpectedEOF. After an error, r holds
// nothing of use.
func ReadRequestIn(b []byte, lim Limits, r *Request) (n int, err error) {
	if len(b) >= 2 && string(b[:2]) == "\r\n" {
		n, b = 2, b[2:] // RFC 9112 §2.2: ignore at least one empty line
	}
	raw, fields := r.Raw, r.Header
	*r = Request{}
	k, raw, fields, err := parseHeadIn(b, lim, true, ErrBadRequest, r.parseLine, raw, fields)
	if err != nil {
		return 0, err
	}
	r.Raw, r.Header = raw, fields
	if reason := r.frame(); reason != "" {
		return 0, refuse(ErrBadRequest, reason)
	}
	return n + k, nil
}

// CopyBody relays the request's body from br to dst; see CopyBody.
func (r *Request) CopyBody(dst io.Writer, br *bufio.Reader) (int64, error) {
	return copyBody(dst, br, r.Framing, r.Length, ErrBadRequest)
}

// parseLine parses "method SP target SP version".
func (r *Request) parseLine(line string) string {
	m, rest, ok1 := strings.Cut(line, " ")
	t, v, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || t == "" || strings.IndexByte(v, ' ') >= 0 {
		return "request line is not method SP target SP version"
	}
	if !isToken(m) {
		return "invalid method"
	}
	var reason string
	if r.Major, r.Minor, reason = parseVersion(v); reason != "" {
		return reason
	}
	r.Method, r.Target = m, t
	return checkTarget(m, t)
}

// checkTarget accepts origin-form, absolute-form, authority-form for CONNECT
// and asterisk-form for OPTIONS; the checks match what net/http's
// url.ParseRequestURI refuses, and refuse more.
func checkTarget(method, t string) string {
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return "invalid character in request target"
		}
	}
	switch {
	case method == "CONNECT":
		u, err := url.ParseRequestURI("http://" + t)
		if t[0] == '/' || err != nil || u.Host != t || u.Port() == "" {
			return "CONNECT target is not host:port"
		}
	case t == "*":
		if method != "OPTIONS" {
			return "asterisk-form target with a method other than OPTIONS"
		}
	case t[0] == '/':
		path, _, _ := strings.Cut(t, "?")
		if !validEscapes(path) {
			return "invalid percent-encoding in request target"
		}
	default:
		u, err := url.ParseRequestURI(t)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return "invalid absolute-form request target"
		}
	}
	return ""
}

func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && (i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// frame reads framing and connection facts from the header fields.
func (r *Request) frame() string {
	h := scanFields(r.Header)
	r.conn = h.conn
	if h.clDiffer != "" {
		return h.clDiffer
	}
	r.ExpectContinue = r.Minor == 1 && strings.EqualFold(h.expect, "100-continue")
	r.Upgrade = r.Method == "CONNECT" || h.upgrade && h.conn&connUpgrade != 0
	if reason := checkHost(r.Minor, h.nHost, h.host); reason != "" {
		return reason
	}
	switch {
	case h.nTE > 0 && h.nCL > 0:
		return "Content-Length with Transfer-Encoding"
	case h.nTE > 1:
		return "Transfer-Encoding repeated"
	case h.nTE == 1 && r.Minor == 0:
		return "Transfer-Encoding in HTTP/1.0"
	case h.nTE == 1 && !strings.EqualFold(h.te, "chunked"):
		return "Transfer-Encoding other than chunked"
	case h.nTE == 1:
		r.Framing = Chunked
	case h.nCL > 0:
		n, ok := parseLength(h.cl)
		if !ok {
			return "malformed Content-Length"
		}
		r.Framing, r.Length = Length, n
	}
	r.Close = closes(r.conn, r.Minor)
	return ""
}

// checkHost enforces RFC 9112 §3.2: one Host in HTTP/1.1, at most one in
// HTTP/1.0, holding only bytes a host (and port) can hold.
func checkHost(minor, n int, host string) string {
	switch {
	case n > 1:
		return "more than one Host"
	case n == 0 && minor == 1:
		return "missing Host in HTTP/1.1"
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !isAlnum(c) && strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) < 0 {
			return "invalid character in Host"
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
