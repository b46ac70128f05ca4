package proxy

import (
	"github.com/closeproxy/closeproxy/balance"
	"github.com/closeproxy/closeproxy/pool"
)

// PoolStats returns each current backend's pool figures, by backend name.
// A backend a reload replaced still counts under its name: its pools'
// connections while its last sessions run, and its counters for good, so
// that a counter never goes back while the process lives.
func (s *Server) PoolStats() map[string]pool.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replaced.fold()
	out := make(map[string]pool.Stats, len(s.backends))
	for name, b := range s.backends {
		sum := b.stats()
		s.replaced.addPools(name, &sum)
		out[name] = sum
	}
	return out
}

// replacedPools are the backends a reload replaced, by name: those still
// retiring, whose pools may still count, and the final counters of those
// whose pools are done. The server's lock guards it.
type replacedPools struct {
	retiring  map[string][]*backend
	done      map[string]pool.Stats                   // counters only: the gauges of stopped pools are 0
	ejections map[string]map[string]balance.Ejections // by backend, then server address
}

// add keeps b, replaced under name.
func (r *replacedPools) add(name string, b *backend) {
	if r.retiring == nil {
		r.retiring, r.done = map[string][]*backend{}, map[string]pool.Stats{}
		r.ejections = map[string]map[string]balance.Ejections{}
	}
	r.retiring[name] = append(r.retiring[name], b)
}

// fold turns the replaced backends whose pools are done into final
// counters, so that a server reloaded every minute for a year keeps no
// pool of each.
func (r *replacedPools) fold() {
	for name := range r.retiring {
		r.foldName(name)
	}
}

func (r *replacedPools) foldName(name string) {
	keep := r.retiring[name][:0]
	done, ej := r.done[name], r.ejections[name]
	if ej == nil {
		ej = map[string]balance.Ejections{}
	}
	for _, b := range r.retiring[name] {
		st := b.stats()
		if !b.retired.Load() || st.Idle+st.InUse+st.Dialing+st.Waiting > 0 {
			keep = append(keep, b)
			continue
		}
		st.Failing = 0
		addStats(&done, st)
		for _, sv := range b.servers {
			ej[sv.addr] = addEjections(ej[sv.addr], sv.health.Ejections())
		}
	}
	r.retiring[name], r.done[name], r.ejections[name] = keep, done, ej
}

// addPools adds the figures of the backends replaced under name to sum.
func (r *replacedPools) addPools(name string, sum *pool.Stats) {
	for _, b := range r.retiring[name] {
		st := b.stats()
		st.Failing = 0 // the backend's state now is the current pools'
		addStats(sum, st)
	}
	addStats(sum, r.done[name])
}

// ejectionsOf returns the ejections of server addr of the backends
// replaced under name.
func (r *replacedPools) ejectionsOf(name, addr string) balance.Ejections {
	sum := r.ejections[name][addr]
	for _, b := range r.retiring[name] {
		for _, sv := range b.servers {
			if sv.addr == addr {
				sum = addEjections(sum, sv.health.Ejections())
			}
		}
	}
	return sum
}

func addEjections(a, b balance.Ejections) balance.Ejections {
	return balance.Ejections{Check: a.Check + b.Check, Passive: a.Passive + b.Passive}
}
