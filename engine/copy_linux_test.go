package engine

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestRelayCopyChunksThenSplices: a direction that is silent or carries
// small chunks holds no pipe; a bulk stream gets one pipe, which is closed
// when the direction ends; every byte arrives in order and EOF ends the
// copy without an error, as io.Copy would.
func TestRelayCopyChunksThenSplices(t *testing.T) {
	ln := loopback.Listener(t)
	client, src := loopback.Pair(t, ln)
	dst, sink := loopback.Pair(t, ln)

	// Go's own splice (io.Copy between TCP connections in earlier tests)
	// keeps its pipes in a sync.Pool that a collection empties: two now,
	// so that none of those closes while this test counts descriptors.
	runtime.GC()
	runtime.GC()
	base := loopback.PipeFDs(t)
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := relayCopy(dst, src, nil)
		done <- result{n, err}
	}()

	small := []byte("hello")
	if _, err := client.Write(small); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(small))
	if _, err := io.ReadFull(sink, got); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("small chunk: got %q, %v", got, err)
	}
	if n := loopback.PipeFDs(t); n != base {
		t.Fatalf("after a small chunk the copier holds %d pipe descriptors, want none", n-base)
	}

	bulk := make([]byte, 4<<20)
	rand.Read(bulk)
	werr := make(chan error, 1)
	go func() {
		_, err := client.Write(bulk)
		werr <- err
	}()
	got = make([]byte, len(bulk))
	if _, err := io.ReadFull(sink, got); err != nil || !bytes.Equal(got, bulk) {
		t.Fatalf("bulk: bytes differ or %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if n := loopback.PipeFDs(t); n != base+2 {
		t.Fatalf("during bulk the copier holds %d pipe descriptors, want 2 (one pipe)", n-base)
	}
	if n := grownPipes.Load(); n != 1 {
		t.Fatalf("during bulk %d pipes are grown, want the copier's", n)
	}

	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.n != int64(len(small)+len(bulk)) {
		t.Fatalf("copy ended with n=%d, %v; want n=%d, nil", res.n, res.err, len(small)+len(bulk))
	}
	if n := loopback.PipeFDs(t); n != base {
		t.Fatalf("after the direction ended %d pipe descriptors remain, want none", n-base)
	}
	if n := grownPipes.Load(); n != 0 {
		t.Fatalf("after the direction ended %d grown pipes are counted, want none", n)
	}
}

// TestSplicePipesGrowWithinBudget: a bulk direction's pipe holds bigPipe
// while fewer than bigPipes grown ones are open; the next ones keep the
// kernel's default size, and closing a pipe gives its share back.
func TestSplicePipesGrowWithinBudget(t *testing.T) {
	if n := grownPipes.Load(); n != 0 {
		t.Fatalf("%d grown pipes open before the test", n)
	}
	var plain [2]int
	if err := unix.Pipe2(plain[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	def, err := unix.FcntlInt(uintptr(plain[1]), unix.F_GETPIPE_SZ, 0)
	_ = unix.Close(plain[0])
	_ = unix.Close(plain[1])
	if err != nil {
		t.Fatal(err)
	}
	ps := make([]splicePipe, bigPipes+2)
	defer func() {
		for i := range ps {
			ps[i].close()
		}
	}()
	for i := range ps {
		ps[i] = noPipe()
		if err := ps[i].open(); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range ps {
		size, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i == 0 && !p.grown:
			t.Skipf("the kernel refused a pipe of %d bytes (fs.pipe-max-size, or the user's pipe pages)", bigPipe)
		case i < bigPipes && (!p.grown || size != bigPipe):
			t.Errorf("pipe %d: grown %v, %d bytes; want grown, %d", i, p.grown, size, bigPipe)
		case i >= bigPipes && (p.grown || size != def):
			t.Errorf("pipe %d past the budget: grown %v, %d bytes; want the default %d", i, p.grown, size, def)
		}
	}
	if n := grownPipes.Load(); n != bigPipes {
		t.Errorf("%d grown pipes counted, want %d", n, bigPipes)
	}
	ps[0].close()
	if n := grownPipes.Load(); n != bigPipes-1 {
		t.Errorf("after a grown pipe closed %d are counted, want %d", n, bigPipes-1)
	}
	if err := ps[0].open(); err != nil || !ps[0].grown {
		t.Errorf("a pipe opened after one closed: grown %v, %v; want grown", ps[0].grown, err)
	}
	for i := range ps {
		ps[i].close()
	}
	if n := grownPipes.Load(); n != 0 {
		t.Errorf("after every pipe closed %d are counted, want none", n)
	}
}

// TestRelayCopyAllocatesNothingPerChunk: relaying a chunk, small or
// spliced, allocates nothing once the direction runs.
func TestRelayCopyAllocatesNothingPerChunk(t *testing.T) {
	ln := loopback.Listener(t)
	client, src := loopback.Pair(t, ln)
	dst, sink := loopback.Pair(t, ln)
	done := make(chan error, 1)
	go func() {
		_, err := relayCopy(dst, src, nil)
		done <- err
	}()
	for _, size := range []int{100, 256 << 10} { // chunks, then splice
		out, in := make([]byte, size), make([]byte, size)
		relay := func() {
			if _, err := client.Write(out); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(sink, in); err != nil {
				t.Fatal(err)
			}
		}
		relay()
		if n := testing.AllocsPerRun(50, relay); n > 0.1 {
			t.Errorf("relaying %d bytes allocates %.1f times, want none", size, n)
		}
	}
	client.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRelayCopyGivesBuffersBack: every chunk buffer taken is given back,
// also by the read that finds EOF.
func TestRelayCopyGivesBuffersBack(t *testing.T) {
	ln := loopback.Listener(t)
	for range 3 {
		client, src := loopback.Pair(t, ln)
		dst, sink := loopback.Pair(t, ln)
		free0 := chunks.len()
		done := make(chan error, 1)
		go func() {
			_, err := relayCopy(dst, src, nil)
			done <- err
		}()
		client.Write([]byte("hi"))
		client.CloseWrite()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(io.LimitReader(sink, 2)); err != nil || string(b) != "hi" {
			t.Fatalf("sink read %q, %v", b, err)
		}
		if n := chunks.len(); n != max(free0, 1) {
			t.Errorf("after the direction ended %d chunk buffers are free, want %d: one was not given back", n, max(free0, 1))
		}
		for _, c := range []*net.TCPConn{client, src, dst, sink} {
			c.Close()
		}
	}
}

// exitUnlessPipesLeft ends the test binary (goleak's cleanup), failing it
// if some direction never gave back its grown pipe's share of the budget.
func exitUnlessPipesLeft(code int) {
	if n := grownPipes.Load(); n != 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d grown splice pipes still counted after the tests\n", n)
		code = 1
	}
	os.Exit(code)
}
