package proxy

import "testing"

// The trimmer returns memory once per drained peak of at least trimFloor,
// at a quarter of it, and once more when the last session ends; never for
// small peaks.
func TestTrimmerTrimsOncePerDrainedPeak(t *testing.T) {
	var tr trimmer
	for range 100 {
		tr.started()
	}
	for range 100 {
		tr.ended()
	}
	if p := tr.peak.Load(); p != 100 {
		t.Fatalf("a peak of 100 was trimmed (peak now %d): below trimFloor nothing is", p)
	}
	for range 4000 - 100 {
		tr.started()
	}
	tr.started() // live 3,901; the peak stays the most seen
	if p := tr.peak.Load(); p != 3901 {
		t.Fatalf("peak %d, want 3901", p)
	}
	for range 3901 - 976 {
		tr.ended()
	}
	if p := tr.peak.Load(); p != 3901 {
		t.Fatalf("trimmed at %d live of a 3,901 peak (peak now %d): want at a quarter (975), not before", tr.live.Load(), p)
	}
	tr.ended() // 975 live: a quarter
	if p := tr.peak.Load(); p != 975 {
		t.Errorf("after the drain the peak is %d, want 975 (reset by the trim)", p)
	}
	for tr.live.Load() > 1 {
		tr.ended()
	}
	if p, h := tr.peak.Load(), tr.high.Load(); p != 975 || h != 3901 {
		t.Errorf("a second trim before the last session ended: peak %d high %d", p, h)
	}
	tr.ended() // none live after a high of 3,901: the last trim
	if h := tr.high.Load(); h != 0 {
		t.Errorf("high %d after every session ended, want 0 (reset by the last trim)", h)
	}
}
