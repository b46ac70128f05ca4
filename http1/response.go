package http1

import (
	"bufio"
	"io"
	"strings"
)

// ReadResponse reads one response head from br for req, leaving its body in
// br. After a 1xx other than 101 (Framing NoBody) the caller relays the head
// and reads the next response. It returns io.EOF when the server closed
// before sending a byte; malformed heads wrap ErrBadResponse.
func ReadResponse(br *bufio.Reader, req *Request, lim Limits) (*Response, error) {
	r := &Response{}
	var err error
	if r.Raw, r.Header, err = parseHead(br, lim, false, ErrBadResponse, r.parseLine); err != nil {
		return nil, err
	}
	if reason := r.frameFor(req); reason != "" {
		return nil, refuse(ErrBadResponse, reason)
	}
	return r, nil
}

// ReadResponseIn is ReadResponse for a response at b's start that the
// caller read already, without a reader, into r (in the storage of its Raw
// and Header where it has room, as ReadRequestIn): n is the head's
// length. Until b holds a whole head it returns io.EOF (b is empty) or
// io.ErrUnexpectedEOF. After an error, r holds nothing of use.
func ReadResponseIn(b []byte, req *Request, lim Limits, r *Response) (n int, err error) {
	raw, fields := r.Raw, r.Header
	*r = Response{}
	n, raw, fields, err = parseHeadIn(b, lim, false, ErrBadResponse, r.parseLine, raw, fields)
	if err != nil {
		return 0, err
	}
	r.Raw, r.Header = raw, fields
	if reason := r.frameFor(req); reason != "" {
		return 0, refuse(ErrBadResponse, reason)
	}
	return n, nil
}

// frameFor frames r as the answer to req: what frame says, and a 101 only
// where req asked to upgrade (RFC 9110 §15.2.2), else the bytes after it
// would be relayed as a tunnel nobody asked for.
func (r *Response) frameFor(req *Request) string {
	if r.Status == 101 && !req.Upgrade {
		return "101 to a request that asked for no upgrade"
	}
	return r.frame(req.Method)
}

// Tunnel says r, the answer to a request of method, turns the connection
// into a tunnel: a 101 (an upgrade accepted), or a 2xx to a CONNECT. Its
// head is the connection's last, and no body follows it.
func (r *Response) Tunnel(method string) bool {
	return r.Status == 101 || method == "CONNECT" && r.Status/100 == 2
}

// CopyBody relays the response's body from br to dst; see CopyBody. Its
// refusals wrap ErrBadResponse.
func (r *Response) CopyBody(dst io.Writer, br *bufio.Reader) (int64, error) {
	return copyBody(dst, br, r.Framing, r.Length, ErrBadResponse)
}

// parseLine parses "HTTP/1.x SP 3DIGIT [SP reason]"; the space before an
// empty reason may be missing.
func (r *Response) parseLine(line string) string {
	v, rest, _ := strings.Cut(line, " ")
	var reason string
	if r.Major, r.Minor, reason = parseVersion(v); reason != "" {
		return reason
	}
	if len(rest) < 3 || len(rest) > 3 && rest[3] != ' ' {
		return "malformed status code"
	}
	for i := 0; i < 3; i++ {
		c := rest[i]
		if c < '0' || c > '9' {
			return "malformed status code"
		}
		r.Status = r.Status*10 + int(c-'0')
	}
	if r.Status < 100 {
		return "malformed status code"
	}
	for i := 3; i < len(rest); i++ {
		if !isValueByte(rest[i]) {
			return "control character in reason phrase"
		}
	}
	return ""
}

// frame applies RFC 9112 §6.3 in order.
func (r *Response) frame(method string) string {
	h := scanFields(r.Header)
	r.conn = h.conn
	r.Close = closes(r.conn, r.Minor)
	switch {
	case method == "HEAD", r.Status/100 == 1, r.Status == 204, r.Status == 304,
		method == "CONNECT" && r.Status/100 == 2:
		return "" // no body, whatever the fields say
	}
	switch {
	case h.clDiffer != "":
		return h.clDiffer
	case h.nTE > 0 && h.nCL > 0:
		return "Content-Length with Transfer-Encoding"
	case h.nTE > 0 && r.Minor == 0:
		return "Transfer-Encoding in HTTP/1.0"
	case h.nTE > 0:
		r.Framing = Chunked
		if !finalChunked(h.te) { // the final coding is in the last line
			r.Framing, r.Close = UntilClose, true
		}
		return ""
	case h.nCL > 0:
		n, ok := parseLength(h.cl)
		if !ok {
			return "malformed Content-Length"
		}
		r.Framing, r.Length = Length, n
		return ""
	}
	r.Framing, r.Close = UntilClose, true
	return ""
}

// finalChunked reports whether the last coding of the list v is chunked.
func finalChunked(v string) bool {
	last := ""
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if t = trimOWS(t); t != "" {
			last = t
		}
	}
	return strings.EqualFold(last, "chunked")
}
