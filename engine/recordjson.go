package engine

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the record's fields as MarshalLogObject renders them
// through zap's JSON encoder, byte for byte: the keys in the same order,
// strings escaped as zap escapes them, without the leading brace. It
// skips the encoder's call per field and the addresses' strings, which
// made up most of what a record cost to a file (TestAppendJSONMatchesZap
// holds the two renderings equal).
func (t *Teardown) AppendJSON(b []byte) []byte {
	b = strconv.AppendUint(append(b, `"id":`...), t.ID, 10)
	b = appendStr(b, `,"listener":`, t.Listener)
	b = appendStr(b, `,"backend":`, t.Backend)
	b = appendAddr(b, `,"client":`, t.Client)
	b = appendAddr(b, `,"lb":`, t.LB)
	b = appendStr(b, `,"proxy_protocol":`, t.ProxyProtocol)
	b = t.Front.appendJSON(b, frontKeys)
	b = appendAddr(b, `,"front.original_dst":`, t.OriginalDst)
	b = t.Back.appendJSON(b, backKeys)
	b = appendMillis(b, `,"back.connect_ms":`, t.BackConnect)
	b = appendBool(b, `,"back.pooled":`, t.BackPooled)
	b = appendBool(b, `,"back.reused":`, t.BackReused)
	b = strconv.AppendInt(append(b, `,"back.requests":`...), int64(t.BackRequests), 10)
	b = appendStr(b, `,"back.server":`, t.BackServer)
	b = strconv.AppendInt(append(b, `,"back.tries":`...), int64(t.BackTries), 10)
	b = appendMillis(b, `,"duration_ms":`, t.Duration)
	b = appendStr(b, `,"outcome":`, string(t.Outcome))
	return appendStr(b, `,"error":`, t.errText())
}

func (l *LegRecord) appendJSON(b []byte, k *legKeys) []byte {
	j := k.json
	b = appendStr(b, j.firstFIN, string(l.FirstFIN))
	b = appendStr(b, j.close, string(l.Close))
	b = appendStr(b, j.timeWait, string(l.TimeWait))
	b = appendStr(b, j.wanted, l.Wanted)
	b = appendStr(b, j.target, l.Target.Word(l.leg))
	b = appendBool(b, j.asWanted, l.AsWanted)
	b = appendStr(b, j.reason, string(l.Reason))
	b = appendBool(b, j.cut, l.Cut)
	b = appendStr(b, j.autoReason, l.AutoReason)
	b = strconv.AppendInt(append(b, j.bytesIn...), l.BytesIn, 10)
	b = strconv.AppendInt(append(b, j.bytesOut...), l.BytesOut, 10)
	b = appendMillis(b, j.finIn, l.FINIn)
	b = appendMillis(b, j.finOut, l.FINOut)
	b = appendMillis(b, j.rstOut, l.RSTOut)
	b = appendAddr(b, j.local, l.Local)
	return appendAddr(b, j.peer, l.Peer)
}

// jsonKeys renders each key of k as it precedes its value in a JSON
// object: `,"front.close":`.
func jsonKeys(k legKeys) legKeys {
	q := func(s string) string { return `,"` + s + `":` }
	return legKeys{
		firstFIN: q(k.firstFIN), close: q(k.close), timeWait: q(k.timeWait), wanted: q(k.wanted),
		target: q(k.target), asWanted: q(k.asWanted), reason: q(k.reason), cut: q(k.cut),
		autoReason: q(k.autoReason), bytesIn: q(k.bytesIn), bytesOut: q(k.bytesOut),
		finIn: q(k.finIn), finOut: q(k.finOut), rstOut: q(k.rstOut), local: q(k.local), peer: q(k.peer),
	}
}

func appendBool(b []byte, key string, v bool) []byte {
	return strconv.AppendBool(append(b, key...), v)
}

// appendMillis renders millis(d) as zap renders that float, from the integer
// microseconds: below 2^43 µs (about 100 days) the shortest decimal that
// reads back as float64(µs)/1000 is µs/1000 itself, its fraction's
// trailing zeros dropped, since doubles there lie far closer together
// than 0.001. Longer durations take the float path.
func appendMillis(b []byte, key string, d time.Duration) []byte {
	b = append(b, key...)
	us := d.Microseconds()
	if d < 0 || us >= 1<<43 {
		return strconv.AppendFloat(b, millis(d), 'f', -1, 64) // as zap renders a finite float
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	return append(append(b, '.'), digits[:n]...)
}

func appendAddr(b []byte, key string, a netip.AddrPort) []byte {
	b = append(b, key...)
	if !a.IsValid() {
		return append(b, `""`...)
	}
	b = append(b, '"')
	n := len(b)
	b = a.AppendTo(b)
	for _, c := range b[n:] {
		if !plainByte(c) {
			return AppendJSONString(b[:n-1], a.String()) // an IPv6 zone that needs escaping: rare
		}
	}
	return append(b, '"')
}

func appendStr(b []byte, key, s string) []byte {
	return AppendJSONString(append(b, key...), s)
}

const hexDigits = "0123456789abcdef"

// plainByte reports a byte a JSON string holds as it is.
func plainByte(c byte) bool { return c >= 0x20 && c < utf8.RuneSelf && c != '\\' && c != '"' }

// AppendJSONString appends s as a JSON string escaped as zap's JSON
// encoder escapes it, as the record's strings are: backslash and quote
// escaped, \n \r \t by name, the other control bytes as \u00XX, an
// invalid UTF-8 byte as \ufffd, everything else as it is.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case plainByte(c):
				b = append(b, c)
			case c == '\\' || c == '"':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, `\n`...)
			case c == '\r':
				b = append(b, `\r`...)
			case c == '\t':
				b = append(b, `\t`...)
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
