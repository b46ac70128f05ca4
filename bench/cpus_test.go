//go:build linux

package main

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []int
	}{
		{"0", []int{0}},
		{"0-1", []int{0, 1}},
		{"0,2-3", []int{0, 2, 3}},
	} {
		set, err := parseCPUs(tc.list)
		if err != nil {
			t.Errorf("%q: %v", tc.list, err)
			continue
		}
		if set.Count() != len(tc.want) {
			t.Errorf("%q: %d CPUs, want %v", tc.list, set.Count(), tc.want)
		}
		for _, c := range tc.want {
			if !set.IsSet(c) {
				t.Errorf("%q: CPU %d not set", tc.list, c)
			}
		}
	}
	for _, bad := range []string{"", "a", "1-0", "-1", "0,,1", "2048"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// pinThreads leaves no thread of the process on another set: the
// runtime's threads (sysmon, the GC's workers, the test's own) as well as
// the caller's. The set is one CPU the process may use; every thread is
// put back afterwards.
func TestPinThreadsPinsEveryThread(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("one CPU: every thread is on it already")
	}
	t.Cleanup(func() {
		if err := pinThreads(&all); err != nil {
			t.Error(err)
		}
	})
	var one unix.CPUSet
	for c := 0; one.Count() == 0; c++ {
		if all.IsSet(c) {
			one.Set(c)
		}
	}
	if err := pinThreads(&one); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 2 {
		t.Fatalf("%d threads: nothing to tell pinning one from pinning all", len(tasks))
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			continue // the thread ended
		}
		if got != one {
			t.Errorf("thread %d: %d CPUs allowed, want the one pinned", tid, got.Count())
		}
	}
}
