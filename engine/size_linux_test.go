package engine

import (
	"testing"
	"unsafe"
)

// An idle session holds its legs, relay and executor for as long as its
// peers stay connected, and the idle target is per connection: each
// struct is kept within the Go size class it fills now (352, 416 and 208
// bytes on 64-bit), so that a field added where padding is left costs
// nothing and one that pushes a struct into the next class is a choice
// made here, with the idle benchmark (proxy's BenchmarkIdle) rerun.
func TestIdleStructsKeepTheirSizeClass(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("size classes measured on 64-bit")
	}
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"leg", unsafe.Sizeof(leg{}), 352},
		{"loopRelay", unsafe.Sizeof(loopRelay{}), 416},
		{"executor", unsafe.Sizeof(executor{}), 208},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, past its size class of %d: every idle session pays the next class", c.name, c.size, c.max)
		}
	}
}
