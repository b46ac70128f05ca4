package proxy

import (
	"fmt"
	"runtime/debug"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// tcpIntake is the start of a tcp session behind a listener that takes a
// PROXY header, on one of the relay loops: it reads and judges the header
// there (as readIntake does on a goroutine), then relays the session on
// the same loop when a backend connection is ready without a wait (as
// atOnce does), or else hands it to a goroutine (runAfterIntake) that
// dials, sends a PROXY header on when the backend asks for one, and
// relays.
type tcpIntake struct {
	ss    *session
	rn    *engine.Runner
	front *engine.TaskSock
	in    []byte // the client's bytes: in[:inN]; pooled
	inN   int
	by    time.Time // proxy_protocol_timeout after the accept
	over  bool
}

// startTCPIntake hands a bare tcp session's intake to the loops; false:
// they refused, or the source is refused before any read (on a
// goroutine, run), and nothing was done.
func (ss *session) startTCPIntake() bool {
	ls := ss.srv.loops.Load()
	if ls == nil || ss.bare < 0 || ss.refusedUnread() {
		return false
	}
	return ss.startTask(ls, &tcpIntake{ss: ss, by: time.Now().Add(ss.ln.ProxyProtocolTimeout)})
}

// Start implements engine.Task.
func (t *tcpIntake) Start(rn *engine.Runner, front *engine.TaskSock) {
	t.rn, t.front = rn, front
	rn.Schedule(t.by)
}

// Ready implements engine.Task.
func (t *tcpIntake) Ready(*engine.TaskSock) {
	if t.over {
		return
	}
	if hdr, used, err, done := readHeaderOn(keepOf(t.rn), t.front, &t.in, &t.inN); done {
		t.judged(hdr, used, err)
	}
}

// Due implements engine.Task: proxy_protocol_timeout ran out.
func (t *tcpIntake) Due(now time.Time) {
	if !t.over && !now.Before(t.by) {
		t.judged(nil, 0, errSilent)
	}
}

// Begun implements engine.Task: the intake goes on (bounded by its
// timeout); the relay or the goroutine after it sees draining.
func (t *tcpIntake) Begun() {}

// Drain implements engine.Task: shutdown ran out of time; a header not
// yet whole is cut (outcome drained).
func (t *tcpIntake) Drain(time.Time) {
	if !t.over {
		t.judged(nil, 0, errIntakeDrained)
	}
}

// Crashed implements engine.Task: the loop reset the client's socket.
func (t *tcpIntake) Crashed(p any) {
	t.ss.rec.Outcome(engine.OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
	t.done()
	go t.ss.end()
}

// tcpIntakeHook, when set (tests), is called as a loop judges a tcp
// session's PROXY header.
var tcpIntakeHook func()

// judged takes what reading the header gave: a refusal (an RST, as
// Refuse), or the session's relay.
func (t *tcpIntake) judged(hdr *proxyproto.Header, used int, err error) {
	if tcpIntakeHook != nil {
		tcpIntakeHook()
	}
	ss := t.ss
	in, err := ss.judgeIntake(hdr, err, t.in[:t.inN])
	if err != nil {
		ss.rec.Outcome(intakeOutcome(err), err)
		t.rn.End(ss.eng, policy.Front, t.front, engine.Ending{Cut: true, Why: policy.ReasonRefused}, 0, func() { go ss.end() })
		t.done()
		return
	}
	ss.rec.Intake(in.version, in.client)
	up := t.in[used:t.inN] // copied by Relay, or below
	if sharedPool(ss.bk.cfg) && ss.bk.cfg.SendProxyProtocol == config.SendOff {
		if c := ss.readyBackend(t.rn.Loop(), nil); c != nil {
			back, err := t.rn.Watch(c.Bare.FD, c.Bare.Home)
			if err == nil {
				c.Detach() // the socket is the loop's, as handOver leaves it
				ss.back = c
				t.rn.Relay(ss.eng, t.front, back, engine.Pending{Up: up}, func() { go ss.end() })
				t.done()
				return
			}
			ss.sv.pool.Discard(c)
		}
	}
	// A goroutine dials, and relays on the loops from there (handOver).
	fd := t.front.FD()
	uerr := t.rn.Unwatch(t.front)
	up = append([]byte(nil), up...)
	t.done()
	ss.bare = fd
	if uerr != nil {
		ss.refuse(engine.OutcomeError, fmt.Errorf("tcp session from the loop to a goroutine: %w", uerr))
		go ss.end()
		return
	}
	go ss.runAfterIntake(in, up)
}

// done ends the task: its buffer goes back, the loop forgets it.
func (t *tcpIntake) done() {
	t.over = true
	t.front = nil
	if t.in != nil {
		keepOf(t.rn).putBuf(t.in)
		t.in, t.inN = nil, 0
	}
	t.rn.Schedule(time.Time{})
	t.rn.Done()
}
