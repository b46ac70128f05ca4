package proxy

import (
	"net/netip"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/policy"
)

// Outcome says how a session ended, in one word.
type Outcome string

const (
	OutcomeOK             Outcome = "ok"               // both legs ended in order
	OutcomeDialFailed     Outcome = "dial_failed"      // the backend refused, timed out or is unreachable
	OutcomePortsExhausted Outcome = "ports_exhausted"  // no local port toward the backend (EADDRNOTAVAIL): ours, not the backend's
	OutcomeTimeout        Outcome = "timeout"          // idle_timeout with no bytes moving, or a stalled write
	OutcomeClientReset    Outcome = "client_reset"     // the client sent an RST
	OutcomeBackendReset   Outcome = "backend_reset"    // the backend sent an RST
	OutcomeBadProxyHeader Outcome = "bad_proxy_header" // malformed, slow, missing (required) or untrusted PROXY header
	OutcomeDrained        Outcome = "drained"          // cut by shutdown after shutdown_timeout
	OutcomeLateData       Outcome = "late_data"        // a peer sent bytes after the other leg had ended
	OutcomeError          Outcome = "error"            // another socket error; see error
	OutcomeInternalError  Outcome = "internal_error"   // a bug: a panic in the session, recovered
	OutcomeBadRequest     Outcome = "bad_request"      // http1: a request the proxy refused with 400 (ambiguous framing, malformed)
	OutcomeBadResponse    Outcome = "bad_response"     // http1: a malformed response from the backend
	OutcomePoolExhausted  Outcome = "pool_exhausted"   // pool.max_conns reached for connect_timeout
	OutcomeOverLimit      Outcome = "over_limit"       // the listener's max_connections reached: reset at once
	OutcomeFamilyMismatch Outcome = "family_mismatch"  // source = "client": the client's address family differs from the backend's
)

// LegRecord is what happened on one leg. Times are since accept; a negative
// duration means the event did not happen.
type LegRecord struct {
	FirstFIN   policy.Side  // whose FIN came first: client|backend|proxy|none
	Close      policy.Close // how the proxy's end closed: fin|reset|peer_reset|error
	TimeWait   policy.Side  // where TIME-WAIT landed: client|backend|proxy|none
	Wanted     string       // the configured target, as the user spells it
	Fallback   string       // why the table's action was not taken, if so
	AutoReason string       // with time_wait = "auto": why it chose what it chose
	BytesIn    int64        // bytes received from the peer
	BytesOut   int64        // bytes sent to the peer
	FINIn      time.Duration
	FINOut     time.Duration
	RSTOut     time.Duration
	Local      netip.AddrPort // the proxy's address on this leg
	Peer       netip.AddrPort // the peer's address on this leg
}

// Teardown is the record of one session: the struct is the schema (the
// README documents each key). The relay returns it; the caller logs it once.
type Teardown struct {
	ID            uint64
	Listener      string
	Backend       string
	Client        netip.AddrPort // the real client: from the PROXY header when present
	LB            netip.AddrPort // the socket's peer, when it differs from Client
	ProxyProtocol string         // v1|v2|none
	OriginalDst   netip.AddrPort // intercept: the address the client dialed; unset otherwise
	Front         LegRecord
	Back          LegRecord
	BackConnect   time.Duration // -1: no dial attempted
	BackPooled    bool          // a backend connection came ready from the pool
	BackReused    bool          // a backend connection had served an earlier request
	BackRequests  int           // http1: requests sent to the backend; tcp: 0
	BackServer    string        // the server used (or last tried), as configured; empty: none tried
	BackTries     int           // servers tried for a connection: 1 unless a dial failed and the next was tried
	Duration      time.Duration
	Outcome       Outcome
	Err           error
}

func newLegRecord(leg policy.Leg, target policy.Target) LegRecord {
	return LegRecord{
		FirstFIN: policy.SideNone, TimeWait: policy.SideNone, Close: policy.CloseNone,
		Wanted: target.Word(leg), FINIn: -1, FINOut: -1, RSTOut: -1,
	}
}

// MarshalLogObject renders the record flat under fixed keys, always the same
// set.
func (t *Teardown) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddUint64("id", t.ID)
	enc.AddString("listener", t.Listener)
	enc.AddString("backend", t.Backend)
	enc.AddString("client", addrString(t.Client))
	enc.AddString("lb", addrString(t.LB))
	enc.AddString("proxy_protocol", t.ProxyProtocol)
	t.Front.encode(enc, "front.")
	enc.AddString("front.original_dst", addrString(t.OriginalDst))
	t.Back.encode(enc, "back.")
	enc.AddFloat64("back.connect_ms", millis(t.BackConnect))
	enc.AddBool("back.pooled", t.BackPooled)
	enc.AddBool("back.reused", t.BackReused)
	enc.AddInt("back.requests", t.BackRequests)
	enc.AddString("back.server", t.BackServer)
	enc.AddInt("back.tries", t.BackTries)
	enc.AddFloat64("duration_ms", millis(t.Duration))
	enc.AddString("outcome", string(t.Outcome))
	errText := ""
	if t.Err != nil {
		errText = t.Err.Error()
	}
	enc.AddString("error", errText)
	return nil
}

func (l *LegRecord) encode(enc zapcore.ObjectEncoder, p string) {
	enc.AddString(p+"first_fin", string(l.FirstFIN))
	enc.AddString(p+"close", string(l.Close))
	enc.AddString(p+"time_wait", string(l.TimeWait))
	enc.AddString(p+"wanted", l.Wanted)
	enc.AddString(p+"fallback", l.Fallback)
	enc.AddString(p+"auto_reason", l.AutoReason)
	enc.AddInt64(p+"bytes_in", l.BytesIn)
	enc.AddInt64(p+"bytes_out", l.BytesOut)
	enc.AddFloat64(p+"fin_in_ms", millis(l.FINIn))
	enc.AddFloat64(p+"fin_out_ms", millis(l.FINOut))
	enc.AddFloat64(p+"rst_out_ms", millis(l.RSTOut))
	enc.AddString(p+"local", addrString(l.Local))
	enc.AddString(p+"peer", addrString(l.Peer))
}

// Fields returns the record as zap fields for one log line.
func (t *Teardown) Fields() []zap.Field {
	return []zap.Field{zap.Inline(t)}
}

// millis renders a duration as milliseconds with microsecond precision; a
// negative duration (the event did not happen) is -1.
func millis(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return float64(d.Microseconds()) / 1000
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
