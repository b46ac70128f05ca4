// Package http1 owns strict HTTP/1.x message framing for the proxy's http1
// mode: finding where each request and response ends while the bytes pass
// unchanged, and refusing framing that two parsers could read differently
// (request smuggling). It does no I/O of its own beyond the readers and
// writers it is handed, starts no goroutines and does no logging. It imports
// nothing of the project.
//
// A request head is read with ReadRequest, its body relayed with CopyBody;
// the backend's answer is read with ReadResponse (called again after a 1xx
// other than 101) and its body relayed with (*Response).CopyBody. The head
// bytes go on as Raw, or as HeadForBackend / HeadForClient when only the
// Connection header must change so the back leg can be reused.
//
// What is refused (RFC 9112), each wrapping ErrBadRequest with the reason:
//
//   - Content-Length together with Transfer-Encoding; Content-Length values
//     that differ. Identical duplicate Content-Length field lines are accepted
//     as one value; a comma list ("5, 5") is refused, as net/http does.
//   - Content-Length that is not 1*DIGIT (sign, inner space, "0x", empty) or
//     overflows int64.
//   - Transfer-Encoding other than exactly one field line whose value is the
//     single token "chunked" (any case). Codings before chunked ("gzip,
//     chunked") are legal in RFC 9112 but refused here: keep it simple and
//     strict. Transfer-Encoding in an HTTP/1.0 request is refused (RFC 9112
//     §6.1 calls that framing faulty).
//   - Line endings other than CRLF (a bare LF or a bare CR anywhere), obs-fold,
//     whitespace between a field name and its colon, field names that are not
//     tokens, control characters other than HTAB in values, more than
//     Limits.MaxHeaderFields fields, heads larger than Limits.MaxHeadBytes
//     (these two also wrap ErrHeadTooLarge, for a caller preferring 431).
//   - A request line that is not exactly method SP target SP version: the
//     method a token, the version "HTTP/1.0" or "HTTP/1.1" (case-sensitive),
//     the target origin-form ("/…", visible ASCII only, valid %-escapes in the
//     path), absolute-form, authority-form for CONNECT only, or "*" for
//     OPTIONS only. One empty line before the request line is skipped (it is
//     not part of Raw).
//   - A missing Host in HTTP/1.1, more than one Host, or a Host with bytes a
//     host cannot hold.
//   - In chunked bodies: chunk sizes that are not 1 to 16 hex digits (no sign,
//     whitespace or "0x"), or overflow int64; chunk extensions that are not
//     ";name" or ";name=token" or ";name=quoted-string" with no whitespace at
//     all (stricter than RFC 9112's BWS, a known smuggling vector); chunk
//     lines of 4 KiB or more; anything but CRLF after a chunk's data; trailer
//     fields breaking the header rules; trailers over 64 KiB.
//
// Responses are read strictly enough to find their end and tolerantly where
// the framing is still unambiguous: a bare LF line ending is accepted (RFC
// 9112 §2.2 allows it), "gzip, chunked" is chunked, and a final coding other
// than chunked means close-delimited. Content-Length with
// Transfer-Encoding, differing Content-Length, obs-fold, bare CR and
// Transfer-Encoding in HTTP/1.0 wrap ErrBadResponse.
//
// On any error from CopyBody the caller must close both connections: bytes
// before the fault may have been relayed, so neither leg can be reused.
//
// Usage:
//
//	req, err := http1.ReadRequest(front, http1.Limits{})
//	if errors.Is(err, http1.ErrBadRequest) { /* answer 400, close */ }
//	back.Write(req.HeadForBackend())
//	http1.CopyBody(back, front, req.Framing, req.Length)
//	resp, err := http1.ReadResponse(backR, req, http1.Limits{})
//	client.Write(resp.HeadForClient(req.Close))
//	resp.CopyBody(client, backR)
//	// reuse the back leg when !resp.Close
package http1
