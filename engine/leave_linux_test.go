package engine

import (
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// pingTask takes an idle backend connection back (Watch, with the loop
// that left it last as its home), sends one byte, reads its echo and
// leaves the connection in its loop's epoll set again (Leave), as an
// http1 session gives its backend connection back to the pool.
type pingTask struct {
	back        *Socket // FD; Home: the loop that left it last, updated here
	msg         byte
	rn          *Runner
	front, sock *TaskSock
	got         chan error
}

func (p *pingTask) Due(time.Time)   {}
func (p *pingTask) Begun()          {}
func (p *pingTask) Drain(time.Time) {}
func (p *pingTask) Crashed(v any)   { p.got <- fmt.Errorf("crashed: %v", v) }

func (p *pingTask) Start(rn *Runner, first *TaskSock) {
	p.rn, p.front = rn, first
	s, err := rn.Watch(p.back.FD, p.back.Home)
	if err != nil {
		p.finish(err)
		return
	}
	p.sock = s
	if _, err := s.Write([]byte{p.msg}); err != nil {
		p.finish(err)
	}
}

func (p *pingTask) Ready(*TaskSock) {
	if p.sock == nil {
		return
	}
	var b [8]byte
	n, err := p.sock.Read(b[:])
	switch {
	case err == ErrWouldBlock:
	case err != nil:
		p.finish(err)
	case n != 1 || b[0] != p.msg:
		p.finish(fmt.Errorf("echo %q, want %q", b[:n], p.msg))
	default:
		p.rn.Leave(p.sock)
		p.back.Home, p.sock = p.rn.Loop(), nil
		p.finish(nil)
	}
}

func (p *pingTask) finish(err error) {
	p.rn.Close(p.front, true)
	p.rn.Done()
	p.got <- err
}

// A connection a task left in its loop's epoll set (Leave) is taken back
// by the next task: on the same loop as it is, with no epoll_ctl (one
// loop), or by another loop, which takes it out of the first's set (two
// loops, whose tasks alternate). Each time its next bytes reach the task.
func TestIdleSocketLeftOnItsLoop(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d loops", n), func(t *testing.T) {
			ls, err := NewLoops(n, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ls.Close)
			ln, bln := loopback.Listener(t), loopback.Listener(t)
			backend, back, err := bareBack(ls, bln)
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			defer unix.Close(back.FD) // before the loops close: it leaves their sets
			go io.Copy(backend, backend)
			loops := map[int]bool{}
			for i := range 4 {
				client, front, err := bareFront(ln)
				if err != nil {
					t.Fatal(err)
				}
				p := &pingTask{back: &back, msg: byte('a' + i), got: make(chan error, 1)}
				if err := ls.Start(p, front.FD); err != nil {
					t.Fatal(err)
				}
				if err := recv(t, p.got, 5*time.Second, "the echo"); err != nil {
					t.Fatalf("ping %d: %v", i, err)
				}
				client.Close()
				loops[back.Home] = true
			}
			if len(loops) != n {
				t.Errorf("the connection was taken on %d loops of %d", len(loops), n)
			}
		})
	}
}
