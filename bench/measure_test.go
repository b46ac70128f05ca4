//go:build linux

package main

import "testing"

func TestParseSockstatTW(t *testing.T) {
	n, err := parseSockstatTW("sockets: used 8\nTCP: inuse 1 orphan 0 tw 53841 alloc 1 mem 138\nUDP: inuse 0 mem 0\n")
	if err != nil || n != 53841 {
		t.Errorf("tw %d, %v; want 53841", n, err)
	}
	if _, err := parseSockstatTW("UDP: inuse 0 mem 0\n"); err == nil {
		t.Error("no TCP line parsed")
	}
}
