package latency

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRecorder(t *testing.T) {
	bounds := []time.Duration{time.Millisecond, 10 * time.Millisecond}
	var r Recorder
	var wg sync.WaitGroup
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond, time.Second} {
		wg.Go(func() { r.Observe(bounds, d) })
	}
	wg.Wait()
	counts, n, sum := r.Snapshot(bounds)
	if diff := cmp.Diff([]uint64{2, 2, 1}, counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if n != 5 || sum != 1013*time.Millisecond {
		t.Errorf("n, sum = %d, %v; want 5, 1.013s", n, sum)
	}
	if diff := cmp.Diff([]uint64{2, 4}, Cumulative(counts)); diff != "" {
		t.Errorf("Cumulative (-want +got):\n%s", diff)
	}
}
