package ksm

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BuildServiceAccount is the identity kube-state-metrics runs as in the
// target namespace, one per KSMScale.
func BuildServiceAccount(c Config) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceAccountName(c.Name),
			Namespace: c.Namespace,
			Labels:    CommonLabels(c.Name),
		},
	}
}

// BuildClusterRoleBinding grants the ServiceAccount the read-only
// kube-state-metrics ClusterRole shipped in config/rbac. While the workload
// moves out of `previous` namespaces (spec.namespace changed), their
// ServiceAccounts stay bound so that the old pods keep exporting until the
// new ones have taken over.
func BuildClusterRoleBinding(c Config, clusterRole string, previous ...string) *rbacv1.ClusterRoleBinding {
	b := &rbacv1.ClusterRoleBinding{
		TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   ClusterRoleBindingName(c.Name),
			Labels: CommonLabels(c.Name),
		},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects: []rbacv1.Subject{{
			Kind: rbacv1.ServiceAccountKind, Name: ServiceAccountName(c.Name), Namespace: c.Namespace,
		}},
	}
	for _, ns := range previous {
		b.Subjects = append(b.Subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: ServiceAccountName(c.Name), Namespace: ns})
	}
	return b
}
