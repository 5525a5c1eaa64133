package ksm

import (
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// BuildService is the headless Service through which Prometheus finds every
// kube-state-metrics pod of one KSMScale. It selects the instance's pods of
// both modes, so that scraping carries on without a gap while sharding is
// switched on or off; the instance label keeps two KSMScales of one namespace
// apart.
func BuildService(c Config) *corev1.Service {
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName(c.Name),
			Namespace: c.Namespace,
			Labels:    CommonLabels(c.Name),
		},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{LabelName: appName, LabelKSMScale: c.Name},
			Ports: []corev1.ServicePort{
				{Name: MetricsPortName, Port: MetricsPort, TargetPort: intstr.FromString(MetricsPortName), Protocol: corev1.ProtocolTCP},
				{Name: TelemetryPortName, Port: TelemetryPort, TargetPort: intstr.FromString(TelemetryPortName), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// BuildPDB limits voluntary disruptions of the shard pods to keep at least
// minAvailable of them. Unhealthy pods may always be evicted: a shard that is
// not Ready serves nothing, and keeping it would only block node drains.
func BuildPDB(c Config, minAvailable int32) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      PDBName(c.Name),
			Namespace: c.Namespace,
			Labels:    CommonLabels(c.Name),
		},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable:               ptr.To(intstr.FromInt32(minAvailable)),
			Selector:                   &metav1.LabelSelector{MatchLabels: ShardSelector(c.Name)},
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}
