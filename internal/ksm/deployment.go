package ksm

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// BuildDeployment is the unsharded kube-state-metrics workload: `replicas`
// identical instances, each exporting every object. Its rolling update never
// takes a Ready replica away before its successor is Ready. It carries the
// hash of its spec (AnnotationSpecHash), by which the operator recognises it.
func BuildDeployment(c Config, replicas int32) *appsv1.Deployment {
	podLabels := merge(CommonLabels(c.Name), UnshardedSelector(c.Name))
	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      DeploymentName(c.Name),
			Namespace: c.Namespace,
			Labels:    podLabels,
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr.To(replicas),
			RevisionHistoryLimit: ptr.To[int32](3),
			// A new replica counts as available, and an old one is removed,
			// only after it has been Ready this long: a shard's settle time.
			// With verified hand-overs Ready waits for the pod's metrics, and
			// this is the time every Prometheus needs to scrape it once, plus
			// the time it may take to discover it (DiscoveryAllowance; a
			// Deployment has only this one knob, so it counts from Ready).
			MinReadySeconds: c.MinReadySeconds + int32(DiscoveryAllowance/time.Second),
			Selector:        &metav1.LabelSelector{MatchLabels: UnshardedSelector(c.Name)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec:       podSpec(c, UnshardedArgs(c), nil),
			},
		},
	}
	d.Annotations = map[string]string{AnnotationSpecHash: hashOf(d.Spec)}
	return d
}
