// Package logcheck checks JSON log lines for what log pipelines reject or
// silently overwrite: a key written twice in one object. Tests of every
// package that logs use it.
package logcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DuplicateKey returns a key that appears twice in one object of the JSON
// value line, at any depth, or "" when none does. An error says the line
// is not JSON.
func DuplicateKey(line []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dup, err := walk(dec)
	if err != nil {
		return "", fmt.Errorf("log line %q: %w", line, err)
	}
	return dup, nil
}

// walk reads one value from dec and returns the first key repeated within
// one of its objects.
func walk(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return "", nil // a scalar
	}
	seen := map[string]bool{}
	for dec.More() {
		if delim == '{' {
			tok, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := tok.(string)
			if seen[key] {
				return key, nil
			}
			seen[key] = true
		}
		if dup, err := walk(dec); dup != "" || err != nil {
			return dup, err
		}
	}
	_, err = dec.Token() // the closing delimiter
	return "", err
}
