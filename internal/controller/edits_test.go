package controller

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

func TestWrittenGenerations(t *testing.T) {
	d := ksm.BuildDeployment(ksm.Resolve(&v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "d"}}), 2)
	d.UID, d.Generation = "uid-1", 3
	var w writtenGenerations
	if !w.unchanged(d) {
		t.Error("a Deployment never written by this process (after a restart) counts as edited")
	}
	w.record(d)
	if !w.unchanged(d) {
		t.Error("the Deployment as last written counts as edited")
	}
	d.Generation = 4
	if w.unchanged(d) {
		t.Error("a spec change after the operator's write (generation 4, written 3) is not seen")
	}
	w.forget(d.UID)
	if !w.unchanged(d) {
		t.Error("a forgotten Deployment still counts as edited")
	}
}

func TestKeepForeignWrites(t *testing.T) {
	p := ksm.BuildShardPod(ksm.Resolve(&v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "p"}}), 0, 2)
	p.ManagedFields = []metav1.ManagedFieldsEntry{
		written(FieldOwner, "", `{"f:spec":{}}`),
		written("kubelet", "status", `{"f:status":{}}`),
		written("kubectl-set", "", `{"f:spec":{}}`),
	}
	if _, err := keepForeignWrites(p); err != nil {
		t.Fatal(err)
	}
	if len(p.ManagedFields) != 1 || p.ManagedFields[0].Manager != "kubectl-set" {
		t.Errorf("kept %+v, want only kubectl-set's entry", p.ManagedFields)
	}
	if !specWrittenByOthers(p) {
		t.Error("the transform dropped what specWrittenByOthers reads")
	}
}
