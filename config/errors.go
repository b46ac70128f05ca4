package config

import (
	"errors"
	"strconv"
	"strings"
)

// ErrUnknownKey is wrapped by the error for a key the schema does not have.
var ErrUnknownKey = errors.New("unknown key")

// Error is one problem found in a configuration. Parse and Validate return
// every problem they find, joined with errors.Join; errors.As reaches each.
type Error struct {
	File   string // as given to Parse or Load; empty from Validate
	Line   int    // 1-based; 0 when unknown
	Object string // `listener "web"`, `backend #2`; empty for top-level keys
	Key    string // key path within Object, e.g. "close.time_wait"
	Err    error
}

// Error renders the problem as "file:line: object: key: message", leaving
// out the parts that are empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	for _, part := range []string{e.Object, e.Key} {
		if part != "" {
			b.WriteString(part + ": ")
		}
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }
