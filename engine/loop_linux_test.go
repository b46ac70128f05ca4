package engine

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestLoopsShareOneLoop: many sessions at once on one loop — descriptors
// reused between them, one timer heap, small and bulk streams, clients
// that half-close after their request and clients that close once they
// have the answer — each get every byte both ways (SHA-256 at both ends),
// end with one ok record, and leave no descriptor behind.
func TestLoopsShareOneLoop(t *testing.T) {
	const sessions = 120
	drain, kill := make(chan struct{}), make(chan struct{})
	ls, err := NewLoops(1, drain, kill)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	frontLn, backLn := loopback.Listener(t), loopback.Listener(t)
	fds := loopback.OpenFDs(t)

	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loopSession(ls, frontLn, backLn, i); err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ls.Close()
	if n := loopback.OpenFDs(t); n > fds {
		t.Errorf("%d descriptors more than before the sessions", n-fds)
	}
}

// loopSession relays one session on ls: the client sends a request (every
// seventh one 1 MiB, the rest 200 bytes), the backend reads it to the
// client's half-close or its known length, answers (every fifth 2 MiB)
// and closes; the client reads to EOF.
func loopSession(ls *Loops, frontLn, backLn *net.TCPListener, i int) error {
	client, proxyFront := dialPair(frontLn)
	proxyBack, backend := dialPair(backLn)
	defer client.Close()
	defer backend.Close()
	reqLen, respLen := 200, 300
	if i%7 == 0 {
		reqLen = 1 << 20
	}
	if i%5 == 0 {
		respLen = 2 << 20
	}
	halfClose := i%2 == 0
	req, reqSum := payload(reqLen, byte(i))
	resp, respSum := payload(respLen, byte(i+1))

	rec := NewRecorder(sessionIDs.Add(1), "web", "app", defFront.TimeWait, defBack.TimeWait)
	rec.Accepted(loopback.AddrPort(proxyFront.LocalAddr()), loopback.AddrPort(proxyFront.RemoteAddr()), loopback.AddrPort(nil))
	rec.Connected(false, false, loopback.AddrPort(proxyBack.LocalAddr()), loopback.AddrPort(proxyBack.RemoteAddr()))
	done := make(chan struct{})
	s := &Session{Rec: rec, Front: defFront, Back: defBack, Idle: 10 * time.Second}
	if err := ls.Relay(s, proxyFront, proxyBack, Pending{}, func() { close(done) }); err != nil {
		return err
	}

	backendErr := make(chan error, 1)
	go func() {
		got := make([]byte, reqLen)
		if _, err := io.ReadFull(backend, got); err != nil {
			backendErr <- fmt.Errorf("backend read: %w", err)
			return
		}
		if sha256.Sum256(got) != reqSum {
			backendErr <- fmt.Errorf("backend got a request that differs")
			return
		}
		if halfClose { // the client's FIN follows its request
			if n, err := backend.Read(got[:1]); n != 0 || err != io.EOF {
				backendErr <- fmt.Errorf("backend after the request: %d bytes, %v; want EOF", n, err)
				return
			}
		}
		if _, err := backend.Write(resp); err != nil {
			backendErr <- fmt.Errorf("backend write: %w", err)
			return
		}
		backendErr <- backend.Close()
	}()
	clientGot := readAllAsync(client)
	if err := <-writeAsync(client, req, halfClose); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	c := <-clientGot
	if c.err != nil || c.sum != respSum {
		return fmt.Errorf("client read %d of %d bytes, end %v", c.n, respLen, c.err)
	}
	if err := <-backendErr; err != nil {
		return err
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no end within 10s")
	}
	if td := rec.Done(); td.Outcome != OutcomeOK || td.Front.BytesOut != int64(respLen) || td.Back.BytesOut != int64(reqLen) {
		return fmt.Errorf("record: outcome %s, front out %d, back out %d; want ok, %d, %d",
			td.Outcome, td.Front.BytesOut, td.Back.BytesOut, respLen, reqLen)
	}
	return nil
}
