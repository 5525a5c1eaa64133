package controller

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// exporter is a fake kube-state-metrics /metrics endpoint on loopback.
type exporter struct {
	srv  *httptest.Server
	body string
}

func newExporter(t *testing.T, c ksm.Counts) *exporter {
	e := &exporter{}
	e.set(c)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, e.body) }))
	t.Cleanup(e.srv.Close)
	return e
}

// set makes the endpoint export c[family] series of each family.
func (e *exporter) set(c ksm.Counts) {
	var b strings.Builder
	for f, n := range c {
		fmt.Fprintf(&b, "# TYPE %s gauge\n", f)
		for i := range n {
			fmt.Fprintf(&b, "%s{namespace=\"ns\",name=\"o%d\"} 1\n", f, i)
		}
	}
	e.body = b.String()
}

func (e *exporter) port() int32 {
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(e.srv.URL, "http://"))
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// verifyFixture is a KSMScale with node and namespace identities in a fake
// client, for the hand-over decisions alone (the e2e suite runs them against
// real kube-state-metrics).
type verifyFixture struct {
	t     *testing.T
	r     *KSMScaleReconciler
	k     *v1alpha1.KSMScale
	cfg   ksm.Config
	nodes []types.UID
	nss   []types.UID
	t0    time.Time
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	f := &verifyFixture{t: t, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.k = &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "v", UID: "ksm-uid"}}
	f.cfg = ksm.Resolve(f.k)
	f.cfg.VerifyHandover = true
	var objs []client.Object
	for i := range 40 {
		uid := types.UID(fmt.Sprintf("node-%d", i))
		f.nodes = append(f.nodes, uid)
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: string(uid), UID: uid}})
	}
	for i := range 9 {
		uid := types.UID(fmt.Sprintf("ns-%d", i))
		f.nss = append(f.nss, uid)
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: string(uid), UID: uid}})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&corev1.Pod{}).
		WithIndex(&corev1.Pod{}, ownerIndex, func(o client.Object) []string {
			if ref := metav1.GetControllerOf(o); ref != nil {
				return []string{string(ref.UID)}
			}
			return nil
		}).Build()
	f.r = &KSMScaleReconciler{Client: c, verify: newVerifier(true, time.Minute)}
	return f
}

// counts is what shard `shard` of `total` exports of the fixture's nodes and
// namespaces, plus pods and configmaps.
func (f *verifyFixture) counts(shard, total int32, pods, configmaps int) ksm.Counts {
	return ksm.Counts{ksm.FamilyPods: pods, "kube_configmap_info": configmaps,
		ksm.FamilyNodes: ksm.ShareOf(f.nodes, shard, total), ksm.FamilyNamespaces: ksm.ShareOf(f.nss, shard, total)}
}

// pod creates a shard pod served by e; verified pods are Ready with the gate
// True, the others have ready containers since t0 and no gate yet.
func (f *verifyFixture) pod(name string, shard, total int32, e *exporter, verified bool) {
	p := ksm.BuildShardPod(f.cfg, shard, total)
	p.Name, p.UID = name, types.UID("uid-"+name)
	if err := controllerutil.SetControllerReference(f.k, p, f.r.Scheme()); err != nil {
		f.t.Fatal(err)
	}
	p.Spec.Containers[0].Ports[0].ContainerPort = e.port()
	ready := metav1.NewTime(f.t0)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", Conditions: []corev1.PodCondition{
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: ready},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: ready},
	}}
	if verified {
		p.Status.Conditions[1].Status = corev1.ConditionTrue
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: ksm.MetricsVerifiedGate, Status: corev1.ConditionTrue, Reason: GateVerified})
	}
	if err := f.r.Create(context.Background(), p); err != nil {
		f.t.Fatal(err)
	}
}

// pass runs one verification pass at t0+after.
func (f *verifyFixture) pass(after time.Duration) time.Duration {
	s := &scope{ksm: f.k, cfg: f.cfg, now: f.t0.Add(after)}
	res, err := f.r.verifyHandovers(context.Background(), s)
	if err != nil {
		f.t.Fatal(err)
	}
	return res.RequeueAfter
}

// gate is the pod's gate reason and message, "" when not set.
func (f *verifyFixture) gate(name string) (string, string) {
	p := &corev1.Pod{}
	if err := f.r.Get(context.Background(), client.ObjectKey{Namespace: f.cfg.Namespace, Name: name}, p); err != nil {
		f.t.Fatal(err)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == ksm.MetricsVerifiedGate && c.Status == corev1.ConditionTrue {
			return c.Reason, c.Message
		}
	}
	return "", ""
}

func (f *verifyFixture) wantGate(name, reason, contains string) {
	f.t.Helper()
	got, msg := f.gate(name)
	if got != reason || !strings.Contains(msg, contains) {
		f.t.Errorf("pod %s gate %q (%s), want %q containing %q", name, got, msg, reason, contains)
	}
}

func TestVerifyRolloutComparesWithThePodReplaced(t *testing.T) {
	f := newVerifyFixture(t)
	old := newExporter(t, f.counts(0, 2, 500, 30))
	f.pod("old", 0, 2, old, true)
	fresh := newExporter(t, f.counts(0, 2, 0, 30)) // listed all but pods
	f.pod("new", 0, 2, fresh, false)

	if rq := f.pass(5 * time.Second); rq != verifyInterval {
		t.Errorf("requeue %s while waiting, want %s", rq, verifyInterval)
	}
	f.wantGate("new", "", "")
	fresh.set(f.counts(0, 2, 501, 30)) // the pod list arrived; one pod created meanwhile
	f.pass(7 * time.Second)
	f.wantGate("new", GateVerified, "as old does")
}

func TestVerifyFallsBackWhenShortAfterTheTimeout(t *testing.T) {
	f := newVerifyFixture(t)
	f.pod("old", 1, 2, newExporter(t, f.counts(1, 2, 500, 30)), true)
	f.pod("blind", 1, 2, newExporter(t, f.counts(1, 2, 500, 0)), false) // may not list configmaps
	if rq := f.pass(30 * time.Second); rq != verifyBackoff {
		t.Errorf("requeue %s after waiting 30s, want the backoff %s", rq, verifyBackoff)
	}
	f.wantGate("blind", "", "")
	f.pass(61 * time.Second)
	f.wantGate("blind", GateUnverified, "exports no kube_configmap_info series, expected 30")
}

func TestVerifyFallsBackToTheSettleTimeWhenUnreachable(t *testing.T) {
	f := newVerifyFixture(t)
	gone := newExporter(t, nil)
	gone.srv.Close() // nothing listens on its port any more
	f.pod("unreachable", 0, 2, gone, false)
	minReady := time.Duration(f.cfg.MinReadySeconds) * time.Second
	f.pass(minReady - time.Second)
	f.wantGate("unreachable", "", "")
	f.pass(minReady)
	f.wantGate("unreachable", GateUnverified, "cannot read its metrics")
}

func TestVerifyNewGenerationAgainstTheOldOne(t *testing.T) {
	f := newVerifyFixture(t)
	// The old generation: 2 shards, 600 pods and 40 configmaps between them.
	f.pod("old-0", 0, 2, newExporter(t, f.counts(0, 2, 310, 22)), true)
	f.pod("old-1", 1, 2, newExporter(t, f.counts(1, 2, 290, 18)), true)
	// The new one: 3 shards; shard 2 has not listed configmaps yet.
	e2 := newExporter(t, f.counts(2, 3, 200, 0))
	f.pod("new-0", 0, 3, newExporter(t, f.counts(0, 3, 205, 14)), false)
	f.pod("new-1", 1, 3, newExporter(t, f.counts(1, 3, 195, 13)), false)
	f.pod("new-2", 2, 3, e2, false)
	f.pass(5 * time.Second)
	for _, p := range []string{"new-0", "new-1", "new-2"} {
		f.wantGate(p, "", "")
	}
	e2.set(f.counts(2, 3, 200, 13))
	f.pass(7 * time.Second)
	for _, p := range []string{"new-0", "new-1", "new-2"} {
		f.wantGate(p, GateVerified, "the 3 shards together, as the 2-shard generation does")
	}
}

func TestVerifyChecksNodesAndNamespacesExactly(t *testing.T) {
	f := newVerifyFixture(t)
	c := f.counts(0, 2, 10, 1)
	c[ksm.FamilyNodes] += 5 // exports nodes of another shard: wrong --total-shards, say
	f.pod("first", 0, 2, newExporter(t, c), false)
	f.pass(time.Second)
	f.pass(3 * time.Second)
	f.wantGate("first", "", "")
	f.pass(61 * time.Second)
	f.wantGate("first", GateUnverified, "kube_node_info")
}

func TestVerifyFirstStartNeedsTwoEqualScrapes(t *testing.T) {
	f := newVerifyFixture(t)
	e := newExporter(t, f.counts(1, 2, 0, 0)) // nodes and namespaces only so far
	f.pod("first", 1, 2, e, false)
	if rq := f.pass(time.Second); rq != verifyInterval {
		t.Errorf("requeue %s while pods are not listed, want %s", rq, verifyInterval)
	}
	f.wantGate("first", "", "")
	e.set(f.counts(1, 2, 300, 20))
	// Nodes and namespaces are complete: what is left is to confirm the
	// counts hold, which needs no full interval.
	if rq := f.pass(3 * time.Second); rq != confirmAfter {
		t.Errorf("requeue %s while confirming, want %s", rq, confirmAfter)
	}
	f.wantGate("first", "", "") // changed since the previous scrape
	f.pass(3*time.Second + confirmAfter)
	f.wantGate("first", GateVerified, "unchanged since the previous scrape")
}

// TestVerifyNarrowedExportIsNotComparedWithTheWiderOne: a rollout that adds
// --resources exports fewer kinds on purpose; it must not wait for the
// verify timeout as if a kind were missing.
func TestVerifyNarrowedExportIsNotComparedWithTheWiderOne(t *testing.T) {
	f := newVerifyFixture(t)
	f.pod("wide", 0, 2, newExporter(t, f.counts(0, 2, 500, 30)), true)
	f.cfg.ExtraArgs = []string{"--resources=pods,nodes,namespaces"}
	f.pod("narrow", 0, 2, newExporter(t, f.counts(0, 2, 500, 0)), false)
	f.pass(time.Second)
	f.pass(3 * time.Second)
	f.wantGate("narrow", GateVerified, "nothing to compare with")
}
