package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
)

// installBindCheck applies config/admission's ValidatingAdmissionPolicy and
// its binding as shipped.
func installBindCheck(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("../../config/admission/bind-check.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("bind-check.yaml has %d documents, want the policy and its binding", len(docs))
	}
	policy, binding := &admissionv1.ValidatingAdmissionPolicy{}, &admissionv1.ValidatingAdmissionPolicyBinding{}
	for i, o := range []client.Object{policy, binding} {
		if err := yaml.UnmarshalStrict([]byte(docs[i]), o); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Create(testCtx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(testCtx, o) })
	}
}

// userClient is a client acting as a user with only the RBAC the test gives.
func userClient(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func grant(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(testCtx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(testCtx, o) })
	}
}

// canListSecrets asks the API server whether user may list Secrets in
// every namespace.
func canListSecrets(t *testing.T, user string) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"},
	}}
	if err := k8s.Create(testCtx, sar); err != nil {
		t.Fatal(err)
	}
	return sar.Status.Allowed
}

// TestKSMScaleCannotBeUsedToReadSecrets: a user who may create KSMScales and
// administers one namespace, but has no access to Secrets, must not end up
// with a ServiceAccount there that lists Secrets cluster-wide.
func TestKSMScaleCannotBeUsedToReadSecrets(t *testing.T) {
	const tenant, alice, bob = "tenant", "alice", "bob"
	createNamespace(t, tenant)
	createNamespace(t, "doomed")
	installBindCheck(t)
	grant(t,
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ksmscale-editor"}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"ksmscales"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"},
		}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ksmscale-editors"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ksmscale-editor"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: alice}, {Kind: rbacv1.UserKind, Name: bob}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "alice-admin"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: alice}}},
		// bob may bind the KSM role: he could grant it without the operator.
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ksm-role-binder"}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"}, Verbs: []string{"bind"},
			ResourceNames: []string{controller.DefaultKSMClusterRole},
		}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ksm-role-binders"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ksm-role-binder"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: bob}}},
	)
	if canListSecrets(t, alice) {
		t.Fatal("alice can list secrets cluster-wide before the test")
	}
	ksmIn := func(name, ns string) *v1alpha1.KSMScale {
		return &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{Namespace: ns}}
	}

	// An admin's KSMScale in an allowed namespace, for the subtests.
	admins := ksmIn("admins-ksm", "doomed")
	createKSMScale(t, admins)

	t.Run("the shipped ValidatingAdmissionPolicy refuses a user who may not bind the role", func(t *testing.T) {
		ac := userClient(t, alice)
		eventually(t, 60*time.Second, "alice's KSMScale refused at admission", func() error {
			err := ac.Create(testCtx, ksmIn("alice-ksm", tenant), client.DryRunAll)
			if err == nil {
				return fmt.Errorf("admitted (the policy may not be active yet)")
			}
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may not bind") {
				return fmt.Errorf("refused, but not by the policy: %v", err)
			}
			return nil
		})
		if err := userClient(t, bob).Create(testCtx, ksmIn("bob-ksm", tenant), client.DryRunAll); err != nil {
			t.Errorf("bob, who may bind the role, is refused: %v", err)
		}
		// Nor may alice change someone else's KSMScale (its image would run
		// under the account that reads every Secret).
		patch := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"monitorImage":"example.com/alice:1"}}`))
		if err := ac.Patch(testCtx, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: admins.Name}}, patch, client.DryRunAll); !apierrors.IsForbidden(err) {
			t.Errorf("alice changed another KSMScale's image: %v", err)
		}
	})

	t.Run("the operator's allow-list refuses other namespaces", func(t *testing.T) {
		// An admin, whom the policy admits, names a namespace outside
		// --ksm-namespaces: nothing is bound there.
		createKSMScale(t, ksmIn("tenant-ksm", tenant))
		waitStatus(t, "tenant-ksm", 60*time.Second, func(k *v1alpha1.KSMScale) error {
			return wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionTrue, controller.ReasonNamespaceNotAllowed)
		})
		assertNothingListsSecrets(t, tenant)
		if err := k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-tenant-ksm"}, &rbacv1.ClusterRoleBinding{}); !apierrors.IsNotFound(err) {
			t.Errorf("a binding exists for the refused KSMScale: %v", err)
		}
	})

	t.Run("an account the operator did not create is never bound", func(t *testing.T) {
		// kube-prometheus ships monitoring/kube-state-metrics; a namespace
		// admin could pre-create the operator's name too.
		grant(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "doomed", Name: "kube-state-metrics-squatted"}})
		createKSMScale(t, ksmIn("squatted", "doomed"))
		waitStatus(t, "squatted", 60*time.Second, func(k *v1alpha1.KSMScale) error {
			return wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionTrue, controller.ReasonNameConflict)
		})
		if canListSecrets(t, "system:serviceaccount:doomed:kube-state-metrics-squatted") {
			t.Error("the pre-existing ServiceAccount was granted the KSM role")
		}
	})

	t.Run("the binding goes when the namespace goes", func(t *testing.T) {
		const sa = "system:serviceaccount:doomed:kube-state-metrics-admins-ksm"
		eventually(t, 60*time.Second, "admins-ksm bound in doomed", func() error {
			if !canListSecrets(t, sa) {
				return fmt.Errorf("%s cannot list secrets yet", sa)
			}
			return nil
		})
		if err := k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-admins-ksm"}, &rbacv1.ClusterRoleBinding{}); err != nil {
			t.Fatalf("no binding before the namespace is deleted: %v", err)
		}
		if err := k8s.Delete(testCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "binding removed with the namespace", func() error {
			if err := k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-admins-ksm"}, &rbacv1.ClusterRoleBinding{}); !apierrors.IsNotFound(err) {
				k := getKSMScale(t, "admins-ksm")
				return fmt.Errorf("binding still there (%v); KSMScale conditions %+v", err, k.Status.Conditions)
			}
			return nil
		})
	})
}

// assertNothingListsSecrets checks every ServiceAccount of ns.
func assertNothingListsSecrets(t *testing.T, ns string) {
	t.Helper()
	sas := &corev1.ServiceAccountList{}
	if err := k8s.List(testCtx, sas, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, sa := range sas.Items {
		if canListSecrets(t, "system:serviceaccount:"+ns+":"+sa.Name) {
			t.Errorf("ServiceAccount %s/%s can list secrets cluster-wide", ns, sa.Name)
		}
	}
	if canListSecrets(t, "system:serviceaccount:"+ns+":kube-state-metrics-tenant-ksm") {
		t.Errorf("the operator's account name in %s can list secrets", ns)
	}
}
