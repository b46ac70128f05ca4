//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// parseCPUs reads a taskset-style CPU list ("0", "0-1", "0,2-3").
func parseCPUs(list string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return set, fmt.Errorf("CPU list %q: %q is not a CPU or a range of them", list, part)
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return set, nil
}

// pinSelf runs every thread of this process on the CPUs in list; threads
// started later, and the processes it starts (the nginx backend, wrk),
// inherit that. The proxies do not: each starts under taskset.
func pinSelf(list string) error {
	set, err := parseCPUs(list)
	if err != nil {
		return err
	}
	if err := pinThreads(&set); err != nil {
		return fmt.Errorf("pin to CPUs %s: %w", list, err)
	}
	return nil
}

// pinThreads sets the affinity of every thread of this process. A thread
// that an unpinned one starts meanwhile inherits the old affinity, so it
// reads the threads again until a pass finds none new.
func pinThreads(set *unix.CPUSet) error {
	pinned := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		found := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) { // ESRCH: the thread ended
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			pinned[tid], found = true, true
		}
		if !found {
			return nil
		}
	}
}
