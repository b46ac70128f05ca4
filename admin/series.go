package admin

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// labeled is a Prometheus metric vector: a counter, gauge or histogram
// vector, whose children are M.
type labeled[M any] interface {
	prometheus.Collector
	WithLabelValues(...string) M
}

// vec is a metric vector that keeps its children by label values. A
// session's end feeds about fifteen series; the vector's own lookup
// checks each label value for UTF-8, hashes them and compares them under
// its lock, where a vec looks the values up in a map that readers share
// without a lock (copied on the rare write: relay loops on other cores
// never write to a shared lock word). Label values come from the
// configuration and from the record's enumerations, so the map stays
// small. Nothing deletes a child here, so a kept one never goes stale.
type vec[M any] struct {
	labeled[M]
	mu   sync.Mutex // serialises add
	kids atomic.Pointer[map[[3]string]M]
}

func newVec[M any](v labeled[M]) *vec[M] {
	x := &vec[M]{labeled: v}
	x.kids.Store(&map[[3]string]M{})
	return x
}

// at, at2 and at3 return the child of one, two or three label values.
func (v *vec[M]) at(a string) M        { return v.get([3]string{a}, 1) }
func (v *vec[M]) at2(a, b string) M    { return v.get([3]string{a, b}, 2) }
func (v *vec[M]) at3(a, b, c string) M { return v.get([3]string{a, b, c}, 3) }

func (v *vec[M]) get(k [3]string, n int) M {
	if m, ok := (*v.kids.Load())[k]; ok {
		return m
	}
	return v.add(k, n)
}

// add makes the child of k's first n values, once.
func (v *vec[M]) add(k [3]string, n int) M {
	v.mu.Lock()
	defer v.mu.Unlock()
	kids := *v.kids.Load()
	if m, ok := kids[k]; ok {
		return m
	}
	m := v.WithLabelValues(k[:n]...)
	next := maps.Clone(kids)
	next[k] = m
	v.kids.Store(&next)
	return m
}
