// Package restore holds the check the integration and e2e suites share:
// objects the operator owns are deleted behind its back and must come back.
package restore

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

// ShardedChildren are the objects a sharded KSMScale `name` keeps in
// namespace ns besides its pods: the Service, the PodDisruptionBudget, the
// ServiceAccount and the ClusterRoleBinding.
func ShardedChildren(ns, name string) []client.Object {
	return []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name + "-pdb"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kube-state-metrics-" + name}},
	}
}

// DeleteAndWait deletes every object and waits, up to timeout each, until
// each exists again.
func DeleteAndWait(t *testing.T, ctx context.Context, c client.Client, timeout time.Duration, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Delete(ctx, o); err != nil {
			t.Fatalf("delete %T %s: %v", o, o.GetName(), err)
		}
	}
	for _, o := range objs {
		wait.Eventually(t, 100*time.Millisecond, timeout, fmt.Sprintf("%T %s restored", o, o.GetName()), func() error {
			return c.Get(ctx, client.ObjectKeyFromObject(o), o)
		})
	}
}
