package controller

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
)

func TestIdentityOnlyKeepsIdentityAndDropsTheRest(t *testing.T) {
	created := metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	deleted := metav1.NewTime(created.Add(time.Hour))
	in := metadataOf("Node")
	in.ObjectMeta = metav1.ObjectMeta{
		Name: "node-1", UID: types.UID("uid-1"), ResourceVersion: "42", Generation: 3,
		CreationTimestamp: created, DeletionTimestamp: &deleted,
		Labels:          map[string]string{"topology.kubernetes.io/zone": "a"},
		Annotations:     map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
		Finalizers:      []string{"example.com/f"},
		OwnerReferences: []metav1.OwnerReference{{Name: "o"}},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
	}
	out, err := IdentityOnly(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*metav1.PartialObjectMetadata)
	want := metav1.ObjectMeta{Name: "node-1", UID: "uid-1", ResourceVersion: "42", CreationTimestamp: created, DeletionTimestamp: &deleted}
	if got.Name != want.Name || got.UID != want.UID || got.ResourceVersion != want.ResourceVersion ||
		!got.CreationTimestamp.Equal(&want.CreationTimestamp) || !got.DeletionTimestamp.Equal(want.DeletionTimestamp) {
		t.Errorf("identity changed: got %+v, want %+v", got.ObjectMeta, want)
	}
	if got.Labels != nil || got.Annotations != nil || got.Finalizers != nil || got.OwnerReferences != nil || got.ManagedFields != nil || got.Generation != 0 {
		t.Errorf("kept more than the identity: %+v", got.ObjectMeta)
	}
	if got.GroupVersionKind() != corev1.SchemeGroupVersion.WithKind("Node") {
		t.Errorf("kind changed to %v", got.GroupVersionKind())
	}
}

func TestIdentityOnlyPassesOtherObjectsUnchanged(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}}}
	out, err := IdentityOnly(pod)
	if p, ok := out.(*corev1.Pod); err != nil || !ok || p.Labels["a"] != "b" {
		t.Errorf("pod: got %#v, %v; want it unchanged", out, err)
	}
	tombstone := toolscache.DeletedFinalStateUnknown{Key: "n", Obj: metadataOf("Node")}
	out, err = IdentityOnly(tombstone)
	if ts, ok := out.(toolscache.DeletedFinalStateUnknown); err != nil || !ok || ts.Key != "n" {
		t.Errorf("tombstone: got %#v, %v; want it unchanged", out, err)
	}
}
