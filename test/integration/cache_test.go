package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// TestCacheHoldsOnlyWhatTheOperatorReads checks the manager's cache as
// cmd/main.go configures it, against the API server: Nodes and Namespaces are
// stored as their identity alone (no labels, annotations or managedFields),
// and a pod without the operator's managed-by label never enters the pod
// cache.
func TestCacheHoldsOnlyWhatTheOperatorReads(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        "cache-node",
		Labels:      map[string]string{"topology.kubernetes.io/zone": "zone-a", "node.kubernetes.io/instance-type": "m6i.4xlarge"},
		Annotations: map[string]string{"csi.volume.kubernetes.io/nodeid": `{"ebs.csi.aws.com":"i-0123456789abcdef0"}`},
	}}
	if err := k8s.Create(testCtx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cache-ns", Labels: map[string]string{"team": "payments"},
		Annotations: map[string]string{"owner": "payments@example.com"}}}
	if err := k8s.Create(testCtx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := k8s.Get(testCtx, client.ObjectKeyFromObject(ns), ns); err != nil {
		t.Fatal(err)
	}

	for _, want := range []client.Object{node, ns} {
		kind := fmt.Sprintf("%T", want)[len("*v1."):]
		cached := &metav1.PartialObjectMetadata{}
		cached.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
		eventually(t, 30*time.Second, kind+" "+want.GetName()+" in the operator's cache", func() error {
			return operatorCache.Get(testCtx, client.ObjectKey{Name: want.GetName()}, cached)
		})
		if cached.UID != want.GetUID() || cached.ResourceVersion == "" {
			t.Errorf("cached %s %s: uid %q resourceVersion %q, want uid %q and a resourceVersion", kind, want.GetName(),
				cached.UID, cached.ResourceVersion, want.GetUID())
		}
		if len(cached.Labels)+len(cached.Annotations)+len(cached.ManagedFields) != 0 {
			t.Errorf("cached %s %s keeps labels %v, annotations %v and %d managedFields entries; want its identity only",
				kind, want.GetName(), cached.Labels, cached.Annotations, len(cached.ManagedFields))
		}
	}

	// An unrelated pod, and one labelled like the operator's: only the
	// second reaches the cache.
	createNamespace(t, "cache-pods")
	unrelated := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "cache-pods", Name: "unrelated"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	managed := unrelated.DeepCopy()
	managed.Name = "managed"
	managed.Labels = map[string]string{ksm.LabelManagedBy: ksm.ManagedBy}
	for _, p := range []*corev1.Pod{unrelated, managed} {
		if err := k8s.Create(testCtx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), p, client.GracePeriodSeconds(0)) })
	}
	eventually(t, 30*time.Second, "the managed pod in the operator's cache", func() error {
		return operatorCache.Get(testCtx, client.ObjectKeyFromObject(managed), &corev1.Pod{})
	})
	// The managed pod was created after the unrelated one, and the informer
	// delivers events in order: had the unrelated pod been selected, it
	// would be cached by now.
	err := operatorCache.Get(testCtx, client.ObjectKeyFromObject(unrelated), &corev1.Pod{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("unrelated pod in the operator's cache: get returned %v, want NotFound", err)
	}
}
