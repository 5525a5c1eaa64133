package sts

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ksmscale/ksm-scale-operator/test/coverage"
)

// Interval is a span of time (shared with test/coverage).
type Interval = coverage.Interval

// Ordinal returns i if pod is named <sts>-<i>, else -1.
func Ordinal(sts, pod string) int {
	rest, ok := strings.CutPrefix(pod, sts+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 {
		return -1
	}
	return i
}

// Tracker turns a sequence of pod states of one StatefulSet into per-shard
// uncovered intervals. Shard i is covered while a pod named <sts>-<i> is
// Serving. Only ordinals 0..replicas-1 count, where replicas is set by the
// caller (SetReplicas), because scaling down removes shards and scaling up
// adds them before their pods exist.
//
// It is pure (the caller supplies the time) and safe for concurrent use.
// Before the first Observe the pod state is unknown and nothing is recorded.
// Zero-length intervals are dropped and touching ones merged.
type Tracker struct {
	mu       sync.Mutex
	name     string
	started  bool
	from     time.Time // start of the window: first Observe or last Reset
	replicas int
	covered  map[int]bool // ordinal -> Serving pod exists, from the last Observe

	open      map[int]time.Time // counted, uncovered shard -> since
	intervals map[int][]Interval
	counted   map[int]bool // ordinals counted at some point of the window
	anyOpen   bool
	anySince  time.Time
	union     []Interval
}

// NewTracker returns a tracker for StatefulSet name counting replicas shards.
func NewTracker(name string, replicas int) *Tracker {
	return &Tracker{
		name:      name,
		replicas:  replicas,
		covered:   map[int]bool{},
		open:      map[int]time.Time{},
		intervals: map[int][]Interval{},
		counted:   map[int]bool{},
	}
}

// Observe records the full set of the StatefulSet's pods at time t. Pods not
// named <sts>-<ordinal> are ignored.
func (tr *Tracker) Observe(t time.Time, pods []*corev1.Pod) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	covered := map[int]bool{}
	for _, p := range pods {
		if i := Ordinal(tr.name, p.Name); i >= 0 && coverage.Serving(p) {
			covered[i] = true
		}
	}
	tr.covered = covered
	if !tr.started {
		tr.started, tr.from = true, t
	}
	tr.update(t)
}

// SetReplicas changes the number of counted shards at time t: shards at or
// above n stop counting (their open interval ends at t), new shards below n
// start counting (uncovered from t unless already Ready).
func (tr *Tracker) SetReplicas(t time.Time, n int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.replicas = n
	tr.update(t)
}

// Replicas is the number of counted shards.
func (tr *Tracker) Replicas() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.replicas
}

// update brings the intervals in line with covered and replicas at time t.
func (tr *Tracker) update(t time.Time) {
	if !tr.started {
		return
	}
	for i, since := range tr.open {
		if i >= tr.replicas || tr.covered[i] {
			tr.intervals[i] = appendInterval(tr.intervals[i], since, t)
			delete(tr.open, i)
		}
	}
	anyUncovered := false
	for i := 0; i < tr.replicas; i++ {
		tr.counted[i] = true
		if tr.covered[i] {
			continue
		}
		anyUncovered = true
		if _, ok := tr.open[i]; !ok {
			tr.open[i] = t
		}
	}
	if anyUncovered != tr.anyOpen {
		if tr.anyOpen {
			tr.union = appendInterval(tr.union, tr.anySince, t)
		} else {
			tr.anySince = t
		}
		tr.anyOpen = anyUncovered
	}
}

// appendInterval appends [from, to], dropping it if empty and merging it
// into the last interval if they touch (two changes at the same instant).
func appendInterval(is []Interval, from, to time.Time) []Interval {
	if !to.After(from) {
		return is
	}
	if n := len(is); n > 0 && !is[n-1].To.Before(from) {
		is[n-1].To = to
		return is
	}
	return append(is, Interval{From: from, To: to})
}

// Reset forgets the intervals so far, keeping the current state: shards
// uncovered now count as uncovered from t. Call it before the change to be
// measured.
func (tr *Tracker) Reset(t time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.intervals, tr.union, tr.counted = map[int][]Interval{}, nil, map[int]bool{}
	if !tr.started {
		return
	}
	tr.from = t
	for i := range tr.open {
		tr.open[i] = t
	}
	for i := 0; i < tr.replicas; i++ {
		tr.counted[i] = true
	}
	if tr.anyOpen {
		tr.anySince = t
	}
}

// Report summarises the window from the first Observe or last Reset to To.
type Report struct {
	From, To time.Time
	// Shards is the number of counted shards at To.
	Shards int
	// PerShard is the uncovered time of every ordinal counted at some point
	// of the window (0 for shards that never were uncovered).
	PerShard map[int]time.Duration
	// ShardIntervals are the uncovered intervals per ordinal.
	ShardIntervals map[int][]Interval
	// Total is the sum of PerShard: shard-seconds without a Ready pod.
	Total time.Duration
	// MaxShard is the largest PerShard value.
	MaxShard time.Duration
	// Any is the time during which some counted shard was uncovered (the
	// union over shards), made of AnyIntervals.
	Any          time.Duration
	AnyIntervals []Interval
	// Count is the number of per-shard uncovered intervals.
	Count int
	// UncoveredNow lists the counted shards uncovered at To, ascending.
	UncoveredNow []int
}

func (r Report) String() string {
	return fmt.Sprintf("%d shards: uncovered %s shard-time in %d intervals (max per shard %s), some shard uncovered for %s in %d intervals, uncovered now %v",
		r.Shards, r.Total.Round(time.Millisecond), r.Count, r.MaxShard.Round(time.Millisecond),
		r.Any.Round(time.Millisecond), len(r.AnyIntervals), r.UncoveredNow)
}

// Report returns the window up to t, closing open intervals at t.
func (tr *Tracker) Report(t time.Time) Report {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	r := Report{
		From:           tr.from,
		To:             t,
		Shards:         tr.replicas,
		PerShard:       map[int]time.Duration{},
		ShardIntervals: map[int][]Interval{},
		AnyIntervals:   slices.Clone(tr.union),
	}
	for i := range tr.counted {
		is := slices.Clone(tr.intervals[i])
		if since, ok := tr.open[i]; ok {
			is = appendInterval(is, since, t)
			r.UncoveredNow = append(r.UncoveredNow, i)
		}
		var d time.Duration
		for _, in := range is {
			d += in.Duration()
		}
		r.PerShard[i] = d
		if len(is) > 0 {
			r.ShardIntervals[i] = is
		}
		r.Total += d
		r.MaxShard = max(r.MaxShard, d)
		r.Count += len(is)
	}
	slices.Sort(r.UncoveredNow)
	if tr.anyOpen {
		r.AnyIntervals = appendInterval(r.AnyIntervals, tr.anySince, t)
	}
	for _, in := range r.AnyIntervals {
		r.Any += in.Duration()
	}
	return r
}
