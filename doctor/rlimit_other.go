//go:build !unix

package doctor

import "errors"

// noFileLimit has no RLIMIT_NOFILE to read off Unix.
func noFileLimit() (soft, hard uint64, err error) {
	return 0, 0, errors.New("RLIMIT_NOFILE: no such limit on this system")
}
