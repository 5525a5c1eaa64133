package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// fakeKubelet plays kubelet for the pods of one namespace: envtest runs no
// kubelet, so nothing else would ever mark a pod Running and Ready. Pods for
// which hold returns true are left alone (a pod that never starts).
type fakeKubelet struct {
	mu   sync.Mutex
	hold func(*corev1.Pod) bool
}

func (f *fakeKubelet) setHold(h func(*corev1.Pod) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = h
}

// startKubelet marks every new pod in ns Running and Ready until the test ends.
func startKubelet(t *testing.T, ns string) *fakeKubelet {
	t.Helper()
	f := &fakeKubelet{}
	ctx, cancel := context.WithCancel(testCtx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			pods := &corev1.PodList{}
			if err := k8s.List(ctx, pods, client.InNamespace(ns)); err != nil {
				return false, nil
			}
			f.mu.Lock()
			hold := f.hold
			f.mu.Unlock()
			for i := range pods.Items {
				p := &pods.Items[i]
				if (p.Status.Phase != "" && p.Status.Phase != corev1.PodPending) || !p.DeletionTimestamp.IsZero() || (hold != nil && hold(p)) {
					continue
				}
				markReady(ctx, p)
			}
			return false, nil
		})
	}()
	return f
}

// markReady sets a pod's status as a kubelet does once its container runs.
func markReady(ctx context.Context, p *corev1.Pod) {
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.StartTime = &now
	_ = k8s.Status().Update(ctx, p)
}

// setPodPhase puts a pod into a terminal phase, as the kubelet does after an
// eviction (reason Evicted) or a crash without restart.
func setPodPhase(t *testing.T, ns, name string, phase corev1.PodPhase, reason string) {
	t.Helper()
	eventually(t, 30*time.Second, "set pod phase", func() error {
		p := &corev1.Pod{}
		if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			return err
		}
		p.Status.Phase, p.Status.Reason = phase, reason
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodReady {
				p.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
		return k8s.Status().Update(testCtx, p)
	})
}

// startDeploymentController plays kube-controller-manager's Deployment and
// ReplicaSet controllers for the Deployments in ns, simply: it creates one pod
// per replica from the current template (named after a hash of it), deletes
// the pods of older templates once every current one is Ready (maxUnavailable
// 0), deletes the pods of Deployments that are gone (envtest runs no garbage
// collector) and reports the counts in the Deployment's status.
func startDeploymentController(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			syncDeployments(ctx, ns)
			return false, nil
		})
	}()
}

func syncDeployments(ctx context.Context, ns string) {
	list := &appsv1.DeploymentList{}
	pods := &corev1.PodList{}
	if k8s.List(ctx, list, client.InNamespace(ns)) != nil || k8s.List(ctx, pods, client.InNamespace(ns)) != nil {
		return
	}
	live := map[types.UID]bool{}
	for i := range list.Items {
		d := &list.Items[i]
		live[d.UID] = true
		b, _ := json.Marshal(d.Spec.Template)
		hash := fmt.Sprintf("%x", sha256.Sum256(b))[:8]
		var current, ready, old int32
		for j := range pods.Items {
			p := &pods.Items[j]
			if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != d.UID || !p.DeletionTimestamp.IsZero() {
				continue
			}
			if p.Labels["fake-template-hash"] != hash {
				old++
				continue
			}
			current++
			if podReady(p) {
				ready++
			}
		}
		replicas := *d.Spec.Replicas
		for n := current; n < replicas; n++ {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				GenerateName: fmt.Sprintf("%s-%s-", d.Name, hash), Namespace: ns,
				Labels: map[string]string{"fake-template-hash": hash},
			}, Spec: d.Spec.Template.Spec}
			for k, v := range d.Spec.Template.Labels {
				p.Labels[k] = v
			}
			_ = controllerutil.SetControllerReference(d, p, scheme)
			_ = k8s.Create(ctx, p)
		}
		for j := range pods.Items {
			p := &pods.Items[j]
			ref := metav1.GetControllerOf(p)
			if ref == nil || ref.UID != d.UID || !p.DeletionTimestamp.IsZero() {
				continue
			}
			stale := p.Labels["fake-template-hash"] != hash && ready >= replicas
			surplus := p.Labels["fake-template-hash"] == hash && current > replicas
			if stale || surplus {
				_ = k8s.Delete(ctx, p)
				if surplus {
					current--
				}
			}
		}
		st := appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: current + old,
			ReadyReplicas: ready, AvailableReplicas: ready, UpdatedReplicas: current}
		if !equality.Semantic.DeepEqual(st, d.Status) {
			d.Status = st
			_ = k8s.Status().Update(ctx, d)
		}
	}
	for j := range pods.Items {
		p := &pods.Items[j]
		if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "Deployment" && !live[ref.UID] {
			_ = k8s.Delete(ctx, p)
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// createNodes adds n Nodes named prefix-i and removes them when the test ends.
func createNodes(t *testing.T, prefix string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}}
		if err := k8s.Create(testCtx, node); err != nil {
			t.Fatalf("create node: %v", err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	}
}

func deleteNodes(t *testing.T, prefix string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}}
		if err := k8s.Delete(testCtx, node); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete node: %v", err)
		}
	}
}

// reconcileCount reads controller-runtime's reconcile counter for the
// KSMScale controller from the in-process metrics registry.
func reconcileCount(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "ksmscale" {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// resourceVersions reads the resourceVersion of each object.
func resourceVersions(t *testing.T, objs ...client.Object) []string {
	t.Helper()
	out := make([]string, len(objs))
	for i, o := range objs {
		if err := k8s.Get(testCtx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatalf("get %T %s: %v", o, o.GetName(), err)
		}
		out[i] = o.GetResourceVersion()
	}
	return out
}

// assertQuiet checks that none of objs is written for the window: a
// converged operator makes no writes.
func assertQuiet(t *testing.T, window time.Duration, objs ...client.Object) {
	t.Helper()
	before := resourceVersions(t, objs...)
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		after := resourceVersions(t, objs...)
		for i := range objs {
			if after[i] != before[i] {
				t.Fatalf("%T %s was written during the quiet window: resourceVersion %s -> %s",
					objs[i], objs[i].GetName(), before[i], after[i])
			}
		}
	}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// gaugeSample finds a sample of a metric family in the in-process registry
// whose labels include want.
func gaugeSample(t *testing.T, family string, want map[string]string) (float64, bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func gauge(t *testing.T, family string, want map[string]string) float64 {
	t.Helper()
	v, ok := gaugeSample(t, family, want)
	if !ok {
		t.Errorf("no %s%v sample", family, want)
	}
	return v
}

func gaugeExists(t *testing.T, family string, want map[string]string) bool {
	t.Helper()
	_, ok := gaugeSample(t, family, want)
	return ok
}

// eventsFor lists the events.k8s.io Events about a KSMScale.
func eventsFor(t *testing.T, name string) []eventsv1.Event {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(testCtx, list); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "KSMScale" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}
