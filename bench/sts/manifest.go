// Package sts benchmarks the alternative to the operator that users pick
// today: kube-state-metrics' own StatefulSet "autosharding", where every pod
// of an N-replica StatefulSet is started with --pod and --pod-namespace and
// derives its shard from its ordinal and the total from the StatefulSet's
// replicas.
//
// The package builds the StatefulSet as KSM's examples/autosharding manifests
// do, measures per-shard coverage from pod readiness (a shard i is covered
// while pod <sts>-<i> is Ready), and runs one create / rollout / scale cycle
// against a cluster. The benchmark labels the pods so that test/kubelet runs
// real kube-state-metrics behind each of them and measures the metrics
// themselves (test/metricwatch); the readiness-based coverage stays as a
// second view.
package sts

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
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

// ServiceAccount is the ServiceAccount the pods run as; Role, RoleBinding
// and ClusterRoleBinding grant it what real kube-state-metrics needs.
func ServiceAccount(namespace string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: ServiceAccountName}}
}

// Role is what KSM's autosharding needs in its own namespace, as in KSM's
// examples/autosharding/role.yaml: get its own pod (to find the owning
// StatefulSet) and get, list and watch the StatefulSet called name (its
// replicas are the total shard count, watched so that a scale reshards).
func Role(namespace, name string) *rbacv1.Role {
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{"apps"}, Resources: []string{"statefulsets"}, ResourceNames: []string{name},
				Verbs: []string{"get", "list", "watch"}},
		},
	}
}

// RoleBinding binds Role(namespace, name) to the ServiceAccount.
func RoleBinding(namespace, name string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: ServiceAccountName}},
	}
}

// ClusterRoleBinding binds the read-only ClusterRole clusterRole (the one
// the operator's shards run with, so both sides read the same objects) to
// the ServiceAccount of namespace.
func ClusterRoleBinding(namespace, clusterRole string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-state-metrics-sts-" + namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: ServiceAccountName}},
	}
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
