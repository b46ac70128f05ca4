//go:build !linux

package twwatch

import (
	"time"
)

// kernelFigures says that this system has the figures a Watcher samples:
// sock_diag and /proc/net are Linux's, so reading them fails as expected.
const kernelFigures = false

// cpuOf runs f and returns the time it took: the thread's CPU time is read
// only on Linux.
func cpuOf(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}
