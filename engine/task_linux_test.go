package engine

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// echoTask answers each byte it reads with the same byte, ends its leg
// by Session.End's rules when its peer's FIN comes, and panics at a '!'.
type echoTask struct {
	rn      *Runner
	s       *Session
	sock    *TaskSock
	crashed chan any
	ended   chan struct{}
}

func (e *echoTask) Start(rn *Runner, first *TaskSock) { e.rn, e.sock = rn, first }
func (e *echoTask) Due(time.Time)                     {}
func (e *echoTask) Begun()                            {}
func (e *echoTask) Drain(time.Time)                   {}
func (e *echoTask) Crashed(p any)                     { e.crashed <- p }

func (e *echoTask) Ready(*TaskSock) {
	var b [64]byte
	for e.sock != nil {
		n, err := e.sock.Read(b[:])
		switch {
		case err == ErrWouldBlock:
			return
		case err != nil:
			panic(err)
		case n == 0: // the peer's FIN: the leg ends alone, on the loop
			e.rn.End(e.s, policy.Front, e.sock, Ending{PeerFIN: true}, 0, func() { close(e.ended) })
			e.sock = nil
			e.rn.Done()
			return
		case b[n-1] == '!':
			panic("told to")
		}
		if _, err := e.sock.Write(b[:n]); err != nil {
			panic(err)
		}
	}
}

// A task on a loop reads and writes its socket as edges come and ends its
// leg there (Runner.End: the record says the client's FIN came first); a
// task that panics has its socket reset and is told, and the loops still
// close (nothing left counted).
func TestTaskRunsEndsAndCrashes(t *testing.T) {
	ls, err := NewLoops(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := func() (*net.TCPConn, *echoTask, *Recorder) {
		client, front, err := bareFront(ln)
		if err != nil {
			t.Fatal(err)
		}
		rec := NewRecorder(1, "web", "app", policy.TargetPeer, policy.TargetPeer)
		task := &echoTask{s: &Session{Rec: rec, Front: policyClose(policy.TargetPeer, policy.FallbackFIN)},
			crashed: make(chan any, 1), ended: make(chan struct{})}
		if err := ls.Start(task, front.FD); err != nil {
			t.Fatal(err)
		}
		_ = client.SetDeadline(time.Now().Add(5 * time.Second))
		return client, task, rec
	}

	client, task, rec := start()
	for _, msg := range []string{"one", "two"} {
		client.Write([]byte(msg))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(client, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	client.CloseWrite()
	recv(t, task.ended, 5*time.Second, "the leg's end")
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("the client read a byte after its FIN; want the proxy's FIN")
	}
	client.Close()
	if td := rec.Done(); td.Front.FirstFIN != policy.SideClient || td.Outcome != OutcomeOK {
		t.Errorf("record: first FIN %s, outcome %s; want client, ok", td.Front.FirstFIN, td.Outcome)
	}

	client, task, _ = start()
	defer client.Close()
	client.Write([]byte("boom!"))
	if p := recv(t, task.crashed, 5*time.Second, "the crash"); p != "told to" {
		t.Errorf("Crashed(%v), want the panic's value", p)
	}
	if _, err := client.Read(make([]byte, 1)); !isReset(err) {
		t.Errorf("the crashed task's client: %v, want a reset", err)
	}
}
