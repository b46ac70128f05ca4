package engine

import "testing"

// A loop finds a socket by its descriptor until it closes, and a
// descriptor the kernel gave to a new socket meanwhile stays the new one's.
func TestFDTable(t *testing.T) {
	var tb fdTable
	if s := tb.get(-1); s != nil {
		t.Fatal("a negative descriptor found a socket")
	}
	a, b := &fdSock{fd: 3}, &fdSock{fd: 1000}
	tb.put(a)
	tb.put(b)
	if tb.get(3) != a || tb.get(1000) != b || tb.get(4) != nil || tb.get(5000) != nil {
		t.Fatalf("lookups: 3 %p (want %p), 1000 %p (want %p), 4 %p, 5000 %p", tb.get(3), a, tb.get(1000), b, tb.get(4), tb.get(5000))
	}
	reused := &fdSock{fd: 3}
	tb.put(reused)
	tb.del(a) // the old socket's close comes after its descriptor went on
	if tb.get(3) != reused {
		t.Error("deleting the old socket dropped the one that took its descriptor")
	}
	tb.del(reused)
	if tb.get(3) != nil {
		t.Error("a closed socket is still found")
	}
}
