package manifests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestHelmInstallLifecycle runs the real helm install, upgrade and uninstall
// against a local API server that has no KSMScale CRD yet (there is no
// kubelet, so pods are not started; helm does not wait for them): what the
// dry-run cannot show, the order Helm creates things in, ownership of
// existing objects, and what uninstall leaves behind.
//
//   - A first install that creates the CRD cannot create a KSMScale too:
//     Helm maps every object before creating any (docs/helm.md says so).
//   - Install, then upgrade with ksmScale.enabled: the KSMScale is created,
//     through the chart's own admission policy.
//   - Uninstall removes the operator and the KSMScale of the release, and
//     keeps the CRD (crds.keep), since deleting it deletes every KSMScale.
func TestHelmInstallLifecycle(t *testing.T) {
	helm(t)
	env, c := controlPlane(t, false)
	ctx := t.Context()
	crd := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		u.SetName("ksmscales.monitor.example.com")
		return u
	}

	user, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(helm(t), append(args, "--kubeconfig", kc, "--namespace", chartNamespace)...)
		cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+dir, "HELM_CACHE_HOME="+dir, "HELM_DATA_HOME="+dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("helm %s:\n%s", args[0], out)
		return out
	}
	monitoring := []string{"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true", "--set", "dashboard.enabled=true"}

	t.Run("first install with a KSMScale fails before creating anything", func(t *testing.T) {
		out, err := run(append([]string{"install", chartRelease, chartDir, "--create-namespace", "--set", "ksmScale.enabled=true"}, monitoring...)...)
		if err == nil {
			t.Fatalf("helm install with ksmScale.enabled and no CRD in the cluster succeeded; docs/helm.md says it cannot:\n%s", out)
		}
		t.Logf("failed as docs/helm.md says: %s", strings.TrimSpace(out))
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd()), crd()); !apierrors.IsNotFound(err) {
			t.Fatalf("the CRD after the failed install: err = %v, want NotFound (nothing created)", err)
		}
	})

	mustRun(append([]string{"install", chartRelease, chartDir, "--create-namespace"}, monitoring...)...)
	if err := c.Get(ctx, client.ObjectKeyFromObject(crd()), crd()); err != nil {
		t.Fatalf("the CRD after helm install: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: chartNamespace, Name: chartRelease}, &appsv1.Deployment{}); err != nil {
		t.Fatalf("the operator Deployment after helm install: %v", err)
	}
	for _, o := range []struct{ kind, name string }{{"ServiceMonitor", "ksm-scale-operator-shards"}, {"PrometheusRule", "ksm-scale-operator"}} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: o.kind})
		if err := c.Get(ctx, client.ObjectKey{Namespace: chartNamespace, Name: o.name}, u); err != nil {
			t.Errorf("%s %s after helm install: %v", o.kind, o.name, err)
		}
	}

	ksmscale := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitor.example.com", Version: "v1alpha1", Kind: "KSMScale"})
		u.SetName("cluster")
		return u
	}
	mustRun("upgrade", chartRelease, chartDir, "--reuse-values", "--set", "ksmScale.enabled=true")
	if err := c.Get(ctx, client.ObjectKeyFromObject(ksmscale()), ksmscale()); err != nil {
		t.Fatalf("the KSMScale after helm upgrade --set ksmScale.enabled=true: %v", err)
	}

	mustRun("uninstall", chartRelease)
	if err := c.Get(ctx, client.ObjectKeyFromObject(crd()), crd()); err != nil {
		t.Errorf("the CRD after helm uninstall: %v; crds.keep should have kept it", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: chartNamespace, Name: chartRelease}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the operator Deployment after helm uninstall: err = %v, want NotFound", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ksmscale()), ksmscale()); !apierrors.IsNotFound(err) {
		t.Errorf("the release's KSMScale after helm uninstall: err = %v, want NotFound (docs/helm.md)", err)
	}
}
