package sts

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ksmscale/ksm-scale-operator/test/coverage"
)

const stsName = "ksm-orderedready"

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

type podState int

const (
	ready podState = iota
	pending
	deleting
	failed
)

func pod(i int, st podState) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", stsName, i), Namespace: "bench"},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	switch st {
	case pending:
		p.Status = corev1.PodStatus{Phase: corev1.PodPending}
	case deleting:
		ts := metav1.NewTime(t0)
		p.DeletionTimestamp = &ts
	case failed:
		p.Status.Phase = corev1.PodFailed
	}
	return p
}

// cluster is a scripted pod set: state per ordinal, absent when missing.
type cluster map[int]podState

func (c cluster) pods() []*corev1.Pod {
	var out []*corev1.Pod
	for i, st := range c {
		out = append(out, pod(i, st))
	}
	return out
}

func allReady(n int) cluster {
	c := cluster{}
	for i := range n {
		c[i] = ready
	}
	return c
}

func TestOrdinal(t *testing.T) {
	for name, want := range map[string]int{
		stsName + "-0":            0,
		stsName + "-12":           12,
		stsName + "-":             -1,
		stsName + "-01":           -1,
		stsName + "-x":            -1,
		stsName + "--1":           -1,
		"ksm-parallel-1":          -1,
		stsName + "-1-abcde":      -1,
		"other-" + stsName + "-1": -1,
	} {
		if got := Ordinal(stsName, name); got != want {
			t.Errorf("Ordinal(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestServing(t *testing.T) {
	noCond := pod(0, ready)
	noCond.Status.Conditions = nil
	notReady := pod(0, ready)
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	succeeded := pod(0, ready)
	succeeded.Status.Phase = corev1.PodSucceeded
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"ready", pod(0, ready), true},
		{"pending", pod(0, pending), false},
		{"deleting", pod(0, deleting), false},
		{"failed", pod(0, failed), false},
		{"succeeded", succeeded, false},
		{"no condition", noCond, false},
		{"not ready", notReady, false},
	} {
		if got := coverage.Serving(tc.pod); got != tc.want {
			t.Errorf("%s: Serving = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRollingUpdate scripts an OrderedReady rolling update of 10 shards from
// the highest ordinal down: each pod is marked for deletion, disappears, is
// recreated Pending and becomes Ready, and only then is the next one touched.
func TestRollingUpdate(t *testing.T) {
	tr := NewTracker(stsName, 10)
	c := allReady(10)
	tr.Observe(at(-10), c.pods())
	tr.Observe(at(-5), c.pods())
	if r := tr.Report(at(-1)); r.Total != 0 || r.Count != 0 || r.Any != 0 || len(r.PerShard) != 10 {
		t.Fatalf("before the rollout: %+v", r)
	}

	tr.Reset(at(0))
	// pod-9: deleted at 0, gone at 1, recreated at 2, Ready at 5.
	c[9] = deleting
	tr.Observe(at(0), c.pods())
	delete(c, 9)
	tr.Observe(at(1), c.pods())
	c[9] = pending
	tr.Observe(at(2), c.pods())
	c[9] = ready
	tr.Observe(at(5), c.pods())
	// pod-8: deleted at 5.5, Ready at 8.
	c[8] = deleting
	tr.Observe(at(5.5), c.pods())
	delete(c, 8)
	c[8] = pending
	tr.Observe(at(6), c.pods())
	c[8] = ready
	tr.Observe(at(8), c.pods())
	// pod-7: deleted at 8 (same instant its predecessor became Ready), still
	// Pending when the report is taken at 10.
	c[7] = deleting
	tr.Observe(at(8), c.pods())
	delete(c, 7)
	c[7] = pending
	tr.Observe(at(9), c.pods())

	r := tr.Report(at(10))
	want := map[int]time.Duration{9: 5 * time.Second, 8: 2500 * time.Millisecond, 7: 2 * time.Second}
	for i := range 7 {
		want[i] = 0
	}
	if diff := cmp.Diff(want, r.PerShard); diff != "" {
		t.Errorf("PerShard (-want +got):\n%s", diff)
	}
	wantIntervals := map[int][]Interval{
		9: {{From: at(0), To: at(5)}},
		8: {{From: at(5.5), To: at(8)}},
		7: {{From: at(8), To: at(10)}},
	}
	if diff := cmp.Diff(wantIntervals, r.ShardIntervals); diff != "" {
		t.Errorf("ShardIntervals (-want +got):\n%s", diff)
	}
	if r.Total != 9500*time.Millisecond || r.MaxShard != 5*time.Second || r.Count != 3 {
		t.Errorf("Total %s, MaxShard %s, Count %d; want 9.5s, 5s, 3", r.Total, r.MaxShard, r.Count)
	}
	// 8 and 7 touch at t=8, so the union has two intervals: [0,5] and [5.5,10].
	wantUnion := []Interval{{From: at(0), To: at(5)}, {From: at(5.5), To: at(10)}}
	if diff := cmp.Diff(wantUnion, r.AnyIntervals); diff != "" {
		t.Errorf("AnyIntervals (-want +got):\n%s", diff)
	}
	if r.Any != 9500*time.Millisecond {
		t.Errorf("Any = %s, want 9.5s", r.Any)
	}
	if !slices.Equal(r.UncoveredNow, []int{7}) || r.Shards != 10 || !r.From.Equal(at(0)) || !r.To.Equal(at(10)) {
		t.Errorf("UncoveredNow %v, Shards %d, From %s, To %s", r.UncoveredNow, r.Shards, r.From, r.To)
	}
	if s := r.String(); !strings.Contains(s, "uncovered 9.5s shard-time in 3 intervals") {
		t.Errorf("String() = %q", s)
	}

	// Reporting again later extends only the open interval; reporting does
	// not change the tracker.
	if r2 := tr.Report(at(11)); r2.PerShard[7] != 3*time.Second || r2.Total != 10500*time.Millisecond {
		t.Errorf("later report: %s", r2)
	}
}

// TestParallelOverlap: two shards uncovered at once count twice in Total but
// once in the union.
func TestParallelOverlap(t *testing.T) {
	tr := NewTracker(stsName, 4)
	c := allReady(4)
	tr.Observe(at(0), c.pods())
	c[2], c[3] = deleting, pending
	tr.Observe(at(1), c.pods())
	c[3] = ready
	tr.Observe(at(3), c.pods())
	c[2] = failed
	tr.Observe(at(4), c.pods())
	c[2] = ready
	tr.Observe(at(6), c.pods())
	r := tr.Report(at(7))
	if r.Total != 7*time.Second || r.MaxShard != 5*time.Second || r.Count != 2 {
		t.Errorf("Total %s, Max %s, Count %d; want 7s, 5s, 2", r.Total, r.MaxShard, r.Count)
	}
	if diff := cmp.Diff([]Interval{{From: at(1), To: at(6)}}, r.AnyIntervals); diff != "" {
		t.Errorf("AnyIntervals (-want +got):\n%s", diff)
	}
	if len(r.UncoveredNow) != 0 {
		t.Errorf("UncoveredNow = %v", r.UncoveredNow)
	}
}

// TestScaleDown: shards removed by SetReplicas stop counting at once, even
// while their pods are still terminating; a shard that was uncovered when
// removed keeps the uncovered time it had.
func TestScaleDown(t *testing.T) {
	tr := NewTracker(stsName, 4)
	c := allReady(4)
	tr.Observe(at(0), c.pods())
	c[3] = deleting // a straggler of some earlier change
	tr.Observe(at(1), c.pods())
	tr.Reset(at(2))
	tr.SetReplicas(at(2.5), 2)
	c[2] = deleting
	tr.Observe(at(3), c.pods())
	delete(c, 3)
	delete(c, 2)
	tr.Observe(at(4), c.pods())
	r := tr.Report(at(5))
	want := map[int]time.Duration{0: 0, 1: 0, 2: 0, 3: 500 * time.Millisecond}
	if diff := cmp.Diff(want, r.PerShard); diff != "" {
		t.Errorf("PerShard (-want +got):\n%s", diff)
	}
	if r.Shards != 2 || r.Total != 500*time.Millisecond || r.Count != 1 || r.Any != 500*time.Millisecond {
		t.Errorf("report: %s", r)
	}
	// After another Reset only the counted shards appear.
	tr.Reset(at(6))
	if r := tr.Report(at(7)); len(r.PerShard) != 2 || r.Total != 0 {
		t.Errorf("after reset: %+v", r)
	}
}

// TestScaleUp: new shards count from SetReplicas, uncovered until Ready.
func TestScaleUp(t *testing.T) {
	tr := NewTracker(stsName, 2)
	c := allReady(2)
	tr.Observe(at(0), c.pods())
	tr.Reset(at(1))
	tr.SetReplicas(at(1), 4)
	c[2], c[3] = pending, pending
	tr.Observe(at(1.5), c.pods())
	c[2] = ready
	tr.Observe(at(2), c.pods())
	c[3] = ready
	tr.Observe(at(3), c.pods())
	r := tr.Report(at(4))
	want := map[int]time.Duration{0: 0, 1: 0, 2: time.Second, 3: 2 * time.Second}
	if diff := cmp.Diff(want, r.PerShard); diff != "" {
		t.Errorf("PerShard (-want +got):\n%s", diff)
	}
	if r.Any != 2*time.Second || len(r.AnyIntervals) != 1 {
		t.Errorf("union: %v", r.AnyIntervals)
	}
}

// TestResetWhileUncovered: an interval open at Reset counts from the Reset.
func TestResetWhileUncovered(t *testing.T) {
	tr := NewTracker(stsName, 2)
	tr.Observe(at(0), cluster{0: ready, 1: pending}.pods())
	tr.Reset(at(3))
	tr.Observe(at(4), allReady(2).pods())
	r := tr.Report(at(5))
	if diff := cmp.Diff(map[int][]Interval{1: {{From: at(3), To: at(4)}}}, r.ShardIntervals); diff != "" {
		t.Errorf("ShardIntervals (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Interval{{From: at(3), To: at(4)}}, r.AnyIntervals); diff != "" {
		t.Errorf("AnyIntervals (-want +got):\n%s", diff)
	}
}

// TestBeforeObserve: nothing is recorded until the pod state is known, and
// zero-length intervals are dropped.
func TestBeforeObserve(t *testing.T) {
	tr := NewTracker(stsName, 3)
	tr.SetReplicas(at(0), 3)
	tr.Reset(at(1))
	if r := tr.Report(at(2)); r.Total != 0 || r.Count != 0 || len(r.UncoveredNow) != 0 {
		t.Errorf("before Observe: %+v", r)
	}
	tr.Observe(at(3), nil)
	tr.Observe(at(3), allReady(3).pods())
	if r := tr.Report(at(4)); r.Count != 0 || len(r.AnyIntervals) != 0 || !r.From.Equal(at(3)) {
		t.Errorf("zero-length: %+v", r)
	}
}

func TestStatefulSet(t *testing.T) {
	s := StatefulSet("bench", "ksm-parallel", "img:1", 7, appsv1.ParallelPodManagement)
	if s.Namespace != "bench" || s.Name != "ksm-parallel" || *s.Spec.Replicas != 7 ||
		s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement || s.Spec.ServiceName != "ksm-parallel" ||
		s.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("spec: %+v", s.Spec)
	}
	for k, v := range s.Spec.Selector.MatchLabels {
		if s.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template labels %v", k, v, s.Spec.Template.Labels)
		}
	}
	if got := s.Spec.Template.Labels[InstanceLabel]; got != "ksm-parallel" {
		t.Errorf("instance label %q", got)
	}
	ps := s.Spec.Template.Spec
	if ps.ServiceAccountName != ServiceAccountName || ps.AutomountServiceAccountToken == nil || !*ps.AutomountServiceAccountToken {
		t.Errorf("service account: %q %v", ps.ServiceAccountName, ps.AutomountServiceAccountToken)
	}
	ct := ps.Containers[0]
	wantArgs := []string{"--pod=$(POD_NAME)", "--pod-namespace=$(POD_NAMESPACE)", "--port=8080", "--telemetry-port=8081"}
	if ct.Name != ContainerName || ct.Image != "img:1" || !slices.Equal(ct.Args, wantArgs) {
		t.Errorf("container: %s %s %v", ct.Name, ct.Image, ct.Args)
	}
	env := map[string]string{}
	for _, e := range ct.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if diff := cmp.Diff(map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}, env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if ct.LivenessProbe.HTTPGet.Path != "/livez" || ct.LivenessProbe.HTTPGet.Port.IntValue() != 8080 ||
		ct.ReadinessProbe.HTTPGet.Path != "/readyz" || ct.ReadinessProbe.HTTPGet.Port.IntValue() != 8081 {
		t.Errorf("probes: %+v %+v", ct.LivenessProbe.HTTPGet, ct.ReadinessProbe.HTTPGet)
	}
	sc := ct.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser != 65534 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("securityContext: %+v", sc)
	}

	svc := HeadlessService("bench", "ksm-parallel")
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Name != s.Spec.ServiceName || len(svc.Spec.Ports) != 2 {
		t.Errorf("service: %+v", svc.Spec)
	}
	if diff := cmp.Diff(s.Spec.Selector.MatchLabels, svc.Spec.Selector); diff != "" {
		t.Errorf("service selector (-sts +svc):\n%s", diff)
	}
	if Selector("ksm-parallel") != "app.kubernetes.io/name=kube-state-metrics,app.kubernetes.io/instance=ksm-parallel" {
		t.Errorf("Selector = %q", Selector("ksm-parallel"))
	}
	if Name(appsv1.OrderedReadyPodManagement) != "ksm-orderedready" || Name(appsv1.ParallelPodManagement) != "ksm-parallel" {
		t.Errorf("Name: %s %s", Name(appsv1.OrderedReadyPodManagement), Name(appsv1.ParallelPodManagement))
	}
}

// TestConditions covers the wait conditions of Run.
func TestConditions(t *testing.T) {
	s := StatefulSet("bench", stsName, "img:2", 3, appsv1.OrderedReadyPodManagement)
	s.Generation = 2
	s.Status = appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 3, UpdatedReplicas: 3,
		CurrentRevision: "rev-b", UpdateRevision: "rev-b"}
	pods := func(rev string, n int) []*corev1.Pod {
		var out []*corev1.Pod
		for i := range n {
			p := pod(i, ready)
			p.Labels = map[string]string{appsv1.ControllerRevisionHashLabelKey: rev}
			p.Spec.Containers = []corev1.Container{{Name: ContainerName, Image: "img:2"}}
			out = append(out, p)
		}
		return out
	}
	check := func(name string, cond condition, s *appsv1.StatefulSet, ps []*corev1.Pod, want bool) {
		t.Helper()
		if got, why := cond(s, ps); got != want {
			t.Errorf("%s: got %v (%s), want %v", name, got, why, want)
		}
	}
	check("settled", settled(2, 3), s, pods("rev-b", 3), true)
	check("missing sts", settled(2, 3), nil, pods("rev-b", 3), false)
	check("old generation", settled(3, 3), s, pods("rev-b", 3), false)
	check("extra pod", settled(2, 3), s, pods("rev-b", 4), false)
	check("missing pod", settled(2, 3), s, pods("rev-b", 2), false)
	check("rolled out", rolledOut(2, 3, "img:2"), s, pods("rev-b", 3), true)
	check("old pod revision", rolledOut(2, 3, "img:2"), s, pods("rev-a", 3), false)
	check("other image", rolledOut(2, 3, "img:3"), s, pods("rev-b", 3), false)
	half := s.DeepCopy()
	half.Status.CurrentRevision = "rev-a"
	check("revisions differ", rolledOut(2, 3, "img:2"), half, pods("rev-b", 3), false)
	notReady := pods("rev-b", 3)
	notReady[1] = pod(1, pending)
	check("pod not ready", settled(2, 3), s, notReady, false)
}

// TestRBAC checks the grants KSM's autosharding needs: its own pod and the
// StatefulSet by name in its namespace, and the objects cluster-wide.
func TestRBAC(t *testing.T) {
	r := Role("bench", "ksm-parallel")
	if len(r.Rules) != 2 || !slices.Equal(r.Rules[0].Resources, []string{"pods"}) || !slices.Equal(r.Rules[0].Verbs, []string{"get"}) ||
		!slices.Equal(r.Rules[1].ResourceNames, []string{"ksm-parallel"}) || !slices.Equal(r.Rules[1].Verbs, []string{"get", "list", "watch"}) {
		t.Errorf("role rules: %+v", r.Rules)
	}
	rb := RoleBinding("bench", "ksm-parallel")
	if rb.RoleRef.Name != r.Name || rb.RoleRef.Kind != "Role" || rb.Subjects[0].Name != ServiceAccountName || rb.Subjects[0].Namespace != "bench" {
		t.Errorf("role binding: %+v", rb)
	}
	crb := ClusterRoleBinding("bench", "reader")
	if crb.RoleRef.Name != "reader" || crb.RoleRef.Kind != "ClusterRole" || crb.Subjects[0].Name != ServiceAccountName || crb.Subjects[0].Namespace != "bench" {
		t.Errorf("cluster role binding: %+v", crb)
	}
}
