package controller

import (
	"encoding/json"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The operator never compares a child's spec with what it would build:
// mutating admission (a service mesh injecting a sidecar, a registry policy
// rewriting an image to a mirror or pinning a digest, defaulting webhooks)
// changes what the API server stores, and an operator that "repairs" those
// changes fights the cluster forever. It identifies its children by what it
// stamped on them and detects a later edit by someone else with a signal that
// admission of the operator's own write cannot produce.

// specWrittenByOthers reports whether a field manager other than the
// operator wrote a field of obj's spec through the object itself. The API
// server records a write's fields under the manager of the request before
// mutating admission runs, so what admission adds to the operator's own
// create is owned by nobody, never by a foreign manager; a later
// `kubectl set image` or `kubectl edit` is recorded under kubectl. Writes
// through subresources (status, scale, in-place resize, ephemeral debug
// containers) do not count: they are not edits of what the operator built.
func specWrittenByOthers(obj metav1.Object) bool {
	for _, e := range obj.GetManagedFields() {
		if !foreignWrite(e) || e.FieldsV1 == nil {
			continue
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(e.FieldsV1.Raw, &fields); err != nil {
			continue
		}
		if _, ok := fields["f:spec"]; ok {
			return true
		}
	}
	return false
}

// foreignWrite: the entry records a write by another field manager through
// the object itself, not through a subresource.
func foreignWrite(e metav1.ManagedFieldsEntry) bool {
	return e.Manager != FieldOwner && e.Subresource == ""
}

// writtenGenerations remembers, per Deployment, the metadata.generation
// that the operator's last write produced (or that it found in sync). Every
// spec change raises the generation, so a higher one is someone else's edit
// (kubectl edit, kubectl scale, a rollout restart) and is undone. It is kept
// in memory, not on the Deployment: recording it there would be another
// write, and with some admission chains every write of a Deployment raises
// its generation (a MutatingAdmissionPolicy whose added container lacks the
// defaults the stored one has looks like a spec change to the API server),
// so a recorded generation would never catch up. After a restart the first
// pass takes the Deployment as it finds it if its spec hash matches; an edit
// made while no operator ran is undone with the next spec change.
type writtenGenerations struct {
	mu  sync.Mutex
	gen map[types.UID]int64
}

func (w *writtenGenerations) record(d *appsv1.Deployment) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen == nil {
		w.gen = map[types.UID]int64{}
	}
	w.gen[d.UID] = d.Generation
}

// unchanged reports whether nobody changed d's spec since the operator last
// wrote or accepted it.
func (w *writtenGenerations) unchanged(d *appsv1.Deployment) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.gen[d.UID]
	return !ok || d.Generation <= g
}

func (w *writtenGenerations) forget(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.gen, uid)
}

// keepForeignWrites is the cache transform for pods: of their managedFields
// it keeps only the entries specWrittenByOthers reads (written by another
// manager through the pod itself), so a shard pod's cached form has none
// unless someone edited it. The kubelet's status entries and the operator's
// own create entry, the bulk of them, are dropped.
func keepForeignWrites(in any) (any, error) {
	o, ok := in.(metav1.Object)
	if !ok {
		return in, nil
	}
	var kept []metav1.ManagedFieldsEntry
	for _, e := range o.GetManagedFields() {
		if foreignWrite(e) {
			kept = append(kept, e)
		}
	}
	o.SetManagedFields(kept)
	return in, nil
}
