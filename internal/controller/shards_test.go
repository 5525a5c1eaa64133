package controller

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// written is a managedFields entry of one write.
func written(manager, subresource, fields string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate,
		Subresource: subresource, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
}

func TestObservePod(t *testing.T) {
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "obs"}}
	cfg := ksm.Resolve(k)
	rev := ksm.Revision(cfg, 3)
	since := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	// Ready and containers ready at once: the settle time counts once
	// Prometheus can have discovered the pod.
	discoverable := since.Add(ksm.DiscoveryAllowance)
	cond := func(typ corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: typ, Status: s, LastTransitionTime: since}
	}
	build := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := ksm.BuildShardPod(cfg, 1, 3)
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{cond(corev1.ContainersReady, true), cond(corev1.PodReady, true)}
		if mut != nil {
			mut(p)
		}
		return p
	}
	cases := []struct {
		name string
		pod  *corev1.Pod
		want ksm.ObservedPod
	}{
		{"ready pod of the target revision", build(nil),
			ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Active: true, Ready: true, ReadySince: discoverable}},
		{"probe failing: starting or broken, still ours to wait for", build(func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{cond(corev1.ContainersReady, false), cond(corev1.PodReady, false)}
		}), ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Active: true}},
		{"marked not Ready by the node lifecycle controller: node unreachable", build(func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{cond(corev1.ContainersReady, true), cond(corev1.PodReady, false)}
		}), ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Lost: true}},
		{"evicted", build(func(p *corev1.Pod) { p.Status.Phase, p.Status.Reason = corev1.PodFailed, "Evicted" }),
			ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Terminal: true, Ready: true, ReadySince: discoverable}},
		{"being deleted", build(func(p *corev1.Pod) { p.DeletionTimestamp = &since }),
			ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Ready: true, ReadySince: discoverable}},
		{"image set with kubectl loses its revision", build(func(p *corev1.Pod) {
			p.ManagedFields = append(p.ManagedFields, written("kubectl-set", "", `{"f:spec":{"f:containers":{"k:{\"name\":\"kube-state-metrics\"}":{"f:image":{}}}}}`))
		}), ksm.ObservedPod{Shard: 1, Total: 3, Active: true, Ready: true, ReadySince: discoverable}},
		{"sidecar injected and image rewritten at admission keeps its revision", build(func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "mirror.example.com/kube-state-metrics@sha256:0123"
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "istio/proxyv2:1"})
			p.ManagedFields = append(p.ManagedFields, written(FieldOwner, "", `{"f:spec":{"f:containers":{}}}`))
		}), ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Active: true, Ready: true, ReadySince: discoverable}},
		{"resized in place and debugged through subresources keeps its revision", build(func(p *corev1.Pod) {
			p.ManagedFields = append(p.ManagedFields,
				written("vpa-updater", "resize", `{"f:spec":{"f:containers":{}}}`),
				written("kubectl-debug", "ephemeralcontainers", `{"f:spec":{"f:ephemeralContainers":{}}}`),
				written("kubelet", "status", `{"f:status":{}}`),
				written("team-labeller", "", `{"f:metadata":{"f:labels":{"f:team":{}}}}`))
		}), ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Active: true, Ready: true, ReadySince: discoverable}},
		{"shard label edited loses its revision", build(func(p *corev1.Pod) { p.Labels[ksm.LabelShardID] = "2" }),
			ksm.ObservedPod{Shard: 1, Total: 3, Active: true, Ready: true, ReadySince: discoverable}},
		{"arguments edited: no shard, no revision", build(func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"--port=8080"} }),
			ksm.ObservedPod{Shard: -1, Total: 0, Active: true, Ready: true, ReadySince: discoverable}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := observePod(tc.pod, cfg.Name, 3, rev)
			tc.want.Name = tc.pod.Name
			if got != tc.want {
				t.Errorf("observePod =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestObservePodWithGate: with the metrics-verified gate, Ready counts only
// once the gate is True, the settle time counts from Ready (from the
// containers becoming ready when the pod took over unverified), and the
// moment between the gate turning True and kubelet flipping Ready is not
// mistaken for an unreachable node.
func TestObservePodWithGate(t *testing.T) {
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "gated"}}
	cfg := ksm.Resolve(k)
	cfg.VerifyHandover = true
	rev := ksm.Revision(cfg, 3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(s) * time.Second)) }
	cond := func(typ corev1.PodConditionType, ok bool, s int, reason string) corev1.PodCondition {
		st := corev1.ConditionFalse
		if ok {
			st = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: typ, Status: st, LastTransitionTime: at(s), Reason: reason}
	}
	build := func(conds ...corev1.PodCondition) *corev1.Pod {
		p := ksm.BuildShardPod(cfg, 1, 3)
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = conds
		return p
	}
	base := ksm.ObservedPod{Shard: 1, Total: 3, Revision: rev, Active: true}
	with := func(f func(*ksm.ObservedPod)) ksm.ObservedPod { o := base; f(&o); return o }
	cases := []struct {
		name string
		pod  *corev1.Pod
		want ksm.ObservedPod
	}{
		{"containers ready, gate not set: waiting, not Ready, not lost",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, false, 0, "ReadinessGatesNotReady")), base},
		{"gate just set, kubelet not caught up yet: not lost",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, false, 0, "ReadinessGatesNotReady"),
				cond(ksm.MetricsVerifiedGate, true, 20, "Verified")), base},
		{"kwok or a kubelet ignoring gates says Ready before the gate: not Ready",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, true, 1, "")), base},
		{"verified and Ready: settles from Ready, when the verification made it Ready",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, true, 20, ""), cond(ksm.MetricsVerifiedGate, true, 20, "Verified")),
			with(func(o *ksm.ObservedPod) { o.Ready, o.ReadySince = true, at(20).Time })},
		{"verified within seconds: settles once Prometheus can have discovered it",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, true, 3, ""), cond(ksm.MetricsVerifiedGate, true, 3, "Verified")),
			with(func(o *ksm.ObservedPod) { o.Ready, o.ReadySince = true, at(1).Add(ksm.DiscoveryAllowance) })},
		{"took over unverified: the settle time was served before the gate, counted from the containers",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, true, 31, ""), cond(ksm.MetricsVerifiedGate, true, 31, "Unverified")),
			with(func(o *ksm.ObservedPod) { o.Ready, o.ReadySince = true, at(1).Add(ksm.DiscoveryAllowance) })},
		{"verified, then marked not Ready by the node lifecycle controller: lost",
			build(cond(corev1.ContainersReady, true, 1, ""), cond(corev1.PodReady, false, 60, "NodeNotReady"), cond(ksm.MetricsVerifiedGate, true, 20, "Verified")),
			with(func(o *ksm.ObservedPod) { o.Active, o.Lost = false, true })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := observePod(tc.pod, cfg.Name, 3, rev)
			tc.want.Name, tc.want.Created = tc.pod.Name, tc.pod.CreationTimestamp.Time
			if got != tc.want {
				t.Errorf("observePod =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}
