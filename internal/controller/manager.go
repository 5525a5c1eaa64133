package controller

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// CacheOptions scopes the manager's informers to the operator's own objects:
// the Pod informer does not hold every pod of a 150,000-pod cluster, only the
// shard pods and the Deployment's pods, which all carry the managed-by label.
// Nodes and Namespaces are watched as metadata only (see SetupWithManager) and
// cached as their identity alone (see IdentityOnly), and no cached object
// keeps its managedFields, which are often the larger part of an object's
// metadata, except a pod's entries written by someone else (keepForeignWrites),
// which tell the operator that a shard pod was edited.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: ksm.ManagedSelector()}
	identity := cache.ByObject{Transform: IdentityOnly}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   {Label: ksm.ManagedSelector(), Transform: keepForeignWrites},
		&appsv1.Deployment{}:            managed,
		&corev1.Service{}:               managed,
		&corev1.ServiceAccount{}:        managed,
		&policyv1.PodDisruptionBudget{}: managed,
		&rbacv1.ClusterRoleBinding{}:    managed,
		metadataOf("Node"):              identity,
		metadataOf("Namespace"):         identity,
	}}
}

// metadataOf is the metadata-only form of a core/v1 kind, as the Node and
// Namespace watches use it.
func metadataOf(kind string) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
	return m
}

// IdentityOnly is the cache transform for Nodes and Namespaces: the operator
// only counts nodes and checks that a node or namespace exists, so their
// labels, annotations, owner references and finalizers (on real nodes often
// a few KiB: topology and instance labels, CSI and CNI annotations) are
// dropped before the object is stored. Name, UID, resourceVersion and the
// creation and deletion timestamps stay. Other objects pass unchanged.
func IdentityOnly(in any) (any, error) {
	m, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	m.ObjectMeta = metav1.ObjectMeta{
		Name:              m.Name,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
	}
	return m, nil
}

// Option changes how Setup builds the reconciler.
type Option func(*KSMScaleReconciler)

// WrapClient wraps the reconciler's client; the tests inject API errors
// with controller-runtime's interceptor this way.
func WrapClient(wrap func(client.Client) client.Client) Option {
	return func(r *KSMScaleReconciler) { r.Client = wrap(r.Client) }
}

// AllowNamespaces limits the namespaces kube-state-metrics may run in; a
// KSMScale naming another one is refused with the condition reason
// NamespaceNotAllowed. Without this option every namespace is allowed.
func AllowNamespaces(names ...string) Option {
	return func(r *KSMScaleReconciler) {
		r.AllowedNamespaces = map[string]bool{}
		for _, n := range names {
			r.AllowedNamespaces[n] = true
		}
	}
}

// VerifyHandover turns the verified hand-over on or off (default on) and
// sets how long a pod that answers but exports less than it should may wait
// before it takes over unverified (default DefaultVerifyTimeout).
func VerifyHandover(enabled bool, timeout time.Duration) Option {
	return func(r *KSMScaleReconciler) { r.verify = newVerifier(enabled, timeout) }
}

// Setup wires the KSMScale controller into a manager built with
// CacheOptions; cmd/main.go and the test suites share it.
func Setup(ctx context.Context, mgr ctrl.Manager, ksmClusterRole string, opts ...Option) error {
	r := &KSMScaleReconciler{
		Client:         client.WithFieldOwner(mgr.GetClient(), FieldOwner),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("ksm-scale-operator"),
		KSMClusterRole: ksmClusterRole,
		verify:         newVerifier(true, DefaultVerifyTimeout),
	}
	for _, o := range opts {
		o(r)
	}
	return r.SetupWithManager(ctx, mgr)
}
