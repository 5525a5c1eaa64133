package main

import (
	"context"
	"slices"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ksmscale/ksm-scale-operator/test/metricwatch"
)

// Change is one measured change (create, rollout, reshard) of one side, as
// the metrics saw it.
type Change struct {
	// Duration is from the change being applied to the side reporting it
	// done: Available and converged for the operator, all pods Ready and
	// rolled out for the StatefulSet.
	Duration Seconds `json:"duration"`
	// MetricsComplete is from the change to the moment since which no
	// scrape found an object missing (see completeSince), measured once a
	// scrape after Duration found nothing missing or exported twice;
	// Complete is false when none did within the wait (then it is the
	// wait).
	MetricsComplete Seconds `json:"metricsComplete"`
	Complete        bool    `json:"complete"`
	// MissingObjectSeconds, DuplicateObjectSeconds: test/metricwatch's sums
	// from the change to MetricsComplete.
	MissingObjectSeconds   float64 `json:"missingObjectSeconds"`
	DuplicateObjectSeconds float64 `json:"duplicateObjectSeconds"`
	// WorstMissing is the largest number of objects missing at one scrape,
	// WorstAt when (since the change).
	WorstMissing int     `json:"worstMissing"`
	WorstAt      Seconds `json:"worstAt"`
	// MissingPerSecond[i] is the number of objects missing i seconds after
	// the change (see perSecond).
	MissingPerSecond []int `json:"missingPerSecond"`
	// Prometheus is the verdict of a real Prometheus scraping the same
	// pods, at the sizes where it ran.
	Prometheus *PromCoverage `json:"prometheus,omitempty"`
}

// The changes every side goes through, in order, as keys of Changes.
const (
	changeCreate    = "create"
	changeRollout   = "rollout"
	changeReshardDn = "reshard-down"
	changeReshardUp = "reshard-up"
)

// metricsWait bounds the wait for complete metrics after a change is done.
const metricsWait = 5 * time.Minute

// meter measures one side's changes with a metricwatch.Watcher over the
// side's pods.
type meter struct {
	w     *metricwatch.Watcher
	start time.Time
	// judge, if set, adds Prometheus' verdict on the pods whose ksmscale
	// label is side.
	judge *judge
	side  string
}

// startMeter watches the serving pods selected by selector in namespace.
func startMeter(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, namespace, selector string,
	interval time.Duration, j *judge, side string) (*meter, error) {
	w, err := metricwatch.Start(ctx, metricwatch.Options{
		Config:   cfg,
		Targets:  metricwatch.PodTargets(cs, namespace, selector, 8080),
		Interval: interval,
	})
	if err != nil {
		return nil, err
	}
	return &meter{w: w, judge: j, side: side}, nil
}

func (m *meter) stop() { m.w.Stop() }

// begin starts the measurement of a change: call it just before the change.
func (m *meter) begin() {
	m.w.Reset()
	m.start = time.Now()
}

// finish waits, after the change was done at done, until a scrape finds
// nothing missing and nothing duplicated (at most metricsWait), and
// summarises the change.
func (m *meter) finish(ctx context.Context, done time.Time) (Change, metricwatch.Report, error) {
	c := Change{Duration: Seconds(done.Sub(m.start))}
	deadline := time.Now().Add(metricsWait)
	var r metricwatch.Report
	for {
		r = m.w.Report()
		l := r.Last
		if r.Ticks > 0 && l.At.After(done) && l.Missing == 0 && l.Duplicates == 0 && l.FailedTargets == 0 && l.Targets > 0 {
			c.Complete = true
			c.MetricsComplete = Seconds(completeSince(m.start, r.Series))
			break
		}
		if time.Now().After(deadline) {
			c.MetricsComplete = Seconds(time.Since(m.start))
			logf("metrics not complete %s after the change was done: %s", metricsWait, r)
			break
		}
		select {
		case <-ctx.Done():
			return c, r, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.MissingObjectSeconds, c.DuplicateObjectSeconds = r.MissingObjectSeconds, r.DuplicateObjectSeconds
	c.WorstMissing = r.Worst.Missing
	if r.Worst.Missing > 0 {
		c.WorstAt = Seconds(r.Worst.At.Sub(m.start))
	}
	c.MissingPerSecond = perSecond(m.start, r.Series)
	if m.judge != nil {
		p, err := m.judge.coverage(ctx, m.side, m.start, r.Until)
		if err != nil {
			logf("Prometheus verdict: %v", err)
		} else {
			c.Prometheus = &p
		}
	}
	return c, r, nil
}

// completeSince is how long after start the metrics became complete for
// good: the end of the first scrape after the last one that found an
// object missing; 0 if none did. Duplicates do not make metrics
// incomplete (they are counted apart). The series must end with a
// complete scrape.
func completeSince(start time.Time, series []metricwatch.Instant) time.Duration {
	for i := len(series) - 1; i >= 0; i-- {
		if series[i].Missing > 0 || series[i].FailedTargets > 0 {
			if i+1 < len(series) {
				return max(series[i+1].At.Sub(start), 0)
			}
			break
		}
	}
	return 0
}

// perSecond samples the missing counts of series at whole seconds after
// since: element i is the Missing of the scrape that covers the instant
// since+i s, the first one that ended at or after it (a scrape accounts for
// the span from the previous one to its end, as the object-seconds do).
// The series ends with the last scrape's count at the first whole second
// after it (the state the measurement ended in, held), so that a plot does
// not end in the middle of a gap that the last scrape saw closed.
func perSecond(since time.Time, series []metricwatch.Instant) []int {
	if len(series) == 0 {
		return nil
	}
	last := series[len(series)-1].At
	out := []int{}
	j := 0
	for s := 0; ; s++ {
		t := since.Add(time.Duration(s) * time.Second)
		if t.After(last) {
			break
		}
		for j < len(series) && series[j].At.Before(t) {
			j++
		}
		out = append(out, series[j].Missing)
	}
	if last.After(since.Add(time.Duration(len(out)-1) * time.Second)) {
		out = append(out, series[len(series)-1].Missing)
	}
	return out
}

// ListTimes is how long a KSM process took from its start to the first
// scrape that exported its full share of the objects.
type ListTimes struct {
	Pods   int                `json:"pods"`
	Median Seconds            `json:"median"`
	Max    Seconds            `json:"max"`
	PerPod map[string]Seconds `json:"perPod"`
}

// listTimes is, for every target with a non-empty final share, the time
// from its process start (started) to the first scrape in series at which
// it exported at least its final share less slack objects. The slack
// allows for objects created after the process listed: the side's own
// later pods (OrderedReady creates one every few seconds), which some
// shard exports too. Targets never seen full, or without a start time,
// are left out.
func listTimes(started map[string]time.Time, series []metricwatch.Instant, final map[string]int, slack int) ListTimes {
	lt := ListTimes{PerPod: map[string]Seconds{}}
	var ds []time.Duration
	for name, want := range final {
		st, ok := started[name]
		if want == 0 || !ok {
			continue
		}
		for _, in := range series {
			if n, ok := in.Exported[name]; ok && n >= want-slack {
				d := max(in.At.Sub(st), 0)
				lt.PerPod[name] = Seconds(d)
				ds = append(ds, d)
				break
			}
		}
	}
	if len(ds) == 0 {
		return lt
	}
	slices.Sort(ds)
	lt.Pods = len(ds)
	lt.Max = Seconds(ds[len(ds)-1])
	if len(ds)%2 == 1 {
		lt.Median = Seconds(ds[len(ds)/2])
	} else {
		lt.Median = Seconds((ds[len(ds)/2-1] + ds[len(ds)/2]) / 2)
	}
	return lt
}

// processStarts is the start time of the KSM container of every pod
// selected, by metricwatch target name (namespace/name), as test/kubelet
// reports it (whole seconds).
func processStarts(ctx context.Context, cs kubernetes.Interface, namespace, selector string) (map[string]time.Time, error) {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == ksmContainer && s.State.Running != nil {
				out[p.Namespace+"/"+p.Name] = s.State.Running.StartedAt.Time
			}
		}
	}
	return out, nil
}

const ksmContainer = "kube-state-metrics"

// createListTimes measures the list time of the pods a create brought up,
// from the create's report; the slack is one object per pod of the side
// (see listTimes).
func createListTimes(ctx context.Context, cs kubernetes.Interface, namespace, selector string, r metricwatch.Report) (ListTimes, error) {
	started, err := processStarts(ctx, cs, namespace, selector)
	if err != nil {
		return ListTimes{}, err
	}
	return listTimes(started, r.Series, r.Last.Exported, len(started)), nil
}

// sortedKeys returns the keys of m in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
