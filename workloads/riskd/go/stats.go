package main

// The JSON summary printed on SIGTERM/SIGINT.

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
)

// Summary is printed as one JSON line at shutdown. Field order is the wire order.
// A figure that cannot be measured is left out (nil), never reported as 0.
type Summary struct {
	Lang           string   `json:"lang"`
	Requests       uint64   `json:"requests"`
	Malformed      uint64   `json:"malformed"`
	RSSHWMBytes    *uint64  `json:"rss_hwm_bytes,omitempty"`
	GCCycles       *uint64  `json:"gc_cycles,omitempty"`
	GCPauseCount   *uint64  `json:"gc_pause_count,omitempty"`
	GCPauseTotalUS *float64 `json:"gc_pause_total_us,omitempty"`
	GCPauseP50US   *float64 `json:"gc_pause_p50_us,omitempty"`
	GCPauseP99US   *float64 `json:"gc_pause_p99_us,omitempty"`
	GCPauseMaxUS   *float64 `json:"gc_pause_max_us,omitempty"`
	HeapLiveBytes  *uint64  `json:"heap_live_bytes,omitempty"`
	HeapGoalBytes  *uint64  `json:"heap_goal_bytes,omitempty"`
	GOMAXPROCS     int      `json:"gomaxprocs"`
	GoVersion      string   `json:"go_version"`
}

const (
	mGCCycles  = "/gc/cycles/total:gc-cycles"
	mPauses    = "/sched/pauses/total/gc:seconds"
	mPausesOld = "/gc/pauses:seconds" // deprecated alias, for older runtimes
	mHeapLive  = "/gc/heap/live:bytes"
	mHeapGoal  = "/gc/heap/goal:bytes"
)

func ptr[T any](v T) *T { return &v }

// collectSummary reads the counters, /proc/self/status and runtime/metrics.
func collectSummary(requests, malformed uint64) Summary {
	sum := Summary{
		Lang:       "go",
		Requests:   requests,
		Malformed:  malformed,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
	}
	if hwm, ok := vmHWM(); ok {
		sum.RSSHWMBytes = &hwm
	}

	samples := []metrics.Sample{
		{Name: mGCCycles}, {Name: mPauses}, {Name: mPausesOld},
		{Name: mHeapLive}, {Name: mHeapGoal},
	}
	metrics.Read(samples)
	val := make(map[string]metrics.Value, len(samples))
	for _, s := range samples {
		val[s.Name] = s.Value // KindBad when this runtime does not know the name
	}

	var cycles uint64
	if v := val[mGCCycles]; v.Kind() == metrics.KindUint64 {
		cycles = v.Uint64()
		sum.GCCycles = &cycles
	}
	pauses := val[mPauses]
	if pauses.Kind() != metrics.KindFloat64Histogram {
		pauses = val[mPausesOld]
	}
	if pauses.Kind() == metrics.KindFloat64Histogram {
		p := summarizePauses(pauses.Float64Histogram())
		sum.GCPauseCount = &p.count
		sum.GCPauseTotalUS = &p.totalUS
		// With no pause at all, the percentiles and the maximum are 0 (no
		// time was spent paused), which is a measurement, not a placeholder.
		sum.GCPauseP50US, sum.GCPauseP99US, sum.GCPauseMaxUS = &p.p50US, &p.p99US, &p.maxUS
	}
	// The live heap is measured by a GC cycle; before the first there is none.
	if v := val[mHeapLive]; v.Kind() == metrics.KindUint64 && cycles > 0 {
		sum.HeapLiveBytes = ptr(v.Uint64())
	}
	if v := val[mHeapGoal]; v.Kind() == metrics.KindUint64 {
		sum.HeapGoalBytes = ptr(v.Uint64())
	}
	return sum
}

type pauseStats struct {
	count                        uint64
	totalUS, p50US, p99US, maxUS float64
}

// summarizePauses reduces a pause histogram (in seconds) to microsecond figures.
//
// The runtime keeps only bucket counts, so every figure is an estimate:
//   - the total counts each pause at its bucket's midpoint (or at its finite
//     bound when the other bound is infinite);
//   - p50 and p99 are the upper bound of the bucket holding that rank
//     (nearest-rank method), and the maximum is the upper bound of the highest
//     non-empty bucket; for the last bucket, whose upper bound is +Inf, its lower
//     bound is used instead.
//
// Go's time histograms have 4 sub-buckets per power of two (64 ns wide below
// 512 ns), so a bucket is up to 25% wide and these figures are that coarse.
func summarizePauses(h *metrics.Float64Histogram) pauseStats {
	var st pauseStats
	for _, c := range h.Counts {
		st.count += c
	}
	if st.count == 0 {
		return st
	}
	upper := func(i int) float64 {
		if hi := h.Buckets[i+1]; !math.IsInf(hi, 1) {
			return hi
		}
		return math.Max(h.Buckets[i], 0)
	}
	mid := func(i int) float64 {
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		switch {
		case math.IsInf(lo, -1):
			return math.Max(hi, 0)
		case math.IsInf(hi, 1):
			return lo
		}
		return (lo + hi) / 2
	}
	// nearest rank: the smallest value with at least ceil(p*count) pauses at or below it
	rank := func(p float64) uint64 { return max(1, uint64(math.Ceil(p*float64(st.count)))) }
	r50, r99 := rank(0.50), rank(0.99)
	var seen uint64
	var total float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if seen < r50 && seen+c >= r50 {
			st.p50US = toUS(upper(i))
		}
		if seen < r99 && seen+c >= r99 {
			st.p99US = toUS(upper(i))
		}
		seen += c
		total += float64(c) * mid(i)
		st.maxUS = toUS(upper(i))
	}
	st.totalUS = toUS(total)
	return st
}

// toUS converts seconds to microseconds, rounded to the nanosecond.
func toUS(sec float64) float64 {
	return math.Round(sec*1e9) / 1e3
}

// vmHWM returns the peak resident set size from /proc/self/status, in bytes.
func vmHWM() (uint64, bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest) // "123456", "kB"
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseUint(string(fields[0]), 10, 64)
		if err != nil {
			return 0, false
		}
		return kb * 1024, true
	}
	return 0, false
}
