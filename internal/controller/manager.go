package controller

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// CacheOptions scopes the manager's informers to the operator's own objects:
// the Pod informer does not hold every pod of a 150,000-pod cluster, only the
// shard pods and the Deployment's pods, which all carry the managed-by label.
// Nodes and Namespaces are watched as metadata only (see SetupWithManager),
// and no cached object keeps its managedFields, which the operator never
// reads and which are often the larger part of an object's metadata.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: ksm.ManagedSelector()}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   managed,
		&appsv1.Deployment{}:            managed,
		&corev1.Service{}:               managed,
		&corev1.ServiceAccount{}:        managed,
		&policyv1.PodDisruptionBudget{}: managed,
		&rbacv1.ClusterRoleBinding{}:    managed,
	}}
}

// Setup wires the KSMScale controller into a manager built with
// CacheOptions; cmd/main.go and the test suites share it.
func Setup(ctx context.Context, mgr ctrl.Manager, ksmClusterRole string) error {
	r := &KSMScaleReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("ksm-scale-operator"),
		KSMClusterRole: ksmClusterRole,
	}
	return r.SetupWithManager(ctx, mgr)
}
