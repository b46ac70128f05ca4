package http1

import (
	"errors"
	"fmt"
)

// Framing says how a message body is delimited.
type Framing int

const (
	// NoBody: no body (a request without Content-Length or
	// Transfer-Encoding; a response to HEAD; 1xx, 204, 304; 101 and a 2xx
	// to CONNECT, after which the caller tunnels).
	NoBody Framing = iota
	// Length: Content-Length, exactly Length bytes.
	Length
	// Chunked: Transfer-Encoding chunked (final coding), with trailers.
	Chunked
	// UntilClose: responses only, delimited by the server's close.
	UntilClose
)

// String names the framing as a record or log would.
func (f Framing) String() string {
	switch f {
	case NoBody:
		return "none"
	case Length:
		return "length"
	case Chunked:
		return "chunked"
	case UntilClose:
		return "until-close"
	}
	return fmt.Sprintf("Framing(%d)", int(f))
}

// Field is one header or trailer field as received: Name keeps its case,
// Value is stripped of surrounding whitespace.
type Field struct{ Name, Value string }

// Request is a request head and what it says about framing and the
// connection.
type Request struct {
	Method, Target string
	Major, Minor   int // 1.0 or 1.1 only; anything else is refused
	Header         []Field
	Raw            []byte // the exact head bytes, request line through the empty line; read-only: the strings above share them
	Framing        Framing
	Length         int64 // body length when Framing is Length
	// Close: the client will not send another request ("Connection: close",
	// or HTTP/1.0 without "Connection: keep-alive").
	Close bool
	// Upgrade: CONNECT, or an Upgrade header listed in Connection; the
	// connection becomes a tunnel after a 101 / 2xx.
	Upgrade bool
	// ExpectContinue: "Expect: 100-continue" in an HTTP/1.1 request.
	ExpectContinue bool

	conn connOptions // what its Connection fields list
}

// Response is a response head and what it says about framing and the
// connection.
type Response struct {
	Status       int
	Major, Minor int
	Header       []Field
	Raw          []byte // the exact head bytes, status line through the empty line; read-only: Header's strings share them
	Framing      Framing
	Length       int64 // body length when Framing is Length
	// Close: the server will close ("Connection: close", HTTP/1.0 without
	// keep-alive, or UntilClose framing).
	Close bool

	conn connOptions // what its Connection fields list
}

var (
	// ErrBadRequest wraps every refusal of a request head or body that the
	// proxy must answer with 400 and never forward; the message names the
	// reason.
	ErrBadRequest = errors.New("http1: bad request")
	// ErrBadResponse wraps a malformed response: the proxy answers 502 and
	// discards the backend connection.
	ErrBadResponse = errors.New("http1: bad response")
	// ErrHeadTooLarge is wrapped, together with ErrBadRequest or
	// ErrBadResponse, when a head exceeds Limits.MaxHeadBytes or
	// Limits.MaxHeaderFields (a proxy may prefer 431 to 400).
	ErrHeadTooLarge = errors.New("http1: head too large")
)

// Limits bound what one head may cost. Zero values take the defaults.
type Limits struct {
	MaxHeadBytes    int // default 64 KiB: start line through the empty line
	MaxHeaderFields int // default 100
}

// DefaultMaxHeadBytes is Limits.MaxHeadBytes when it is not set.
const DefaultMaxHeadBytes = 64 << 10

const defaultMaxHeaderFields = 100

func (l Limits) withDefaults() Limits {
	if l.MaxHeadBytes <= 0 {
		l.MaxHeadBytes = DefaultMaxHeadBytes
	}
	if l.MaxHeaderFields <= 0 {
		l.MaxHeaderFields = defaultMaxHeaderFields
	}
	return l
}

// refuse returns an error wrapping kind (ErrBadRequest or ErrBadResponse)
// that names the reason.
func refuse(kind error, reason string) error {
	return fmt.Errorf("%w: %s", kind, reason)
}
