package http1

import (
	"strings"
	"unsafe"
)

// HeadForBackend returns r.Raw rewritten so the backend keeps the connection
// alive for reuse: the "close" token removed from Connection (a field line
// left empty is dropped) and, for HTTP/1.0, "Connection: keep-alive" added.
// Every other byte is unchanged; without anything to change it returns r.Raw
// itself.
func (r *Request) HeadForBackend() []byte {
	closing := r.conn&connClose != 0
	add := ""
	if r.Minor == 0 && (closing || r.conn&connKeepAlive == 0) {
		add = "keep-alive"
	}
	if !closing && add == "" {
		return r.Raw
	}
	return editConnection(r.Raw, r.Header, "close", "", add)
}

// HeadForClient returns r.Raw with "Connection: close" set (replacing any
// keep-alive token) when closing is true, otherwise r.Raw itself.
func (r *Response) HeadForClient(closing bool) []byte {
	if !closing || r.conn&(connClose|connKeepAlive) == connClose {
		return r.Raw
	}
	return editConnection(r.Raw, r.Header, "close", "keep-alive", "close")
}

// editConnection copies raw, whose field lines are fields, dropping the
// tokens drop1 and drop2 from every Connection field line (a line left empty
// is dropped) and adding "Connection: add" before the empty line if add is
// not empty. Lines are kept with their own endings.
func editConnection(raw []byte, fields []Field, drop1, drop2, add string) []byte {
	s := unsafe.String(unsafe.SliceData(raw), len(raw)) // read only, as the fields over it
	out := make([]byte, 0, len(raw)+len("Connection: keep-alive\r\n"))
	i := strings.IndexByte(s, '\n') + 1
	out = append(out, s[:i]...)
	s = s[i:]
	for _, f := range fields {
		i = strings.IndexByte(s, '\n') + 1
		line := s[:i]
		s = s[i:]
		if !strings.EqualFold(f.Name, "Connection") ||
			!hasToken(f.Value, drop1) && (drop2 == "" || !hasToken(f.Value, drop2)) {
			out = append(out, line...)
			continue
		}
		if kept := dropTokens(f.Value, drop1, drop2); kept != "" {
			out = append(out, f.Name+": "+kept+lineEnd(line)...)
		}
	}
	if add != "" {
		out = append(out, "Connection: "+add+lineEnd(s)...)
	}
	return append(out, s...) // the empty line
}

// lineEnd returns line's ending, CRLF or LF.
func lineEnd(line string) string {
	if strings.HasSuffix(line, "\r\n") {
		return "\r\n"
	}
	return "\n"
}

// dropTokens returns the list v without the tokens a and b, joined by ", ".
func dropTokens(v, a, b string) string {
	var kept []string
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		t = trimOWS(t)
		if t != "" && !strings.EqualFold(t, a) && (b == "" || !strings.EqualFold(t, b)) {
			kept = append(kept, t)
		}
	}
	return strings.Join(kept, ", ")
}
