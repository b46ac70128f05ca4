//go:build unix

package doctor

import (
	"os"

	"golang.org/x/sys/unix"
)

// noFileLimit reads this process's RLIMIT_NOFILE.
func noFileLimit() (soft, hard uint64, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, os.NewSyscallError("getrlimit RLIMIT_NOFILE", err)
	}
	return uint64(lim.Cur), uint64(lim.Max), nil
}
