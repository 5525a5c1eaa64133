package integration

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
	"github.com/ksmscale/ksm-scale-operator/test/coverage"
	"github.com/ksmscale/ksm-scale-operator/test/restore"
)

// shardPods lists a KSMScale's pods that are not being deleted, sorted by name.
func shardPods(t *testing.T, ns, name string) []corev1.Pod {
	t.Helper()
	list := &corev1.PodList{}
	if err := k8s.List(testCtx, list, client.InNamespace(ns), client.MatchingLabels{"ksmscale.example.com": name, "sharding-enabled": "true"}); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// waitConverged waits until the KSMScale reports Ready with `total` active
// shards and exactly one generation exists: one pod per shard, all with the
// same revision and --total-shards.
func waitConverged(t *testing.T, ns, name string, total int32, check func(p corev1.Pod) error) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, 120*time.Second, fmt.Sprintf("%s converged on %d shards", name, total), func() error {
		k := &v1alpha1.KSMScale{}
		if err := k8s.Get(testCtx, client.ObjectKey{Name: name}, k); err != nil {
			return err
		}
		ss := k.Status.ShardingStatus
		if k.Status.Phase != v1alpha1.PhaseReady || ss == nil || ss.TotalShards != total || ss.ActiveShards != total || k.Status.ObservedGeneration != k.Generation {
			return fmt.Errorf("status phase=%s sharding=%+v", k.Status.Phase, ss)
		}
		pods = shardPods(t, ns, name)
		if int32(len(pods)) != total {
			return fmt.Errorf("%d pods, want %d", len(pods), total)
		}
		revs := map[string]bool{}
		seen := map[string]bool{}
		for _, p := range pods {
			revs[p.Labels["ksmscale.example.com/revision"]] = true
			seen[p.Labels["shard-id"]] = true
			if !podReady(&p) {
				return fmt.Errorf("pod %s not Ready", p.Name)
			}
			if p.Labels["total-shards"] != fmt.Sprint(total) {
				return fmt.Errorf("pod %s total-shards %s", p.Name, p.Labels["total-shards"])
			}
			if check != nil {
				if err := check(p); err != nil {
					return fmt.Errorf("pod %s: %w", p.Name, err)
				}
			}
		}
		if len(revs) != 1 || int32(len(seen)) != total {
			return fmt.Errorf("revisions %v shards %v", revs, seen)
		}
		return nil
	})
	return pods
}

func watchCoverage(t *testing.T, ns, name string) *coverage.Watcher {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(restCfg)
	w, err := coverage.Watch(testCtx, cs, ns, "ksmscale.example.com="+name, "kube-state-metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// assertCoverage checks that a change kept a complete generation Ready at
// every instant and that two generations overlapped no longer than the
// settle time plus slack.
func assertCoverage(t *testing.T, w *coverage.Watcher, what string, settle time.Duration) {
	t.Helper()
	r := w.Report(time.Now())
	t.Logf("%s: %s", what, r)
	if r.UncoveredTime() != 0 {
		t.Errorf("%s left objects without metrics: %v", what, r.Uncovered)
	}
	if lim := settle + 10*time.Second; r.LongestOverlap() > lim {
		t.Errorf("%s: generations overlapped %s, more than %s", what, r.LongestOverlap(), lim)
	}
	if r.Complete != 1 {
		t.Errorf("%s ended with %d complete generations, want exactly 1", what, r.Complete)
	}
}

func patchSpec(t *testing.T, name, mergePatch string) {
	t.Helper()
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Patch(testCtx, k, client.RawPatch(types.MergePatchType, []byte(mergePatch))); err != nil {
		t.Fatalf("patch %s with %s: %v", name, mergePatch, err)
	}
}

// TestPlanShardedExample applies the plan's sharded example unchanged and
// then runs the changes users make, each under the coverage watcher.
func TestPlanShardedExample(t *testing.T) {
	const ns, name = "monitoring", "production-ksm-sharded"
	if err := k8s.Get(testCtx, client.ObjectKey{Name: ns}, &corev1.Namespace{}); err != nil {
		createNamespace(t, ns)
	}
	kubelet := startKubelet(t, ns)
	startDeploymentController(t, ns)

	b, err := os.ReadFile("../../config/samples/monitor_v1alpha1_ksmscale_sharded.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u := fromYAML(t, string(b))
	if err := k8s.Create(testCtx, u); err != nil {
		t.Fatalf("apply the plan's example: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(testCtx, &unstructured.Unstructured{Object: u.Object}) })

	pods := waitConverged(t, ns, name, 3, nil)
	k := getKSMScale(t, name)
	for i, p := range pods {
		wantArgs := []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081",
			fmt.Sprintf("--shard=%d", i), "--total-shards=3"}
		c := p.Spec.Containers[0]
		if !slices.Equal(c.Args, wantArgs) {
			t.Errorf("pod %s args %v, want %v", p.Name, c.Args, wantArgs)
		}
		if c.Image != "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.1" {
			t.Errorf("image %s", c.Image)
		}
		if c.Resources.Limits.Memory().String() != "300Mi" || c.Resources.Requests.Cpu().String() != "100m" {
			t.Errorf("resources %+v", c.Resources)
		}
		for k, v := range map[string]string{
			"app.kubernetes.io/name": "kube-state-metrics", "app.kubernetes.io/instance": name,
			"app.kubernetes.io/component": "exporter", "ksmscale.example.com": name,
			"shard-id": fmt.Sprint(i), "total-shards": "3", "sharding-enabled": "true",
		} {
			if p.Labels[k] != v {
				t.Errorf("pod %s label %s=%q, want %q", p.Name, k, p.Labels[k], v)
			}
		}
		prefix := fmt.Sprintf("kube-state-metrics-%s-shard-%d-", name, i)
		if !strings.HasPrefix(p.Name, prefix) || len(p.Name) != len(prefix)+10 {
			t.Errorf("pod name %s, want %s<revision>", p.Name, prefix)
		}
		if !metav1.IsControlledBy(&p, k) {
			t.Errorf("pod %s not controlled by the KSMScale", p.Name)
		}
		if a := p.Spec.Affinity; a == nil || a.PodAntiAffinity == nil ||
			a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("pod %s lacks the spread anti-affinity", p.Name)
		}
	}
	svc := &corev1.Service{}
	if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name}, svc); err != nil {
		t.Fatalf("service: %v", err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Spec.Selector["ksmscale.example.com"] != name ||
		len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Name != "http-metrics" || svc.Spec.Ports[0].Port != 8080 ||
		svc.Spec.Ports[1].Name != "telemetry" || svc.Spec.Ports[1].Port != 8081 {
		t.Errorf("service %+v", svc.Spec)
	}
	pdb := &policyv1.PodDisruptionBudget{}
	if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name + "-pdb"}, pdb); err != nil {
		t.Fatalf("pdb: %v", err)
	}
	if pdb.Spec.MinAvailable.IntValue() != 2 || pdb.Spec.Selector.MatchLabels["sharding-enabled"] != "true" ||
		pdb.Spec.Selector.MatchLabels["ksmscale.example.com"] != name || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		t.Errorf("pdb %+v", pdb.Spec)
	}
	k = getKSMScale(t, name)
	ss := k.Status.ShardingStatus
	if ss.ShardCountSource != "ShardCount" || len(ss.ShardHealth) != 3 {
		t.Errorf("sharding status %+v", ss)
	}
	for i, h := range ss.ShardHealth {
		if h.ShardID != int32(i) || !h.Ready || h.PodName != pods[i].Name || h.LastSeen.IsZero() {
			t.Errorf("shard health %+v", h)
		}
	}
	for _, c := range []struct{ typ, reason string }{
		{v1alpha1.ConditionAvailable, controller.ReasonAllShardsReady},
		{v1alpha1.ConditionProgressing, controller.ReasonConverged},
		{v1alpha1.ConditionDegraded, controller.ReasonAsExpected},
	} {
		want := metav1.ConditionTrue
		if c.typ != v1alpha1.ConditionAvailable {
			want = metav1.ConditionFalse
		}
		if err := wantCondition(k, c.typ, want, c.reason); err != nil {
			t.Error(err)
		}
	}

	t.Run("a converged instance writes nothing", func(t *testing.T) {
		objs := []client.Object{&v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}}, svc.DeepCopy(), pdb.DeepCopy()}
		for _, p := range pods {
			objs = append(objs, p.DeepCopy())
		}
		reconciles := reconcileCount(t)
		assertQuiet(t, 20*time.Second, objs...)
		// The instance has nothing pending, so nothing requeues it either.
		if n := reconcileCount(t) - reconciles; n != 0 {
			t.Errorf("%v reconciles of a converged instance in 20 s", n)
		}
	})

	t.Run("metrics and events tell people", func(t *testing.T) {
		if v := gauge(t, "ksmscale_shards_total", map[string]string{"ksmscale": name}); v != 3 {
			t.Errorf("ksmscale_shards_total %v", v)
		}
		if v := gauge(t, "ksmscale_shards_active", map[string]string{"ksmscale": name}); v != 3 {
			t.Errorf("ksmscale_shards_active %v", v)
		}
		for i := 0; i < 3; i++ {
			if v := gauge(t, "ksmscale_shard_ready", map[string]string{"ksmscale": name, "shard": fmt.Sprint(i)}); v != 1 {
				t.Errorf("ksmscale_shard_ready shard %d = %v", i, v)
			}
		}
		eventually(t, 30*time.Second, "ShardCreated events for every shard", func() error {
			created := map[string]bool{}
			for _, e := range eventsFor(t, name) {
				if e.Reason == controller.EventShardCreated && e.Related != nil {
					created[e.Related.Name] = true
				}
			}
			for _, p := range pods {
				if !created[p.Name] {
					return fmt.Errorf("no ShardCreated event for %s (have %v)", p.Name, created)
				}
			}
			return nil
		})
	})

	// The plan's example keeps the 30 s default settle time; shorten it so
	// the changes below run in seconds. It does not shape the pods.
	const settle = 3 * time.Second
	patchSpec(t, name, `{"spec":{"sharding":{"advanced":{"minReadySeconds":3}}}}`)
	if got := shardPods(t, ns, name); got[0].Name != pods[0].Name {
		t.Fatalf("changing minReadySeconds replaced pods")
	}

	t.Run("image change rolls shard by shard without a gap", func(t *testing.T) {
		w := watchCoverage(t, ns, name)
		patchSpec(t, name, `{"spec":{"monitorImage":"registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"}}`)
		waitConverged(t, ns, name, 3, func(p corev1.Pod) error {
			if img := p.Spec.Containers[0].Image; !strings.HasSuffix(img, ":v2.20.0") {
				return fmt.Errorf("image %s", img)
			}
			return nil
		})
		assertCoverage(t, w, "image rollout", settle)
	})

	for _, step := range []struct{ from, to int32 }{{3, 5}, {5, 2}} {
		t.Run(fmt.Sprintf("reshard %d to %d without a gap", step.from, step.to), func(t *testing.T) {
			w := watchCoverage(t, ns, name)
			if step.to < 3 {
				// minAvailable 2 must stay below the shard count.
				patchSpec(t, name, fmt.Sprintf(`{"spec":{"sharding":{"shardCount":%d,"advanced":{"minAvailable":1}}}}`, step.to))
			} else {
				patchSpec(t, name, fmt.Sprintf(`{"spec":{"sharding":{"shardCount":%d}}}`, step.to))
			}
			waitConverged(t, ns, name, step.to, nil)
			assertCoverage(t, w, fmt.Sprintf("reshard %d->%d", step.from, step.to), settle)
			eventually(t, 30*time.Second, "resharding events", func() error {
				var started, finished bool
				for _, e := range eventsFor(t, name) {
					started = started || (e.Reason == controller.EventReshardingStarted && strings.Contains(e.Note, fmt.Sprintf("%d shards", step.to)))
					finished = finished || (e.Reason == controller.EventReshardingFinished && strings.Contains(e.Note, fmt.Sprintf("all %d shards", step.to)))
				}
				if !started || !finished {
					return fmt.Errorf("ReshardingStarted %v, ReshardingFinished %v", started, finished)
				}
				return nil
			})
			if v := gauge(t, "ksmscale_shards_total", map[string]string{"ksmscale": name}); v != float64(step.to) {
				t.Errorf("ksmscale_shards_total %v, want %d", v, step.to)
			}
			if step.to < step.from && gaugeExists(t, "ksmscale_shard_ready", map[string]string{"ksmscale": name, "shard": fmt.Sprint(step.from - 1)}) {
				t.Errorf("ksmscale_shard_ready of removed shard %d still exported", step.from-1)
			}
		})
	}

	t.Run("sharding off and on again without a gap", func(t *testing.T) {
		w := watchCoverage(t, ns, name)
		patchSpec(t, name, `{"spec":{"sharding":{"enabled":false}}}`)
		eventually(t, 120*time.Second, "unsharded, shard pods and PDB gone", func() error {
			k := getKSMScale(t, name)
			if k.Status.Mode != v1alpha1.ModeUnsharded || k.Status.Phase != v1alpha1.PhaseReady || k.Status.ShardingStatus != nil {
				return fmt.Errorf("mode %s phase %s", k.Status.Mode, k.Status.Phase)
			}
			if n := len(shardPods(t, ns, name)); n != 0 {
				return fmt.Errorf("%d shard pods left", n)
			}
			err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name + "-pdb"}, &policyv1.PodDisruptionBudget{})
			if err == nil {
				return fmt.Errorf("PDB still there")
			}
			return client.IgnoreNotFound(err)
		})
		assertCoverage(t, w, "sharding off", settle)

		w = watchCoverage(t, ns, name)
		patchSpec(t, name, `{"spec":{"sharding":{"enabled":true}}}`)
		waitConverged(t, ns, name, 2, nil)
		eventually(t, 60*time.Second, "ModeSwitched event", func() error {
			for _, e := range eventsFor(t, name) {
				if e.Reason == controller.EventModeSwitched {
					return nil
				}
			}
			return fmt.Errorf("no ModeSwitched event")
		})
		eventually(t, 60*time.Second, "Deployment retired", func() error {
			_, err := getDeployment(ns, "kube-state-metrics-"+name)
			if err == nil {
				return fmt.Errorf("Deployment still there")
			}
			return client.IgnoreNotFound(err)
		})
		eventually(t, 60*time.Second, "Deployment pods gone", func() error {
			list := &corev1.PodList{}
			if err := k8s.List(testCtx, list, client.InNamespace(ns), client.MatchingLabels{"ksmscale.example.com": name, "sharding-enabled": "false"}); err != nil {
				return err
			}
			if len(list.Items) > 0 {
				return fmt.Errorf("%d Deployment pods left", len(list.Items))
			}
			return nil
		})
		assertCoverage(t, w, "sharding on", settle)
	})

	t.Run("a second change mid-way strands nothing", func(t *testing.T) {
		w := watchCoverage(t, ns, name)
		// Keep the 4-shard generation from settling before the second
		// change arrives: its pods stay un-Ready until released.
		kubelet.setHold(func(p *corev1.Pod) bool { return p.Labels["total-shards"] == "4" && p.Labels["shard-id"] == "3" })
		patchSpec(t, name, `{"spec":{"sharding":{"shardCount":4}}}`)
		eventually(t, 60*time.Second, "half-built 4-shard generation", func() error {
			n := 0
			for _, p := range shardPods(t, ns, name) {
				if p.Labels["total-shards"] == "4" {
					n++
				}
			}
			if n != 4 {
				return fmt.Errorf("%d pods of the 4-shard generation", n)
			}
			return nil
		})
		patchSpec(t, name, `{"spec":{"sharding":{"shardCount":6}}}`)
		kubelet.setHold(nil)
		waitConverged(t, ns, name, 6, nil)
		assertCoverage(t, w, "reshard 2->4->6", settle)
	})

	t.Run("self-healing", func(t *testing.T) { testSelfHealing(t, ns, name, 6) })
}

// testSelfHealing breaks a converged sharded instance in every way a
// cluster does and waits for it to heal.
func testSelfHealing(t *testing.T, ns, name string, total int32) {
	pods := waitConverged(t, ns, name, total, nil)

	t.Run("deleted pod comes back", func(t *testing.T) {
		if err := k8s.Delete(testCtx, &pods[0]); err != nil {
			t.Fatal(err)
		}
		waitConverged(t, ns, name, total, func(p corev1.Pod) error {
			if p.UID == pods[0].UID {
				return fmt.Errorf("deleted pod still listed")
			}
			return nil
		})
	})

	t.Run("failed and evicted pods are replaced", func(t *testing.T) {
		pods := waitConverged(t, ns, name, total, nil)
		setPodPhase(t, ns, pods[0].Name, corev1.PodFailed, "Evicted")
		setPodPhase(t, ns, pods[1].Name, corev1.PodFailed, "Error")
		waitConverged(t, ns, name, total, func(p corev1.Pod) error {
			if p.UID == pods[0].UID || p.UID == pods[1].UID {
				return fmt.Errorf("failed pod still there")
			}
			return nil
		})
	})

	t.Run("pod stuck terminating does not leave its shard uncovered", func(t *testing.T) {
		pods := waitConverged(t, ns, name, total, nil)
		stuck := pods[0]
		// A finalizer stands in for a kubelet on a lost node that never
		// confirms the deletion.
		stuck.Finalizers = append(stuck.Finalizers, "test.example.com/lost-node")
		if err := k8s.Update(testCtx, &stuck); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p := &corev1.Pod{}
			if k8s.Get(testCtx, client.ObjectKeyFromObject(&stuck), p) == nil {
				p.Finalizers = nil
				_ = k8s.Update(testCtx, p)
			}
		})
		if err := k8s.Delete(testCtx, &stuck); err != nil {
			t.Fatal(err)
		}
		got := waitConverged(t, ns, name, total, nil)
		if got[0].Name == stuck.Name || !strings.HasPrefix(got[0].Name, stuck.Name) {
			t.Errorf("replacement %s, want %s with a suffix", got[0].Name, stuck.Name)
		}
	})

	t.Run("pods edited by someone else are replaced", func(t *testing.T) {
		pods := waitConverged(t, ns, name, total, nil)
		w := watchCoverage(t, ns, name)
		img := pods[0].DeepCopy()
		img.Spec.Containers[0].Image = "example.com/not-ksm:1"
		if err := k8s.Update(testCtx, img); err != nil {
			t.Fatal(err)
		}
		lbl := pods[1].DeepCopy()
		lbl.Labels["shard-id"] = "7"
		if err := k8s.Update(testCtx, lbl); err != nil {
			t.Fatal(err)
		}
		got := waitConverged(t, ns, name, total, func(p corev1.Pod) error {
			if p.Name == img.Name || p.Name == lbl.Name {
				return fmt.Errorf("edited pod still there")
			}
			return nil
		})
		if got[0].Spec.Containers[0].Image == img.Spec.Containers[0].Image {
			t.Errorf("replacement kept the edited image")
		}
		r := w.Report(time.Now())
		t.Logf("edits: %s", r)
		if r.UncoveredTime() != 0 {
			t.Errorf("replacing edited pods left a gap: %v", r.Uncovered)
		}
	})

	t.Run("deleted Service, PDB, ServiceAccount and binding are restored", func(t *testing.T) {
		restore.DeleteAndWait(t, testCtx, k8s, 30*time.Second, restore.ShardedChildren(ns, name)...)
	})
}

// TestTwoInstancesInOneNamespace checks that a second KSMScale in the same
// namespace never touches the first one's objects.
func TestTwoInstancesInOneNamespace(t *testing.T) {
	const ns = "shared-ns"
	createNamespace(t, ns)
	startKubelet(t, ns)
	mk := func(name string, shards int32) {
		createKSMScale(t, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
			Namespace: ns,
			Sharding:  &v1alpha1.ShardingConfig{Enabled: true, ShardCount: shards, Advanced: &v1alpha1.AdvancedShardingConfig{MinReadySeconds: ptr.To[int32](1)}},
		}})
	}
	mk("first", 2)
	first := waitConverged(t, ns, "first", 2, nil)
	var objs []client.Object
	for i := range first {
		objs = append(objs, &first[i])
	}
	objs = append(objs,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-first"}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-first-pdb"}})
	before := resourceVersions(t, objs...)

	mk("second", 3)
	waitConverged(t, ns, "second", 3, nil)
	patchSpec(t, "second", `{"spec":{"sharding":{"shardCount":4}}}`)
	waitConverged(t, ns, "second", 4, nil)
	if err := k8s.Delete(testCtx, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "second"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "metrics of the deleted instance removed", func() error {
		if gaugeExists(t, "ksmscale_shards_total", map[string]string{"ksmscale": "second"}) {
			return fmt.Errorf("ksmscale_shards_total{ksmscale=second} still exported")
		}
		return nil
	})
	if after := resourceVersions(t, objs...); !slices.Equal(before, after) {
		t.Errorf("the second instance touched the first one's objects: %v -> %v", before, after)
	}
	svc := &corev1.Service{}
	if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-second"}, svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector["ksmscale.example.com"] != "second" {
		t.Errorf("second Service selector %v", svc.Spec.Selector)
	}
	if got := waitConverged(t, ns, "first", 2, nil); got[0].Name != first[0].Name || got[1].Name != first[1].Name {
		t.Errorf("first instance's pods changed")
	}
}
