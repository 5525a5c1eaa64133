// Package sts benchmarks the alternative to the operator that users pick
// today: kube-state-metrics' own StatefulSet "autosharding", where every pod
// of an N-replica StatefulSet is started with --pod and --pod-namespace and
// derives its shard from its ordinal and the total from the StatefulSet's
// replicas.
//
// The package builds the StatefulSet as KSM's examples/autosharding manifests
// do, measures per-shard coverage from pod readiness (a shard i is covered
// while pod <sts>-<i> is Ready), and runs one create / rollout / scale cycle
// against a cluster. On the local kwok cluster the containers never run, so
// everything is measured from pod readiness only, as test/coverage does for
// the operator.
package sts

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	// ContainerName is the kube-state-metrics container of every pod.
	ContainerName = "kube-state-metrics"
	// ServiceAccountName is the ServiceAccount the pods run as.
	ServiceAccountName = "kube-state-metrics"

	// NameLabel and InstanceLabel select the pods of one StatefulSet.
	NameLabel     = "app.kubernetes.io/name"
	InstanceLabel = "app.kubernetes.io/instance"
	componentLbl  = "app.kubernetes.io/component"

	portMetrics   = "http-metrics"
	portTelemetry = "telemetry"
)

// Labels are the labels of the StatefulSet, its pods and its Service; they
// are also the selector, so several StatefulSets can share a namespace.
func Labels(name string) map[string]string {
	return map[string]string{NameLabel: "kube-state-metrics", InstanceLabel: name}
}

// Selector is Labels(name) as a label selector string.
func Selector(name string) string {
	return NameLabel + "=kube-state-metrics," + InstanceLabel + "=" + name
}

// StatefulSet is KSM's autosharding StatefulSet (examples/autosharding of
// kube-state-metrics v2.20.0) with replicas shards, the given image and pod
// management policy, and the headless Service called name as serviceName.
func StatefulSet(namespace, name, image string, replicas int32, policy appsv1.PodManagementPolicyType) *appsv1.StatefulSet {
	podLabels := Labels(name)
	podLabels[componentLbl] = "exporter"
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: copyLabels(podLabels)},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			Selector:            &metav1.LabelSelector{MatchLabels: Labels(name)},
			ServiceName:         name,
			PodManagementPolicy: policy,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: copyLabels(podLabels)},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(true),
					ServiceAccountName:           ServiceAccountName,
					NodeSelector:                 map[string]string{corev1.LabelOSStable: "linux"},
					Containers: []corev1.Container{{
						Name:  ContainerName,
						Image: image,
						Args: []string{
							"--pod=$(POD_NAME)",
							"--pod-namespace=$(POD_NAMESPACE)",
							"--port=8080",
							"--telemetry-port=8081",
						},
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
						},
						Ports: []corev1.ContainerPort{
							{Name: portMetrics, ContainerPort: 8080},
							{Name: portTelemetry, ContainerPort: 8081},
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(8080)}},
							InitialDelaySeconds: 5,
							TimeoutSeconds:      5,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8081)}},
							InitialDelaySeconds: 5,
							TimeoutSeconds:      5,
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							RunAsUser:                ptr.To[int64](65534),
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
					}},
				},
			},
		},
	}
}

// HeadlessService is the StatefulSet's governing Service (clusterIP None),
// exposing the metrics and telemetry ports of the pods of StatefulSet name.
func HeadlessService(namespace, name string) *corev1.Service {
	l := Labels(name)
	l[componentLbl] = "exporter"
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: l},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  Labels(name),
			Ports: []corev1.ServicePort{
				{Name: portMetrics, Port: 8080, TargetPort: intstr.FromString(portMetrics)},
				{Name: portTelemetry, Port: 8081, TargetPort: intstr.FromString(portTelemetry)},
			},
		},
	}
}

// ServiceAccount is the ServiceAccount the pods run as. The benchmark grants
// it nothing: on kwok the containers never run.
func ServiceAccount(namespace string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: ServiceAccountName}}
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
