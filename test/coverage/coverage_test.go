package coverage

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const container = "kube-state-metrics"

type podOpt func(*corev1.Pod)

func notReady(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
}

func noReadyCondition(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
}

func deleting(p *corev1.Pod) {
	ts := metav1.NewTime(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	p.DeletionTimestamp = &ts
}

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

// revision only renames the pod and labels it; the container is the same.
func revision(rev string) podOpt {
	return func(p *corev1.Pod) { p.Name += "-" + rev; p.Labels = map[string]string{"revision": rev} }
}

// shardPod is a Running, Ready kube-state-metrics pod serving shard/total.
func shardPod(shard, total int, opts ...podOpt) *corev1.Pod {
	return newPod(fmt.Sprintf("shard-%d-of-%d", shard, total),
		[]string{"--host=0.0.0.0", "--port=8080", fmt.Sprintf("--shard=%d", shard), fmt.Sprintf("--total-shards=%d", total), "--resources=pods"},
		opts...)
}

// unshardedPod is a Running, Ready pod of the unsharded Deployment.
func unshardedPod(name string, opts ...podOpt) *corev1.Pod {
	return newPod(name, []string{"--host=0.0.0.0", "--port=8080", "--telemetry-port=8081"}, opts...)
}

func newPod(name string, args []string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "monitoring"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: container, Args: args}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func gen(total int, opts ...podOpt) []*corev1.Pod {
	var out []*corev1.Pod
	for s := 0; s < total; s++ {
		out = append(out, shardPod(s, total, opts...))
	}
	return out
}

func join(groups ...[]*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func TestCompleteGenerations(t *testing.T) {
	tests := []struct {
		name string
		pods []*corev1.Pod
		want int
	}{
		{name: "no pods", pods: nil, want: 0},
		{name: "one complete generation", pods: gen(3), want: 1},
		{name: "one shard not Ready", pods: []*corev1.Pod{shardPod(0, 3), shardPod(1, 3, notReady), shardPod(2, 3)}, want: 0},
		{name: "one shard missing", pods: []*corev1.Pod{shardPod(0, 3), shardPod(2, 3)}, want: 0},
		{name: "pod without a Ready condition does not count", pods: []*corev1.Pod{shardPod(0, 2), shardPod(1, 2, noReadyCondition)}, want: 0},
		{
			name: "revisions within a generation combine",
			pods: []*corev1.Pod{shardPod(0, 3, revision("new")), shardPod(1, 3, revision("old")), shardPod(2, 3, revision("old"))},
			want: 1,
		},
		{
			name: "a duplicate shard does not make up for a missing one",
			pods: []*corev1.Pod{shardPod(0, 3, revision("new")), shardPod(0, 3, revision("old")), shardPod(1, 3)},
			want: 0,
		},
		{name: "complete 3 and partial 5", pods: join(gen(3), gen(5)[:4]), want: 1},
		{name: "complete 3 and complete 5", pods: join(gen(3), gen(5)), want: 2},
		{name: "shards of different generations do not combine", pods: join(gen(2)[:1], gen(3)[1:]), want: 0},
		{name: "deleting pod does not count", pods: []*corev1.Pod{shardPod(0, 2), shardPod(1, 2, deleting)}, want: 0},
		{name: "failed pod does not count", pods: []*corev1.Pod{shardPod(0, 2), shardPod(1, 2, phase(corev1.PodFailed))}, want: 0},
		{name: "succeeded pod does not count", pods: []*corev1.Pod{shardPod(0, 2), shardPod(1, 2, phase(corev1.PodSucceeded))}, want: 0},
		{name: "deleting, failed pod replaced by a Ready one", pods: []*corev1.Pod{shardPod(0, 2), shardPod(1, 2, deleting), shardPod(1, 2, revision("b"))}, want: 1},
		{name: "unsharded pod is a 1-shard generation", pods: []*corev1.Pod{unshardedPod("d-1")}, want: 1},
		{name: "several unsharded replicas are one generation", pods: []*corev1.Pod{unshardedPod("d-1"), unshardedPod("d-2")}, want: 1},
		{name: "unsharded not Ready", pods: []*corev1.Pod{unshardedPod("d-1", notReady)}, want: 0},
		{name: "unsharded beside complete shards", pods: join(gen(3), []*corev1.Pod{unshardedPod("d-1")}), want: 2},
		{name: "unsharded beside partial shards", pods: join(gen(3)[:2], []*corev1.Pod{unshardedPod("d-1")}), want: 1},
		{
			name: "shard arguments of another container are ignored",
			pods: []*corev1.Pod{func() *corev1.Pod {
				p := shardPod(1, 2)
				p.Spec.Containers[0].Name = "sidecar"
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: container, Args: []string{"--port=8080"}})
				return p
			}()},
			want: 1,
		},
		{
			name: "out-of-range shard ordinal does not complete a generation",
			// Shards 0 and 5 of 2: shard 1 has no pod.
			pods: []*corev1.Pod{shardPod(0, 2), shardPod(5, 2)},
			want: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CompleteGenerations(tc.pods, container)
			if got != tc.want {
				t.Errorf("CompleteGenerations() = %d, want %d", got, tc.want)
			}
		})
	}
}

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

func iv(from, to int) Interval { return Interval{From: at(from), To: at(to)} }

func TestTracker(t *testing.T) {
	type obs struct{ sec, complete int }
	tests := []struct {
		name          string
		script        []obs
		resetAt       int // seconds; -1 for no reset
		resetAfter    int // number of observations before the reset
		reportAt      int
		wantUncovered []Interval
		wantOverlap   []Interval
		wantCovered   bool
		wantComplete  int
	}{
		{
			name:    "covered, uncovered, covered again",
			script:  []obs{{0, 1}, {10, 0}, {15, 1}},
			resetAt: -1, reportAt: 30,
			wantUncovered: []Interval{iv(10, 15)},
			wantCovered:   true, wantComplete: 1,
		},
		{
			name:    "overlap 1 -> 2 -> 1",
			script:  []obs{{0, 1}, {10, 2}, {12, 1}},
			resetAt: -1, reportAt: 30,
			wantOverlap: []Interval{iv(10, 12)},
			wantCovered: true, wantComplete: 1,
		},
		{
			name:    "a whole reshard: gap, overlap, gap",
			script:  []obs{{0, 1}, {5, 0}, {7, 1}, {20, 2}, {25, 1}, {40, 0}, {41, 1}},
			resetAt: -1, reportAt: 60,
			wantUncovered: []Interval{iv(5, 7), iv(40, 41)},
			wantOverlap:   []Interval{iv(20, 25)},
			wantCovered:   true, wantComplete: 1,
		},
		{
			name:    "straight from none to two and back",
			script:  []obs{{0, 0}, {10, 2}, {20, 0}, {30, 1}},
			resetAt: -1, reportAt: 40,
			wantUncovered: []Interval{iv(0, 10), iv(20, 30)},
			wantOverlap:   []Interval{iv(10, 20)},
			wantCovered:   true, wantComplete: 1,
		},
		{
			name:    "two to three is one overlap",
			script:  []obs{{0, 1}, {10, 2}, {15, 3}, {20, 2}, {30, 1}},
			resetAt: -1, reportAt: 40,
			wantOverlap: []Interval{iv(10, 30)},
			wantCovered: true, wantComplete: 1,
		},
		{
			name:    "repeated states make no intervals",
			script:  []obs{{0, 1}, {10, 1}, {20, 1}},
			resetAt: -1, reportAt: 30,
			wantCovered: true, wantComplete: 1,
		},
		{
			name:    "report closes an open uncovered interval",
			script:  []obs{{0, 1}, {10, 0}},
			resetAt: -1, reportAt: 25,
			wantUncovered: []Interval{iv(10, 25)},
			wantCovered:   false, wantComplete: 0,
		},
		{
			name:    "report closes an open overlap",
			script:  []obs{{0, 1}, {10, 2}},
			resetAt: -1, reportAt: 25,
			wantOverlap: []Interval{iv(10, 25)},
			wantCovered: true, wantComplete: 2,
		},
		{
			name:    "uncovered from the first observation",
			script:  []obs{{0, 0}},
			resetAt: -1, reportAt: 8,
			wantUncovered: []Interval{iv(0, 8)},
		},
		{
			name:    "nothing observed",
			resetAt: -1, reportAt: 8,
		},
		{
			name:    "reset forgets earlier intervals and keeps the state",
			script:  []obs{{0, 0}, {10, 1}, {20, 2}, {30, 1}, {40, 0}, {50, 1}, {60, 0}, {70, 1}},
			resetAt: 75, resetAfter: 8, reportAt: 90,
			wantCovered: true, wantComplete: 1,
		},
		{
			name:    "reset while uncovered starts the open interval at the reset",
			script:  []obs{{0, 1}, {10, 0}},
			resetAt: 20, resetAfter: 2, reportAt: 30,
			wantUncovered: []Interval{iv(20, 30)},
		},
		{
			name:    "reset while covered, then a gap",
			script:  []obs{{0, 0}, {10, 1}, {30, 0}, {35, 1}, {40, 2}},
			resetAt: 20, resetAfter: 2, reportAt: 50,
			wantUncovered: []Interval{iv(30, 35)},
			wantOverlap:   []Interval{iv(40, 50)},
			wantCovered:   true, wantComplete: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			for i, o := range tc.script {
				if tc.resetAt >= 0 && i == tc.resetAfter {
					tr.Reset(at(tc.resetAt))
				}
				tr.Observe(at(o.sec), o.complete)
			}
			if tc.resetAt >= 0 && tc.resetAfter == len(tc.script) {
				tr.Reset(at(tc.resetAt))
			}
			got := tr.Report(at(tc.reportAt))
			want := Report{Uncovered: tc.wantUncovered, Overlap: tc.wantOverlap, Covered: tc.wantCovered, Complete: tc.wantComplete}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Report() (-want +got):\n%s", diff)
			}
			// Report does not change the tracker.
			if again := tr.Report(at(tc.reportAt)); !cmp.Equal(got, again, cmpopts.EquateEmpty()) {
				t.Errorf("second Report() differs:\n%+v\n%+v", got, again)
			}
		})
	}
}

func TestReportDurations(t *testing.T) {
	var tr Tracker
	for _, o := range []struct{ sec, complete int }{{0, 1}, {5, 0}, {7, 1}, {10, 2}, {13, 1}, {20, 2}, {30, 1}, {40, 0}} {
		tr.Observe(at(o.sec), o.complete)
	}
	r := tr.Report(at(44))
	if got, want := r.UncoveredTime(), 6*time.Second; got != want { // 5..7 and 40..44
		t.Errorf("UncoveredTime() = %s, want %s", got, want)
	}
	if got, want := r.OverlapTime(), 13*time.Second; got != want { // 10..13 and 20..30
		t.Errorf("OverlapTime() = %s, want %s", got, want)
	}
	if got, want := r.LongestOverlap(), 10*time.Second; got != want {
		t.Errorf("LongestOverlap() = %s, want %s", got, want)
	}
	if r.Covered {
		t.Error("Covered = true at the end of a gap")
	}
	if s := r.String(); s != "uncovered 6s in 2 intervals, overlap 13s (longest 10s), 0 complete generations now" {
		t.Errorf("String() = %q", s)
	}
}

// TestTrackerFromPods runs CompleteGenerations and the Tracker together over
// a scripted reshard, as the Watcher does.
func TestTrackerFromPods(t *testing.T) {
	steps := []struct {
		sec  int
		pods []*corev1.Pod
	}{
		{0, gen(2)},
		{10, join(gen(2), gen(3, notReady))},
		{20, join(gen(2), gen(3))},
		{30, join(gen(2, deleting), gen(3))},
		{31, gen(3)},
		{40, join(gen(3)[:2], []*corev1.Pod{shardPod(2, 3, phase(corev1.PodFailed))})},
		{45, join(gen(3)[:2], []*corev1.Pod{shardPod(2, 3, revision("new"))})},
	}
	var tr Tracker
	for _, s := range steps {
		tr.Observe(at(s.sec), CompleteGenerations(s.pods, container))
	}
	got := tr.Report(at(50))
	want := Report{Uncovered: []Interval{iv(40, 45)}, Overlap: []Interval{iv(20, 30)}, Covered: true, Complete: 1}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Report() (-want +got):\n%s", diff)
	}
}

// TestServingHonoursReadinessGates: a pod that kwok (which ignores gates)
// reports Ready does not serve until its readiness gates are True, as the
// Service's endpoints would see it.
func TestServingHonoursReadinessGates(t *testing.T) {
	const gate = "ksmscale.example.com/metrics-verified"
	gated := func(status corev1.ConditionStatus) podOpt {
		return func(p *corev1.Pod) {
			p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: gate}}
			if status != "" {
				p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: gate, Status: status})
			}
		}
	}
	for name, tc := range map[string]struct {
		pod  *corev1.Pod
		want bool
	}{
		"Ready, no gates":              {shardPod(0, 2), true},
		"Ready, gate not set yet":      {shardPod(0, 2, gated("")), false},
		"Ready, gate False":            {shardPod(0, 2, gated(corev1.ConditionFalse)), false},
		"Ready, gate True":             {shardPod(0, 2, gated(corev1.ConditionTrue)), true},
		"gate True but not Ready":      {shardPod(0, 2, notReady, gated(corev1.ConditionTrue)), false},
		"gate True, pod being deleted": {shardPod(0, 2, gated(corev1.ConditionTrue), deleting), false},
	} {
		if got := Serving(tc.pod); got != tc.want {
			t.Errorf("%s: Serving = %v, want %v", name, got, tc.want)
		}
	}
}
