// Package coverage watches the pods of one KSMScale and measures what the
// product promises: that at every instant some complete generation of
// kube-state-metrics is Ready, so that no object of the cluster goes without
// metrics. It is used by the integration, end-to-end and benchmark suites.
package coverage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/ksmscale/ksm-scale-operator/test/follow"
)

// UnshardedTotal is the generation key of pods without shard arguments (the
// unsharded Deployment's): one Ready pod covers every object.
const UnshardedTotal = 1

// CompleteGenerations counts the generations that have a Ready pod for every
// shard: pods are grouped by their --total-shards argument (pods without one
// form the unsharded generation), and revisions within a group combine. A pod
// being deleted or in a terminal phase does not count, whatever its
// condition says.
func CompleteGenerations(pods []*corev1.Pod, container string) int {
	ready := map[int]map[int]bool{}
	for _, p := range pods {
		if !Serving(p) {
			continue
		}
		shard, total := shardOf(p, container)
		if shard < 0 || shard >= total {
			// An ordinal outside 0..total-1 covers nothing of its generation.
			continue
		}
		if ready[total] == nil {
			ready[total] = map[int]bool{}
		}
		ready[total][shard] = true
	}
	n := 0
	for total, shards := range ready {
		if len(shards) == total {
			n++
		}
	}
	return n
}

// Serving reports whether pod counts for coverage: not being deleted, not in
// a terminal phase, Ready=True and every readiness gate True. kubelet folds
// the gates into Ready; kwok does not, so they are checked here too, as the
// Service's endpoints would see the pod.
func Serving(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return false
	}
	want := map[corev1.PodConditionType]bool{corev1.PodReady: true}
	for _, g := range p.Spec.ReadinessGates {
		want[g.ConditionType] = true
	}
	for _, c := range p.Status.Conditions {
		if want[c.Type] && c.Status == corev1.ConditionTrue {
			delete(want, c.Type)
		}
	}
	return len(want) == 0
}

// shardOf reads --shard and --total-shards from the named container.
func shardOf(p *corev1.Pod, container string) (shard, total int) {
	shard, total = 0, UnshardedTotal
	for _, c := range p.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--shard="); ok {
				shard, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(a, "--total-shards="); ok {
				total, _ = strconv.Atoi(v)
			}
		}
	}
	return shard, total
}

// Interval is a span of time.
type Interval struct{ From, To time.Time }

// Duration is the interval's length.
func (i Interval) Duration() time.Duration { return i.To.Sub(i.From) }

// Tracker turns a sequence of pod states into uncovered intervals (no
// complete generation Ready) and overlap intervals (two or more). It is pure:
// Observe is called with the time and the full pod set after each change.
type Tracker struct {
	mu        sync.Mutex
	started   bool
	complete  int
	since     time.Time
	uncovered []Interval
	overlap   []Interval
}

// Observe records the state at time t.
func (tr *Tracker) Observe(t time.Time, complete int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !tr.started {
		tr.started, tr.complete, tr.since = true, complete, t
		return
	}
	prevUncovered, prevOverlap := tr.complete == 0, tr.complete >= 2
	nowUncovered, nowOverlap := complete == 0, complete >= 2
	if prevUncovered != nowUncovered || prevOverlap != nowOverlap {
		if prevUncovered {
			tr.uncovered = append(tr.uncovered, Interval{tr.since, t})
		}
		if prevOverlap {
			tr.overlap = append(tr.overlap, Interval{tr.since, t})
		}
		tr.since = t
	}
	tr.complete = complete
}

// Report summarises the tracker up to time t.
type Report struct {
	Uncovered, Overlap []Interval
	// Covered is whether a complete generation is Ready at the end.
	Covered bool
	// Complete is the number of complete Ready generations at the end.
	Complete int
}

// UncoveredTime is the total time without a complete Ready generation.
func (r Report) UncoveredTime() time.Duration { return sum(r.Uncovered) }

// OverlapTime is the total time with two or more complete Ready generations.
func (r Report) OverlapTime() time.Duration { return sum(r.Overlap) }

// LongestOverlap is the longest single overlap.
func (r Report) LongestOverlap() time.Duration {
	var m time.Duration
	for _, i := range r.Overlap {
		m = max(m, i.Duration())
	}
	return m
}

func (r Report) String() string {
	return fmt.Sprintf("uncovered %s in %d intervals, overlap %s (longest %s), %d complete generations now",
		r.UncoveredTime().Round(time.Millisecond), len(r.Uncovered), r.OverlapTime().Round(time.Millisecond),
		r.LongestOverlap().Round(time.Millisecond), r.Complete)
}

func sum(is []Interval) time.Duration {
	var d time.Duration
	for _, i := range is {
		d += i.Duration()
	}
	return d
}

// Report returns the intervals up to t, closing the current one at t.
func (tr *Tracker) Report(t time.Time) Report {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	r := Report{
		Uncovered: append([]Interval(nil), tr.uncovered...),
		Overlap:   append([]Interval(nil), tr.overlap...),
		Covered:   tr.complete > 0,
		Complete:  tr.complete,
	}
	if tr.started && tr.complete == 0 {
		r.Uncovered = append(r.Uncovered, Interval{tr.since, t})
	}
	if tr.started && tr.complete >= 2 {
		r.Overlap = append(r.Overlap, Interval{tr.since, t})
	}
	return r
}

// Reset forgets the intervals so far, keeping the current state; call it
// before the change to be measured.
func (tr *Tracker) Reset(t time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.uncovered, tr.overlap, tr.since = nil, nil, t
}

// Watcher feeds a Tracker from a watch on the pods selected by a label
// selector in one namespace, independently of the operator.
type Watcher struct {
	*Tracker
	cancel context.CancelFunc
	done   chan struct{}
}

// Watch starts watching; Stop ends it. The watch starts from a list, so the
// tracker's first state is the state at the call.
func Watch(ctx context.Context, cs kubernetes.Interface, namespace, selector, container string) (*Watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{Tracker: &Tracker{}, cancel: cancel, done: make(chan struct{})}
	lw := follow.Pods(cs, namespace, selector)
	initial, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		cancel()
		return nil, err
	}
	// Keyed by namespace and name: watched across namespaces (a namespace
	// move), the old and the new pod of a shard have the same name.
	pods := map[string]*corev1.Pod{}
	key := func(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
	for i := range initial.Items {
		pods[key(&initial.Items[i])] = &initial.Items[i]
	}
	w.Observe(time.Now(), CompleteGenerations(values(pods), container))
	go func() {
		defer close(w.done)
		// Ends when the watch does; the tracker keeps what it saw.
		_ = follow.Watch(ctx, lw, initial.ResourceVersion, "pod watch", func(t watch.EventType, p *corev1.Pod) {
			if t == watch.Deleted {
				delete(pods, key(p))
			} else {
				pods[key(p)] = p
			}
			w.Observe(time.Now(), CompleteGenerations(values(pods), container))
		})
	}()
	return w, nil
}

// Stop ends the watch and waits for it.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

func values(m map[string]*corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}
