package integration

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// TestOperatorRoleIsMinimal: the generated role has no wildcard and no
// access to Secrets, and the API server enforces it on the identity the
// whole suite runs the operator as.
func TestOperatorRoleIsMinimal(t *testing.T) {
	b, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(b, role); err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			for _, v := range list {
				if v == "*" {
					t.Errorf("wildcard in rule %+v", r)
				}
			}
		}
		for _, res := range r.Resources {
			if res == "secrets" {
				t.Errorf("rule grants access to secrets: %+v", r)
			}
		}
	}

	op, err := client.New(operatorCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.List(testCtx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Errorf("operator identity listing secrets: want Forbidden, got %v", err)
	}
	if err := op.List(testCtx, &corev1.PodList{}); err != nil {
		t.Errorf("operator identity listing pods: %v", err)
	}
}
