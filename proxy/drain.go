package proxy

// Drain stops accepting and asks live sessions to finish, without waiting
// for them and without ending the process: the listeners close (new
// connections are refused), Serving turns false, and http1 sessions close
// a keep-alive connection that is idle at once and answer the request in
// flight with Connection: close. tcp sessions run to their own end.
// Drained is closed once the last session has ended. Shutdown drains
// first. Drain may be called any number of times, before or after
// Shutdown; Reload is refused once it was.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
}

// drainLocked starts draining once.
func (s *Server) drainLocked() {
	if s.draining {
		return
	}
	s.draining = true
	s.beginDrain()
	for _, l := range s.listeners {
		s.closeLocked(l)
	}
	// No accept loop starts once draining is set (Serve and Reload look),
	// so the loops running now are the last to add sessions. Then no
	// new session needs a warm connection or a health check: the pools
	// retire, as a reload retires a replaced backend's (a drained proxy
	// may run on for long, and its warm connections would hold up the
	// backend's own graceful stop).
	go func() {
		s.accepts.Wait()
		s.mu.Lock()
		for _, b := range s.backends {
			s.retireLocked(b)
		}
		s.mu.Unlock()
		s.sessions.Wait()
		close(s.drained)
	}()
}

// Drained is closed when draining has begun and every session has ended.
func (s *Server) Drained() <-chan struct{} { return s.drained }

// Live returns the number of sessions not yet ended.
func (s *Server) Live() int64 { return s.live.Load() }
