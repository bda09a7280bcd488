// Package latency records durations in fixed buckets without locks: the one
// histogram recorder behind the Stats of the DHCP server, the requester and
// the responder. Each package keeps its own bounds and exported snapshot
// type; this package only counts.
package latency

import (
	"sync/atomic"
	"time"
)

// MaxBounds is the largest number of bucket bounds a [Recorder] supports.
const MaxBounds = 16

// Recorder counts observations per bucket. The zero value is ready to use and
// safe for concurrent use; the same bounds must be passed to every call.
type Recorder struct {
	counts [MaxBounds + 1]atomic.Uint64
	sum    atomic.Int64
}

// Observe records d in the first bucket whose bound is at least d, or in the
// last bucket (above every bound). bounds must be sorted and hold at most
// [MaxBounds] values.
func (r *Recorder) Observe(bounds []time.Duration, d time.Duration) {
	i := 0
	for i < len(bounds) && d > bounds[i] {
		i++
	}
	r.counts[i].Add(1)
	r.sum.Add(int64(d))
}

// Snapshot returns the counts per bucket, not cumulative: len(bounds)+1 of
// them, the last for observations above every bound; and the number and the
// total of all observations.
func (r *Recorder) Snapshot(bounds []time.Duration) (counts []uint64, n uint64, sum time.Duration) {
	counts = make([]uint64, len(bounds)+1)
	for i := range counts {
		counts[i] = r.counts[i].Load()
		n += counts[i]
	}
	return counts, n, time.Duration(r.sum.Load())
}

// Cumulative turns per-bucket counts (as [Recorder.Snapshot] returns them)
// into the cumulative counts of Prometheus histograms, one per bound: the
// last bucket is left out, since it is the total.
func Cumulative(counts []uint64) []uint64 {
	if len(counts) == 0 {
		return nil
	}
	out := make([]uint64, len(counts)-1)
	var n uint64
	for i := range out {
		n += counts[i]
		out[i] = n
	}
	return out
}
