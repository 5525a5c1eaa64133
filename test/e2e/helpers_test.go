//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/test/coverage"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/workload"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/metricwatch"
)

// sumSamples adds up the samples of a metric family in Prometheus text
// format whose labels include every pair of want.
func sumSamples(text, family string, want map[string]string) float64 {
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, family) {
			continue
		}
		rest := line[len(family):]
		labels := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // a longer family name with this prefix
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(","+labels+",", ","+k+`="`+v+`",`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			total += v
		}
	}
	return total
}

// activePods lists a KSMScale's shard pods that are not being deleted.
func activePods(t *testing.T, ns, name string) []corev1.Pod {
	t.Helper()
	list := &corev1.PodList{}
	if err := k8s.List(suiteCtx, list, client.InNamespace(ns), client.MatchingLabels{"ksmscale.example.com": name, "sharding-enabled": "true"}); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Labels["shard-id"]+out[i].Name < out[j].Labels["shard-id"]+out[j].Name
	})
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitConverged waits for phase Ready on `total` shards with exactly one
// generation: one Ready pod per shard, one revision, nothing else.
func waitConverged(t *testing.T, ns, name string, total int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, timeout, fmt.Sprintf("%s converged on %d shards", name, total), func() error {
		k := &v1alpha1.KSMScale{}
		if err := k8s.Get(suiteCtx, client.ObjectKey{Name: name}, k); err != nil {
			return err
		}
		ss := k.Status.ShardingStatus
		if k.Status.Phase != v1alpha1.PhaseReady || k.Status.ObservedGeneration != k.Generation || ss == nil || int(ss.TotalShards) != total || int(ss.ActiveShards) != total {
			return fmt.Errorf("phase %s, sharding %+v", k.Status.Phase, ss)
		}
		pods = activePods(t, ns, name)
		shards, revs := map[string]int{}, map[string]bool{}
		for i := range pods {
			p := &pods[i]
			if !podReady(p) {
				return fmt.Errorf("pod %s not Ready", p.Name)
			}
			if p.Labels["total-shards"] != strconv.Itoa(total) {
				return fmt.Errorf("pod %s of another generation", p.Name)
			}
			shards[p.Labels["shard-id"]]++
			revs[p.Labels["ksmscale.example.com/revision"]] = true
		}
		if len(pods) != total || len(shards) != total || len(revs) != 1 {
			return fmt.Errorf("%d pods over %d shards, %d revisions", len(pods), len(shards), len(revs))
		}
		return nil
	})
	return pods
}

// watchers judge one change twice: by pod readiness (test/coverage) and by
// what the pods' kube-state-metrics actually export (test/metricwatch).
type watchers struct {
	pods    *coverage.Watcher
	metrics *metricwatch.Watcher
}

// watchCoverage starts both watchers on one KSMScale's pods, shard pods and
// Deployment replicas alike.
func watchCoverage(t *testing.T, ns, name string) *watchers {
	t.Helper()
	sel := "ksmscale.example.com=" + name
	pw, err := coverage.Watch(suiteCtx, cs, ns, sel, "kube-state-metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pw.Stop)
	mw, err := metricwatch.Start(suiteCtx, metricwatch.Options{
		Config:  cluster.RESTConfig(),
		Targets: metricwatch.PodTargets(cs, ns, sel, 8080),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mw.Stop)
	return &watchers{pods: pw, metrics: mw}
}

// reset starts a new measurement on both.
func (w *watchers) reset() {
	w.pods.Reset(time.Now())
	w.metrics.Reset()
}

func patchSpec(t *testing.T, name, patch string) {
	t.Helper()
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Patch(suiteCtx, k, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
}

// result is one scenario's coverage figures: from pod readiness (uncovered,
// overlap) and from the metrics themselves (missing and duplicate
// object-seconds, the most objects missing at one instant).
type result struct {
	scenario           string
	uncovered, overlap time.Duration
	missing, dup       float64
	worst              int
	note               string
}

func (r result) String() string {
	return fmt.Sprintf("%-46s missing %7.1f obj-s (worst %4d)  duplicate %8.1f obj-s | pods: uncovered %8s overlap %8s  %s", r.scenario,
		r.missing, r.worst, r.dup, r.uncovered.Round(time.Millisecond), r.overlap.Round(time.Millisecond), r.note)
}

// measure reports a scenario's coverage once the watcher sees a complete
// generation again, and checks the gap rule: zero where the fault left every
// shard a Ready pod; otherwise the gap must have ended.
//
// The metric watcher must also see every object exported again, for a few
// ticks past its grace window, so that the end of the change is in its
// figures; where the fault did not force a gap, no object may have gone
// missing for a single tick.
func measure(t *testing.T, w *watchers, scenario string, mayGap bool, note string) result {
	t.Helper()
	return measureWith(t, w, scenario, mayGap, mayGap, note)
}

// measureWith is measure with separate rules for the two watchers: a fault
// may leave every pod Ready and still make kube-state-metrics itself drop
// objects for a moment (see the API server restart in TestFaults).
func measureWith(t *testing.T, w *watchers, scenario string, podsMayGap, metricsMayGap bool, note string) result {
	t.Helper()
	eventually(t, 120*time.Second, scenario+": covered again", func() error {
		if r := w.pods.Report(time.Now()); !r.Covered {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	covered := time.Now()
	eventually(t, 120*time.Second, scenario+": every object exported again", func() error {
		m := w.metrics.Report()
		if m.Until.Before(covered.Add(metricwatch.DefaultGrace+2*time.Second)) || m.Last.Missing > 0 || m.Last.FailedTargets > 0 {
			return fmt.Errorf("last tick at %s: %d objects missing, %d targets failed", m.Until.Format(time.TimeOnly), m.Last.Missing, m.Last.FailedTargets)
		}
		return nil
	})
	r := w.pods.Report(time.Now())
	m := w.metrics.Report()
	res := result{scenario: scenario, uncovered: r.UncoveredTime(), overlap: r.OverlapTime(),
		missing: m.MissingObjectSeconds, dup: m.DuplicateObjectSeconds, worst: m.Worst.Missing, note: note}
	fmt.Printf("e2e coverage: %s\n", res)
	if !podsMayGap && r.UncoveredTime() != 0 {
		t.Errorf("%s: %s, want no uncovered time: %v", scenario, r, r.Uncovered)
	}
	if !metricsMayGap && m.MissingObjectSeconds != 0 {
		t.Errorf("%s: metrics: %s; worst instant %s: %v", scenario, m, m.Worst.At.Format(time.TimeOnly), m.Worst.MissingExamples)
	}
	return res
}

var (
	workloadOnce sync.Once
	workloadSum  workload.Summary
	workloadErr  error
)

// seedWorkload creates, once per suite, the cluster's objects that the
// shards export: 3,000 pods and 200 configmaps in 10 namespaces, spread
// over the Ready nodes, so that a kube-state-metrics list is not trivial.
func seedWorkload(t *testing.T) workload.Summary {
	t.Helper()
	workloadOnce.Do(func() {
		nodes := &corev1.NodeList{}
		if workloadErr = k8s.List(suiteCtx, nodes); workloadErr != nil {
			return
		}
		var names []string
		for i := range nodes.Items {
			if n := &nodes.Items[i]; localcluster.NodeReady(n) && !n.Spec.Unschedulable {
				names = append(names, n.Name)
			}
		}
		start := time.Now()
		workloadSum, workloadErr = workload.Seed(suiteCtx, cs, workload.Options{
			Namespaces: 10, PodsPerNamespace: 300, ConfigMapsPerNamespace: 20, Nodes: names, Prefix: "load",
		})
		if workloadErr != nil {
			return
		}
		if workloadErr = workload.WaitPodsReady(suiteCtx, cs, workloadSum, 5*time.Minute); workloadErr != nil {
			return
		}
		fmt.Printf("e2e: %d pods, %d configmaps in %d namespaces on %d nodes, Ready in %s\n",
			len(workloadSum.Pods), len(workloadSum.ConfigMaps), len(workloadSum.Namespaces), len(names), time.Since(start).Round(time.Millisecond))
	})
	if workloadErr != nil {
		t.Fatalf("seed workload: %v", workloadErr)
	}
	return workloadSum
}

// createSharded creates a sharded KSMScale with a 3 s settle time, deletes it
// when t ends, and waits until it has converged.
func createSharded(t *testing.T, ns, name string, shards, minAvailable int32, mutate func(*v1alpha1.KSMScaleSpec)) *v1alpha1.KSMScale {
	t.Helper()
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace: ns,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: shards, Advanced: &v1alpha1.AdvancedShardingConfig{
			MinAvailable: minAvailable, MinReadySeconds: ptr.To[int32](3),
		}},
	}}
	if mutate != nil {
		mutate(&k.Spec)
	}
	if err := k8s.Create(suiteCtx, k); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(suiteCtx, k) })
	waitConverged(t, ns, name, int(shards), 180*time.Second)
	return k
}
