package manifests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// shipped are the kustomize trees users apply: the install, the optional
// components and every overlay docs show. A new directory under config/
// examples/ is picked up by TestShippedListsEveryExample.
var shipped = []string{
	"config/default",
	"config/prometheus",
	"config/networkpolicy",
	"config/admission",
	"config/grafana",
	"config/samples",
	"config/examples/runbook-url",
}

// namespaces the shipped manifests put objects in. A dry-run of the Namespace
// in config/default creates nothing, so they are created for real first.
var namespaces = []string{"ksm-scale-operator-system", "monitoring"}

// apiServer starts kube-apiserver and etcd from bin/ (KUBEBUILDER_ASSETS) with
// our CRD and the Prometheus Operator CRDs hack/build-tools.sh generates into
// bin/crds/prometheus-operator, creates the namespaces, and stops them when
// the test ends.
func apiServer(t *testing.T) client.Client {
	t.Helper()
	_, c := controlPlane(t, true)
	for _, ns := range namespaces {
		if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
	return c
}

// controlPlane starts kube-apiserver and etcd with the Prometheus Operator
// CRDs and, if withOurCRD, the KSMScale CRD of config/crd, and stops them
// when the test ends. It skips (fails in CI) without the binaries.
func controlPlane(t *testing.T, withOurCRD bool) (*envtest.Environment, client.Client) {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(abs, "bin")
	}
	promCRDs := filepath.Join(abs, "bin", "crds", "prometheus-operator")
	for _, need := range []string{filepath.Join(assets, "kube-apiserver"), filepath.Join(assets, "etcd"), filepath.Join(promCRDs, "monitoring.coreos.com_servicemonitors.yaml")} {
		if _, err := os.Stat(need); err != nil {
			msg := fmt.Sprintf("no %s: run hack/build-tools.sh etcd kubernetes prometheus-operator-crds", need)
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	crds := []string{promCRDs}
	if withOurCRD {
		crds = append(crds, filepath.Join(abs, "config", "crd", "bases"))
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := env.Start()
	// Stop also after a failed start: Start may leave etcd running.
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from %s: %v", assets, err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return env, c
}

// dryRunApply server-side applies obj with dryRun=All and strict field
// validation, so unknown and mistyped fields are errors, not warnings or
// silent pruning. Client.Apply takes no field-validation option, hence Patch.
func dryRunApply(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	//nolint:staticcheck // client.Apply as a Patch: the only apply path with FieldValidation.
	return c.Patch(ctx, obj.DeepCopy(), client.Apply, client.DryRunAll, client.FieldOwner("dry-run"),
		client.ForceOwnership, client.FieldValidation(metav1.FieldValidationStrict))
}

func describe(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", o.GetKind(), ns, o.GetName())
	}
	return fmt.Sprintf("%s %s", o.GetKind(), o.GetName())
}

// TestServerSideDryRun applies every object of every shipped manifest set to
// a real API server (dry-run), with our CRD and the Prometheus Operator CRDs
// installed: what kubectl apply --server-side would reject fails here. The
// broken-object cases show the check can fail.
func TestServerSideDryRun(t *testing.T) {
	kubectl(t)
	c := apiServer(t)
	ctx := t.Context()

	for _, dir := range shipped {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			if len(objs) == 0 {
				t.Fatalf("kubectl kustomize %s rendered no objects", dir)
			}
			for _, o := range objs {
				if err := dryRunApply(ctx, c, o); err != nil {
					t.Errorf("%s from %s: rejected by the API server: %v", describe(o), dir, err)
				}
			}
		})
	}

	// The Helm chart as helm install renders it: the default values and every
	// toggle on (chart_test.go's cases).
	for _, cc := range chartCases {
		t.Run("chart/"+cc.name, func(t *testing.T) {
			for _, o := range renderChart(t, cc) {
				if err := dryRunApply(ctx, c, o); err != nil {
					t.Errorf("%s from the chart (%s): rejected by the API server: %v", describe(o), cc.name, err)
				}
			}
		})
	}

	// A dry-run must persist nothing, or the checks above would leak into
	// one another.
	t.Run("nothing persisted", func(t *testing.T) {
		for _, o := range render(t, "config/prometheus") {
			got := o.DeepCopy()
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); !apierrors.IsNotFound(err) {
				t.Errorf("%s after a dry-run: err = %v, want NotFound", describe(o), err)
			}
		}
	})

	broken := []struct {
		name, yaml, want string
	}{{
		name: "mistyped field",
		yaml: `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: broken, namespace: monitoring}
spec:
  selector: {}
  endpoints: "http-metrics"
`,
		want: "spec.endpoints",
	}, {
		name: "value outside the schema's enum",
		yaml: `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: broken, namespace: monitoring}
spec:
  selector: {}
  endpoints:
  - port: http-metrics
    scheme: ftp
`,
		want: "scheme",
	}, {
		name: "unknown field",
		yaml: `
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: broken, namespace: monitoring}
spec:
  groups:
  - name: g
    rules:
    - alert: A
      expression: up == 0
`,
		want: "expression",
	}, {
		name: "missing namespace",
		yaml: `
apiVersion: v1
kind: ServiceAccount
metadata: {name: broken, namespace: not-created}
`,
		want: "not-created",
	}}
	for _, tc := range broken {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			o := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.yaml), &o.Object); err != nil {
				t.Fatal(err)
			}
			err := dryRunApply(ctx, c, o)
			if err == nil {
				t.Fatalf("%s was accepted; want it rejected", describe(o))
			}
			// An API status, not a client-side failure: the server said no.
			if _, ok := err.(apierrors.APIStatus); !ok {
				t.Fatalf("%s: %v is not an error from the API server", describe(o), err)
			}
			t.Logf("rejected as expected: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s rejected with %q, want a message naming %q", describe(o), err, tc.want)
			}
		})
	}
}

// TestShippedListsEveryExample: every overlay under config/examples/ is in
// shipped, so a new example cannot skip the dry-run.
func TestShippedListsEveryExample(t *testing.T) {
	entries, err := os.ReadDir(root + "/config/examples")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, d := range shipped {
		listed[d] = true
	}
	for _, e := range entries {
		if d := "config/examples/" + e.Name(); e.IsDir() && !listed[d] {
			t.Errorf("%s is not in shipped (test/manifests/dryrun_test.go): add it so it is dry-run applied", d)
		}
	}
}
