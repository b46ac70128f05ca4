package proxy

import "github.com/closeproxy/closeproxy/pool"

// PoolStats returns each current backend's pool figures, by backend name.
// A backend a reload replaced still counts under its name: its pools'
// connections while its last sessions run, and its counters for good, so
// that a counter never goes back while the process lives.
func (s *Server) PoolStats() map[string]pool.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]pool.Stats, len(s.backends))
	for name, b := range s.backends {
		sum := b.stats()
		s.replaced.addTo(name, &sum)
		out[name] = sum
	}
	return out
}

// replacedPools are the backends a reload replaced, by name: those still
// retiring, whose pools may still count, and the final counters of those
// whose pools are done. The server's lock guards it.
type replacedPools struct {
	retiring map[string][]*backend
	done     map[string]pool.Stats // counters only: the gauges of stopped pools are 0
}

// add keeps b, replaced under name.
func (r *replacedPools) add(name string, b *backend) {
	if r.retiring == nil {
		r.retiring, r.done = map[string][]*backend{}, map[string]pool.Stats{}
	}
	r.retiring[name] = append(r.retiring[name], b)
}

// addTo adds the figures of the backends replaced under name to sum, and
// folds those whose pools are done into the final counters, so that a
// server reloaded every minute for a year keeps no pool of each.
func (r *replacedPools) addTo(name string, sum *pool.Stats) {
	keep := r.retiring[name][:0]
	done := r.done[name]
	for _, b := range r.retiring[name] {
		st := b.stats()
		st.Failing = 0 // the backend's state now is the current pools'
		if b.retired.Load() && st.Idle == 0 && st.InUse == 0 && st.Dialing == 0 && st.Waiting == 0 {
			addStats(&done, st)
			continue
		}
		keep = append(keep, b)
		addStats(sum, st)
	}
	if r.retiring != nil {
		r.retiring[name], r.done[name] = keep, done
	}
	addStats(sum, done)
}
