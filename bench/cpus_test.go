//go:build linux

package main

import "testing"

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
