package integration

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/test/coverage"
)

// TestNamespaceMove: changing spec.namespace brings the whole workload up in
// the new namespace, then removes the old one: no gap, no lasting duplicate.
func TestNamespaceMove(t *testing.T) {
	const from, to, name = "move-from", "move-to", "mover"
	for _, ns := range []string{from, to} {
		createNamespace(t, ns)
		startKubelet(t, ns)
	}
	createKSMScale(t, shardedKSMScale(name, from, 3, 2))
	waitConverged(t, from, name, 3, nil)

	// Watch both namespaces at once: a shard counts as covered by a Ready
	// pod in either.
	w, err := coverage.Watch(testCtx, kubernetes.NewForConfigOrDie(restCfg), metav1.NamespaceAll, "ksmscale.example.com="+name, "kube-state-metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	patchSpec(t, name, `{"spec":{"namespace":"`+to+`"}}`)
	waitConverged(t, to, name, 3, nil)
	eventually(t, 60*time.Second, "the old namespace emptied", func() error {
		if pods := shardPods(t, from, name); len(pods) > 0 {
			return fmt.Errorf("%d pods left in %s", len(pods), from)
		}
		for _, o := range []client.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: from, Name: "kube-state-metrics-" + name}},
			&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: from, Name: "kube-state-metrics-" + name + "-pdb"}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: from, Name: "kube-state-metrics-" + name}},
		} {
			err := k8s.Get(testCtx, client.ObjectKeyFromObject(o), o)
			if err == nil && o.GetDeletionTimestamp().IsZero() {
				return fmt.Errorf("%T %s still in %s", o, o.GetName(), from)
			}
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
		b := &rbacv1.ClusterRoleBinding{}
		if err := k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-" + name}, b); err != nil {
			return err
		}
		if len(b.Subjects) != 1 || b.Subjects[0].Namespace != to {
			return fmt.Errorf("binding subjects %+v, want only %s's account", b.Subjects, to)
		}
		return nil
	})
	assertCoverage(t, w, "namespace move", 2*time.Second)
}
