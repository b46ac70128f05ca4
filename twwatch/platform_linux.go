package twwatch

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// kernelFigures says that this system has the figures a Watcher samples:
// sock_diag and /proc/net. Elsewhere failing to read them is expected.
const kernelFigures = true

// cpuOf runs f locked to one OS thread and returns the CPU time that
// thread spent in it, user and system: a sock_diag dump's walk of the
// kernel's socket table is charged to the thread that reads it. Wall time
// would also count waiting for a CPU on a loaded host. It falls back to
// wall time if the thread's usage cannot be read.
func cpuOf(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.Rusage
	start := time.Now()
	if unix.Getrusage(unix.RUSAGE_THREAD, &before) != nil {
		f()
		return time.Since(start)
	}
	f()
	if unix.Getrusage(unix.RUSAGE_THREAD, &after) != nil {
		return time.Since(start)
	}
	return cpu(after) - cpu(before)
}

func cpu(u unix.Rusage) time.Duration {
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
