package admin

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// A vec's children are the vector's own: what they count shows in what
// the vector collects, callers at once all get the same child, and each
// label set is made once.
func TestVecKeepsTheVectorsChildren(t *testing.T) {
	v := newVec[prometheus.Counter](prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_total", Help: "t"}, []string{"a", "b"}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				v.at2("x", "y").Inc()
			}
		})
	}
	wg.Wait()
	v.at2("x", "z").Add(2)
	if n := len(*v.kids.Load()); n != 2 {
		t.Errorf("the vec keeps %d children, want 2", n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(v)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %d families, %v", len(mfs), err)
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetValue())
		}
		got[strings.Join(labels, ",")] = m.GetCounter().GetValue()
	}
	if len(got) != 2 || got["x,y"] != 800 || got["x,z"] != 2 {
		t.Errorf("the vector collects %v, want x,y 800 and x,z 2", got)
	}
}

// The series a configuration names are there at zero from the first
// scrape: a listener's over_limit rejections and each leg's cuts among
// them, so that rate() and increase() read 0, not no data; so are the
// series whose labels are the record's enumerations (every outcome of a
// listener's sessions, every leg's first FIN, TIME-WAIT, close and
// reason, every PROXY header version): they appeared at their first
// session, at 1, and an increase() alert missed the first failure after a
// start.
func TestInitLabelsShowsRejectionsAndCutsAtZero(t *testing.T) {
	m := newMetrics()
	m.initLabels(&config.Config{Listeners: []config.Listener{{Name: "web", Backend: "app"}}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
	}
	for name, want := range map[string]int{"closeproxy_connections_rejected_total": 1, "closeproxy_cut_total": 2,
		"closeproxy_sessions_total": len(engine.Outcomes), "closeproxy_close_reasons_total": 2 * len(policy.Reasons),
		"closeproxy_first_fin_total": 10, "closeproxy_time_wait_placed_total": 10, "closeproxy_closes_total": 9,
		"closeproxy_proxy_headers_total": 3} {
		if series[name] != want {
			t.Errorf("%s: %d series before any event, want %d at zero", name, series[name], want)
		}
	}
}
