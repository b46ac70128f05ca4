package twwatch

import (
	"errors"
	"io/fs"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// fakeHost is a fabricated kernel: files by path, sockets, and what the
// last listing was asked for.
type fakeHost struct {
	files   map[string]string
	socks   []sockdiag.Socket
	sockErr error
	asked   *sockdiag.Filter
}

func (h *fakeHost) kernel() Kernel {
	return Kernel{
		ReadFile: func(name string) ([]byte, error) {
			s, ok := h.files[name]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
			}
			return []byte(s), nil
		},
		ListSockets: func(f *sockdiag.Filter, _ ...sockdiag.State) ([]sockdiag.Socket, error) {
			h.asked = f
			return h.socks, h.sockErr
		},
	}
}

func stockHost() *fakeHost {
	return &fakeHost{files: map[string]string{
		procnet.SockstatPath:     "sockets: used 9\nTCP: inuse 3 orphan 0 tw 1234 alloc 5 mem 2\n",
		procnet.MaxTWBucketsPath: "262144\n",
		procnet.NetstatPath:      "TcpExt: SyncookiesSent TCPTimeWaitOverflow\nTcpExt: 0 17\n",
		procnet.PortRangePath:    "40000\t40999\n",
		procnet.ReservedPath:     "40100-40199,50000\n",
	}}
}

func TestReadEveryFigure(t *testing.T) {
	h := stockHost()
	h.socks = []sockdiag.Socket{
		sock(sockdiag.TimeWait, "10.0.0.9:8080", "10.0.0.5:40000"),
		sock(sockdiag.TimeWait, "10.0.0.9:40001", "10.0.0.2:80"),
	}
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: ":8080"}},
		Backends:  []config.Backend{{Name: "app", Address: "10.0.0.2:80"}},
	}
	tg := BuildTargets(cfg, nil, zaptest.NewLogger(t))
	s := h.kernel().Read(tg)
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	want := map[string]Figure{
		"host": have(1234), "max_tw_buckets": have(262144), "overflow": have(17),
		"usable_ports": have(1000 - 100), "front": have(1), "back": have(1),
	}
	got := map[string]Figure{
		"host": s.Host, "max_tw_buckets": s.MaxTWBuckets, "overflow": s.Overflow,
		"usable_ports": s.UsablePorts, "front": s.Front, "back": s.Back,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}
	if h.asked == nil || len(h.asked.LocalPorts) != 1 || len(h.asked.Peers) != 1 {
		t.Errorf("sockets asked for with filter %+v, want the one port and the one backend", h.asked)
	}
}

// What cannot be read is named, figure by figure; the rest is still read.
func TestReadPartly(t *testing.T) {
	h := stockHost()
	delete(h.files, procnet.NetstatPath)
	delete(h.files, procnet.ReservedPath) // usable ports: the whole range
	h.files[procnet.MaxTWBucketsPath] = "lots\n"
	h.sockErr = errors.New("permission denied")
	cfg := &config.Config{Backends: []config.Backend{{Name: "app", Address: "10.0.0.2:80"}}}
	s := h.kernel().Read(BuildTargets(cfg, nil, zaptest.NewLogger(t)))
	if !s.Host.OK || s.UsablePorts != have(1000) {
		t.Errorf("host %+v usable ports %+v, want read (the whole range)", s.Host, s.UsablePorts)
	}
	if s.Overflow.OK || !errors.Is(s.Overflow.Err, fs.ErrNotExist) {
		t.Errorf("overflow %+v, want not read: no such file", s.Overflow)
	}
	if s.MaxTWBuckets.OK || s.MaxTWBuckets.Err.Error() != `parse `+procnet.MaxTWBucketsPath+`: strconv.Atoi: parsing "lots": invalid syntax` {
		t.Errorf("max_tw_buckets %+v, want a parse error naming the file", s.MaxTWBuckets)
	}
	if s.Back.OK || s.Back.Err == nil || s.Front.OK || s.Front.Err != nil {
		t.Errorf("front %+v back %+v: want back not read (no listing), front not asked for", s.Front, s.Back)
	}
	if s.Err == nil {
		t.Error("Sample.Err nil, want the joined errors")
	}
}

// Without targets no socket is listed: sampling a host costs its /proc
// files only.
func TestReadWithoutTargetsListsNothing(t *testing.T) {
	h := stockHost()
	h.sockErr = errors.New("must not be called")
	s := h.kernel().Read(BuildTargets(&config.Config{}, nil, zaptest.NewLogger(t)))
	if s.Err != nil || s.Front.OK || s.Back.OK {
		t.Errorf("err %v front %+v back %+v", s.Err, s.Front, s.Back)
	}
}
