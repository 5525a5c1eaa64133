//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
	"github.com/ksmscale/ksm-scale-operator/test/coverage"
	"github.com/ksmscale/ksm-scale-operator/test/metricwatch"
)

const (
	// migrationNamespace is where the chart-like KSM and the KSMScale that
	// replaces it run; it is on startOperator's --ksm-namespaces list.
	migrationNamespace = "migration"
	// chartRelease is the Helm release name of the KSM chart being replaced:
	// the chart names its Deployment, Service and ServiceAccount after it
	// and sets app.kubernetes.io/instance to it.
	chartRelease = "kube-state-metrics"
	// ksmClusterRole is the read-only role config/rbac ships for
	// kube-state-metrics; the chart would ship its own, of the same rules.
	ksmClusterRole = "ksm-scale-operator-kube-state-metrics"
	// ksmAppSelector selects every kube-state-metrics pod of a namespace,
	// the chart's and the operator's alike: both label
	// app.kubernetes.io/name=kube-state-metrics.
	ksmAppSelector = "app.kubernetes.io/name=kube-state-metrics"
)

// chartLabels are the labels the kube-state-metrics Helm chart puts on its
// pods; its selector (chartSelector) is the name and instance pair.
var (
	chartSelector = map[string]string{
		"app.kubernetes.io/name":     "kube-state-metrics",
		"app.kubernetes.io/instance": chartRelease,
	}
	chartLabels = map[string]string{
		"app.kubernetes.io/name":       "kube-state-metrics",
		"app.kubernetes.io/instance":   chartRelease,
		"app.kubernetes.io/component":  "metrics",
		"app.kubernetes.io/part-of":    "kube-state-metrics",
		"app.kubernetes.io/managed-by": "Helm",
		"app.kubernetes.io/version":    "2.20.0",
		"helm.sh/chart":                "kube-state-metrics-6.4.1",
	}
)

// chartObjects is what `helm install kube-state-metrics
// prometheus-community/kube-state-metrics` creates in the namespace, minus
// its ClusterRole (the shipped one has the same rules).
type chartObjects struct {
	sa         *corev1.ServiceAccount
	binding    *rbacv1.ClusterRoleBinding
	service    *corev1.Service
	deployment *appsv1.Deployment
}

func newChartObjects(ns string) chartObjects {
	podLabels := map[string]string{}
	for k, v := range chartLabels {
		podLabels[k] = v
	}
	// Not a chart label: it is this suite's marker for "real
	// kube-state-metrics behind this pod" (test/kubelet runs the pods that
	// carry the key, kwok the others). Without it the chart's KSM would be
	// a kwok pod that is Ready and exports nothing. The operator ignores
	// it: it only manages pods it owns (controller reference), and no
	// KSMScale is named chart-ksm.
	podLabels[ksmPodLabel] = "chart-ksm"
	return chartObjects{
		sa: &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: chartRelease, Labels: chartLabels}},
		binding: &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: chartRelease, Labels: chartLabels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ksmClusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: chartRelease, Namespace: ns}},
		},
		service: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: chartRelease, Labels: chartLabels,
				Annotations: map[string]string{"prometheus.io/scrape": "true"}},
			Spec: corev1.ServiceSpec{
				Selector: chartSelector,
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080,
					TargetPort: intstr.FromInt32(8080)}},
			},
		},
		deployment: &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: chartRelease, Labels: chartLabels},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: chartSelector},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
					Spec: corev1.PodSpec{
						ServiceAccountName: chartRelease,
						SecurityContext: &corev1.PodSecurityContext{
							RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65534), RunAsGroup: ptr.To[int64](65534),
							FSGroup: ptr.To[int64](65534), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						Containers: []corev1.Container{{
							Name:            "kube-state-metrics",
							Image:           "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
							ImagePullPolicy: corev1.PullIfNotPresent,
							Args:            []string{"--port=8080", "--telemetry-port=8081"},
							Ports: []corev1.ContainerPort{
								{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
								{Name: "metrics", ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
							},
							LivenessProbe: &corev1.Probe{
								ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(8080)}},
								InitialDelaySeconds: 5, TimeoutSeconds: 5, PeriodSeconds: 10, FailureThreshold: 3,
							},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8081)}},
								InitialDelaySeconds: 1, TimeoutSeconds: 5, PeriodSeconds: 2, FailureThreshold: 3,
							},
							SecurityContext: &corev1.SecurityContext{
								AllowPrivilegeEscalation: ptr.To(false),
								Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
								ReadOnlyRootFilesystem:   ptr.To(true),
							},
						}},
					},
				},
			},
		},
	}
}

// objects lists them in `helm uninstall`'s order (Service, Deployment,
// ClusterRoleBinding, ServiceAccount: Helm's UninstallOrder), which is the
// reverse of the order they are created in here.
func (c chartObjects) objects() []client.Object {
	return []client.Object{c.service, c.deployment, c.binding, c.sa}
}

// install creates the chart's objects, deletes whatever is left of them when
// t ends, and waits for the Deployment's one replica to be Ready.
func (c chartObjects) install(t *testing.T) {
	t.Helper()
	objs := c.objects()
	for i := len(objs) - 1; i >= 0; i-- {
		if err := k8s.Create(suiteCtx, objs[i]); err != nil {
			t.Fatalf("create %T %s: %v", objs[i], objs[i].GetName(), err)
		}
	}
	t.Cleanup(func() { c.uninstall(t) })
	eventually(t, 120*time.Second, "the chart's Deployment available", func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(suiteCtx, client.ObjectKeyFromObject(c.deployment), d); err != nil {
			return err
		}
		if d.Status.ObservedGeneration != d.Generation || d.Status.ReadyReplicas != 1 || d.Status.UpdatedReplicas != 1 {
			return fmt.Errorf("%d ready, %d updated replicas", d.Status.ReadyReplicas, d.Status.UpdatedReplicas)
		}
		return nil
	})
}

// uninstall is `helm uninstall`: it deletes the release's objects in Helm's
// order, with background propagation (the Deployment's ReplicaSet and pod go
// by garbage collection), and does not wait for the pods to go.
func (c chartObjects) uninstall(t *testing.T) {
	t.Helper()
	for _, o := range c.objects() {
		if err := k8s.Delete(suiteCtx, o, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			t.Errorf("delete %T %s: %v", o, o.GetName(), err)
		}
	}
}

// chartPods lists the pods the chart's Deployment selects, terminating ones
// included.
func chartPods(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	list := &corev1.PodList{}
	if err := k8s.List(suiteCtx, list, client.InNamespace(ns), client.MatchingLabels(chartSelector)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// TestMigrationFromChart performs docs/migration.md's migration from the
// kube-state-metrics Helm chart on a cluster of 3,000 pods, with real
// kube-state-metrics behind the chart's pod and the KSMScale's: install a
// KSMScale beside the release, wait for it Ready, then `helm uninstall` the
// release. Judged by what every serving kube-state-metrics pod of the
// namespace exports (test/metricwatch) and by pod readiness
// (test/coverage), from before the KSMScale is created until after the
// chart's pod is gone: no object may go unexported for a single scrape.
// Objects exported twice during the overlap are expected and reported.
//
// It also checks the traps the guide names: the release's Service must not
// select the operator's pods (the KSMScale is not named like the release),
// and deleting the release's ServiceAccount `kube-state-metrics` must leave
// the operator's pods alone (they run as kube-state-metrics-<name>).
func TestMigrationFromChart(t *testing.T) {
	const ns, name = migrationNamespace, "cluster-ksm"
	ensureNamespace(t, ns)
	seedWorkload(t)
	startOperator(t, t, "operator-migration")
	// The watchers below take every KSM pod of the namespace as serving the
	// cluster: a leftover of an earlier test could cover a gap of the
	// migration, so start from none.
	eventually(t, 120*time.Second, "no kube-state-metrics pod left in "+ns, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(suiteCtx, metav1.ListOptions{LabelSelector: ksmAppSelector})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n > 0 {
			return fmt.Errorf("%d pods, e.g. %s", n, pods.Items[0].Name)
		}
		return nil
	})

	// Before: the release as `helm install` leaves it.
	chart := newChartObjects(ns)
	chart.install(t)

	// Every serving KSM pod of the namespace, whoever runs it: the union of
	// what they export is what Prometheus, scraping both jobs, has.
	pw, err := coverage.Watch(suiteCtx, cs, ns, ksmAppSelector, "kube-state-metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pw.Stop)
	mw, err := metricwatch.Start(suiteCtx, metricwatch.Options{
		Config:  cluster.RESTConfig(),
		Targets: metricwatch.PodTargets(cs, ns, ksmAppSelector, 8080),
		Logf:    t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mw.Stop)
	w := &watchers{pods: pw, metrics: mw}

	// The starting point must itself be complete: KSM is Ready before its
	// first list is in, so wait until the chart's pod exports every object.
	eventually(t, 120*time.Second, "the chart's kube-state-metrics exports every object", func() error {
		m := mw.Report()
		if m.Ticks == 0 || m.Last.Targets != 1 || m.Last.FailedTargets > 0 || m.Last.Missing > 0 {
			return fmt.Errorf("last tick: %d targets, %d failed, %d objects missing (%v)", m.Last.Targets, m.Last.FailedTargets, m.Last.Missing, m.Last.MissingExamples)
		}
		return nil
	})
	w.reset()

	// Steps: the KSMScale beside the release, under another name, and
	// `kubectl wait` exactly as the guide says.
	createSharded(t, ns, name, 3, 1, nil)
	if out, err := kubectl("wait", "--for=condition=Ready", "ksms/"+name, "--timeout=60s"); err != nil {
		t.Fatalf("kubectl wait, as docs/migration.md says: %v\n%s", err, out)
	}
	shards := activePods(t, ns, name)

	// Trap 1: the release's Service (and Deployment) must not select the
	// operator's pods, or Prometheus scrapes them twice through the old
	// ServiceMonitor. EndpointSlices cannot hold the pods' loopback IPs on
	// this cluster, so the selection is checked as the endpoints controller
	// makes it: the Service's selector against the pods' labels.
	svc := &corev1.Service{}
	if err := k8s.Get(suiteCtx, client.ObjectKeyFromObject(chart.service), svc); err != nil {
		t.Fatal(err)
	}
	svcSel := labels.SelectorFromSet(svc.Spec.Selector)
	if cp := chartPods(t, ns); len(cp) != 1 || !svcSel.Matches(labels.Set(cp[0].Labels)) {
		t.Fatalf("the chart's Service %v should select the chart's one pod; pods %d", svcSel, len(cp))
	}
	opSvc := &corev1.Service{}
	if err := k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: ksm.ServiceName(name)}, opSvc); err != nil {
		t.Fatal(err)
	}
	opSel := labels.SelectorFromSet(opSvc.Spec.Selector)
	for _, p := range shards {
		if svcSel.Matches(labels.Set(p.Labels)) {
			t.Errorf("the chart's Service (selector %s) selects the operator's pod %s: its ServiceMonitor would scrape it too", svcSel, p.Name)
		}
		if !opSel.Matches(labels.Set(p.Labels)) {
			t.Errorf("the operator's Service (selector %s) does not select its pod %s", opSel, p.Name)
		}
	}
	// The trap is real: the same pod of a KSMScale named like the release
	// (instance kube-state-metrics) would be selected. That is why the guide
	// says to pick another name.
	if len(shards) > 0 {
		same := labels.Set{}
		for k, v := range shards[0].Labels {
			same[k] = v
		}
		same["app.kubernetes.io/instance"] = chartRelease
		if !svcSel.Matches(same) {
			t.Errorf("the chart's Service (selector %s) would not select a KSMScale named %q either: the check above proves nothing", svcSel, chartRelease)
		}
	}
	for _, p := range chartPods(t, ns) {
		if opSel.Matches(labels.Set(p.Labels)) {
			t.Errorf("the operator's Service (selector %s) selects the chart's pod %s", opSel, p.Name)
		}
	}
	// Trap 2: the ServiceAccount `helm uninstall` deletes is not the one
	// the operator's pods run as.
	for _, p := range shards {
		if sa := p.Spec.ServiceAccountName; sa == chartRelease || sa != ksm.ServiceAccountName(name) {
			t.Errorf("pod %s runs as ServiceAccount %q, want %q (not the chart's %q)", p.Name, sa, ksm.ServiceAccountName(name), chartRelease)
		}
	}

	// The guide checks that the new shards export what the old KSM does
	// before removing it; here the watcher has done that at every tick.
	if m := mw.Report(); m.MissingObjectSeconds != 0 || m.Last.Missing != 0 {
		t.Fatalf("before helm uninstall: %s", m)
	}

	// `helm uninstall kube-state-metrics`.
	chart.uninstall(t)
	eventually(t, 60*time.Second, "the chart's pod gone", func() error {
		if n := len(chartPods(t, ns)); n > 0 {
			return fmt.Errorf("%d pods left", n)
		}
		return nil
	})
	for _, o := range chart.objects() {
		if err := k8s.Get(suiteCtx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s still there after helm uninstall: %v", o, o.GetName(), err)
		}
	}

	// The whole migration, judged past the chart's pod's end plus a few
	// ticks beyond the watcher's grace window.
	res := measure(t, w, "migration from the KSM chart (1 -> 3 shards)", false, "overlap: chart + KSMScale both serve")
	fmt.Printf("e2e migration: %s\n", mw.Report())
	if res.dup == 0 {
		t.Errorf("no duplicate object-seconds: the watcher never saw the chart's KSM and the KSMScale serve together, so it did not judge the hand-over")
	}

	// The operator's pods are the ones from before: not deleted, not
	// restarted, still Ready, with their own ServiceAccount in place.
	after := waitConverged(t, ns, name, 3, 30*time.Second)
	uids := map[types.UID]bool{}
	for _, p := range after {
		uids[p.UID] = true
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount > 0 {
				t.Errorf("pod %s container %s restarted %d times", p.Name, c.Name, c.RestartCount)
			}
		}
	}
	for _, p := range shards {
		if !uids[p.UID] {
			t.Errorf("pod %s (%s) was replaced during the migration", p.Name, p.UID)
		}
	}
	if err := k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: ksm.ServiceAccountName(name)}, &corev1.ServiceAccount{}); err != nil {
		t.Errorf("the KSMScale's ServiceAccount: %v", err)
	}
}
