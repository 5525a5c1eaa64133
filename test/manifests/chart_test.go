package manifests

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The Helm chart's tests: helm lint, golden helm template output, the
// chart's version against VERSION, its copies of config/ files, and the
// chart against config/default (same CRD, same RBAC rules, same manager
// container). TestServerSideDryRun applies chart renders too.

var update = flag.Bool("update", false, "rewrite testdata/chart/*.golden.yaml from the current helm template output")

const (
	chartDir = root + "/charts/ksm-scale-operator"
	// The namespace and release name the chart is rendered with to compare
	// it with config/default: with the release named after the chart, every
	// name equals the one config/ gives.
	chartNamespace = "ksm-scale-operator-system"
	chartRelease   = "ksm-scale-operator"
)

// chartCase is one helm template invocation with a golden file.
type chartCase struct {
	name, release, values string
}

var chartCases = []chartCase{
	// Default values: what helm install gives.
	{name: "default", release: chartRelease},
	// Every toggle on, and a release name that is not the chart's, so every
	// derived name (the kube-state-metrics ClusterRole in three places) shows.
	{name: "all", release: "kso", values: "testdata/chart/values-all.yaml"},
}

func helm(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath(root + "/bin/helm"); err == nil {
		return p
	}
	msg := "no bin/helm: run hack/build-tools.sh helm (helm.sh/helm/v4 at HELM_VERSION of hack/versions.env)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + ", and CI is set: hack/test.sh builds it")
	}
	t.Skip(msg)
	return ""
}

func runHelm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	// No user configuration, repositories or cache leak in.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// helmTemplate renders the chart as helm install would, without a cluster.
// The Prometheus Operator and KSMScale APIs are announced, as in a cluster
// that has them.
func helmTemplate(t *testing.T, c chartCase) []byte {
	t.Helper()
	args := []string{"template", c.release, chartDir, "--namespace", chartNamespace,
		"--api-versions", "monitoring.coreos.com/v1", "--api-versions", "monitor.example.com/v1alpha1"}
	if c.values != "" {
		args = append(args, "--values", c.values)
	}
	return runHelm(t, args...)
}

func decodeAll(t *testing.T, what string, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

func renderChart(t *testing.T, c chartCase) []*unstructured.Unstructured {
	t.Helper()
	return decodeAll(t, "helm template "+c.name, helmTemplate(t, c))
}

// find returns the one object of kind and name, failing when there is not
// exactly one.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var got []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			got = append(got, o)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d objects %s %s, want 1", len(got), kind, name)
	}
	return got[0]
}

// TestChartVersionIsVERSION: appVersion is VERSION (and so the default image
// tag), version is VERSION without its v; bumping VERSION without the chart
// fails here.
func TestChartVersionIsVERSION(t *testing.T) {
	b, err := os.ReadFile(chartDir + "/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	v := version(t)
	if chart.APIVersion != "v2" || chart.Name != "ksm-scale-operator" {
		t.Errorf("Chart.yaml: apiVersion %q name %q, want v2 ksm-scale-operator", chart.APIVersion, chart.Name)
	}
	if chart.AppVersion != v || chart.Version != strings.TrimPrefix(v, "v") {
		t.Errorf("Chart.yaml: version %q appVersion %q, want %q and %q (VERSION)", chart.Version, chart.AppVersion, strings.TrimPrefix(v, "v"), v)
	}
}

// TestChartFilesInSync: the chart's files/ are exact copies of their config/
// sources (hack/chart-sync.sh --check, which make verify runs too).
func TestChartFilesInSync(t *testing.T) {
	cmd := exec.Command(root+"/hack/chart-sync.sh", "--check")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the chart's copies of config/ are stale: %v\n%s", err, out)
	}
}

// TestChartLint is helm lint --strict (warnings are errors) with the default
// values and with every toggle on.
func TestChartLint(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", chartNamespace}
			if c.values != "" {
				args = append(args, "--values", c.values)
			}
			t.Logf("%s", runHelm(t, args...))
		})
	}
}

// TestChartTemplateGolden compares helm template output with
// testdata/chart/<case>.golden.yaml; go test -run TestChartTemplateGolden
// -update rewrites them. The golden files make every change of the rendered
// install visible in review.
func TestChartTemplateGolden(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			got := helmTemplate(t, c)
			path := filepath.Join("testdata", "chart", c.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./test/manifests -run TestChartTemplateGolden -update writes it)", err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("helm template %s differs from %s (-want +got); if intended, rerun with -update:\n%s", c.name, path, d)
			}
		})
	}
}

// TestChartMatchesConfigDefault: helm template with the default values and
// kubectl kustomize config/default install the same thing. Every object of
// config/default has its counterpart in the chart (but the Namespace: Helm
// installs into one), with the same CRD, the same RBAC rules, roleRefs and
// subjects, the same admission policy, and the same manager container.
func TestChartMatchesConfigDefault(t *testing.T) {
	chart := renderChart(t, chartCases[0])
	config := render(t, "config/default")

	// config/default's admission policy is named ksmscale-bind-check...; the
	// chart's follow its full name.
	renamed := map[string]string{
		"ValidatingAdmissionPolicy/ksmscale-bind-check.monitor.example.com":        "ksm-scale-operator-bind-check.monitor.example.com",
		"ValidatingAdmissionPolicyBinding/ksmscale-bind-check.monitor.example.com": "ksm-scale-operator-bind-check.monitor.example.com",
	}
	for _, want := range config {
		kind, name := want.GetKind(), want.GetName()
		if kind == "Namespace" {
			continue
		}
		if n, ok := renamed[kind+"/"+name]; ok {
			name = n
		}
		t.Run(kind+"/"+name, func(t *testing.T) {
			got := find(t, chart, kind, name)
			if got.GetNamespace() != want.GetNamespace() {
				t.Errorf("namespace %q, want %q", got.GetNamespace(), want.GetNamespace())
			}
			var fields [][]string
			switch kind {
			case "CustomResourceDefinition", "ValidatingAdmissionPolicy":
				fields = [][]string{{"spec"}}
			case "ValidatingAdmissionPolicyBinding":
				fields = [][]string{{"spec", "validationActions"}, {"spec", "matchResources"}, {"spec", "paramRef"}}
			case "ClusterRole", "Role":
				fields = [][]string{{"rules"}, {"aggregationRule"}}
			case "ClusterRoleBinding", "RoleBinding":
				fields = [][]string{{"roleRef"}, {"subjects"}}
			case "Service":
				fields = [][]string{{"spec", "ports"}}
			case "Deployment":
				fields = [][]string{{"spec", "replicas"}, {"spec", "template", "spec", "securityContext"},
					{"spec", "template", "spec", "terminationGracePeriodSeconds"}, {"spec", "template", "spec", "serviceAccountName"}}
				compareManager(t, got, want)
			}
			for _, f := range fields {
				w, _, _ := unstructured.NestedFieldNoCopy(want.Object, f...)
				g, _, _ := unstructured.NestedFieldNoCopy(got.Object, f...)
				if d := cmp.Diff(w, g); d != "" {
					t.Errorf("%s differs from config/default (-config +chart):\n%s", strings.Join(f, "."), d)
				}
			}
		})
	}
	// And nothing the chart installs by default is missing from config/default.
	names := map[string]bool{}
	for _, o := range config {
		n := o.GetName()
		if r, ok := renamed[o.GetKind()+"/"+n]; ok {
			n = r
		}
		names[o.GetKind()+"/"+n] = true
	}
	for _, o := range chart {
		if !names[o.GetKind()+"/"+o.GetName()] {
			t.Errorf("the chart's default install has %s, config/default has not", describe(o))
		}
	}
}

// compareManager compares the manager containers: same image repository and
// tag (VERSION), same flags (the chart passes --ksm-cluster-role, whose value
// is the default), ports, probes, resources and securityContext.
func compareManager(t *testing.T, chart, config *unstructured.Unstructured) {
	t.Helper()
	container := func(o *unstructured.Unstructured) map[string]any {
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			if m := c.(map[string]any); m["name"] == "manager" {
				return m
			}
		}
		t.Fatalf("%s has no container manager", describe(o))
		return nil
	}
	g, w := container(chart), container(config)
	args := func(c map[string]any) []string {
		var out []string
		for _, a := range c["args"].([]any) {
			if s := a.(string); s != "--ksm-cluster-role=ksm-scale-operator-kube-state-metrics" {
				out = append(out, s)
			}
		}
		sort.Strings(out)
		return out
	}
	if d := cmp.Diff(args(w), args(g)); d != "" {
		t.Errorf("manager args differ (-config +chart):\n%s", d)
	}
	for _, k := range []string{"image", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext"} {
		if d := cmp.Diff(w[k], g[k]); d != "" {
			t.Errorf("manager %s differs (-config +chart):\n%s", k, d)
		}
	}
}

// TestChartKSMClusterRoleName: with a release not named after the chart, the
// kube-state-metrics ClusterRole is renamed, and the three places that name
// it agree: the role, the operator's bind rule and --ksm-cluster-role, and
// the admission policy. A mismatch would leave the operator unable to bind
// (or the policy checking the wrong role).
func TestChartKSMClusterRoleName(t *testing.T) {
	objs := renderChart(t, chartCases[1])
	const want = "kso-ksm-scale-operator-kube-state-metrics"
	find(t, objs, "ClusterRole", want)

	manager := find(t, objs, "ClusterRole", "kso-ksm-scale-operator-manager")
	rules, _, _ := unstructured.NestedSlice(manager.Object, "rules")
	var bind []string
	for _, r := range rules {
		r := r.(map[string]any)
		if verbs, _ := r["verbs"].([]any); reflect.DeepEqual(verbs, []any{"bind"}) {
			for _, n := range r["resourceNames"].([]any) {
				bind = append(bind, n.(string))
			}
		}
	}
	if !reflect.DeepEqual(bind, []string{want}) {
		t.Errorf("the operator may bind %v, want [%s]", bind, want)
	}

	dep := find(t, objs, "Deployment", "kso-ksm-scale-operator")
	cs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	args := fmt.Sprint(cs[0].(map[string]any)["args"])
	if !strings.Contains(args, "--ksm-cluster-role="+want+" ") && !strings.HasSuffix(args, "--ksm-cluster-role="+want+"]") {
		t.Errorf("manager args %s lack --ksm-cluster-role=%s", args, want)
	}

	policy := find(t, objs, "ValidatingAdmissionPolicy", "kso-ksm-scale-operator-bind-check.monitor.example.com")
	vars, _, _ := unstructured.NestedSlice(policy.Object, "spec", "variables")
	if got := vars[0].(map[string]any)["expression"]; got != "'"+want+"'" {
		t.Errorf("admission policy checks role %v, want '%s'", got, want)
	}
	binding := find(t, objs, "ValidatingAdmissionPolicyBinding", "kso-ksm-scale-operator-bind-check.monitor.example.com")
	if got, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); got != policy.GetName() {
		t.Errorf("policy binding names policy %q, want %q", got, policy.GetName())
	}
}

// TestChartMonitoringMatchesConfig: with everything on, the ServiceMonitors
// and the PrometheusRule carry the specs of config/prometheus (the rules
// with runbookUrl's base), additionalLabels reach them, the dashboard
// ConfigMap carries config/grafana's JSON with the sidecar's label, and the
// NetworkPolicies are config/networkpolicy's.
func TestChartMonitoringMatchesConfig(t *testing.T) {
	objs := renderChart(t, chartCases[1])
	config := render(t, "config/prometheus")
	values := readValues(t, chartCases[1].values)

	shards := find(t, objs, "ServiceMonitor", "kso-ksm-scale-operator-shards")
	if d := cmp.Diff(find(t, config, "ServiceMonitor", "ksm-scale-shards").Object["spec"], shards.Object["spec"]); d != "" {
		t.Errorf("shard ServiceMonitor spec differs from config/prometheus (-config +chart):\n%s", d)
	}
	operator := find(t, objs, "ServiceMonitor", "kso-ksm-scale-operator")
	wantEP, _, _ := unstructured.NestedSlice(find(t, config, "ServiceMonitor", "ksm-scale-operator").Object, "spec", "endpoints")
	gotEP, _, _ := unstructured.NestedSlice(operator.Object, "spec", "endpoints")
	if d := cmp.Diff(wantEP, gotEP); d != "" {
		t.Errorf("operator ServiceMonitor endpoints differ from config/prometheus (-config +chart):\n%s", d)
	}
	// The operator ServiceMonitor must select the chart's metrics Service.
	svc := find(t, objs, "Service", "kso-ksm-scale-operator-metrics")
	sel, _, _ := unstructured.NestedStringMap(operator.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.GetLabels()[k] != v {
			t.Errorf("operator ServiceMonitor selects %s=%s; Service %s has %q", k, v, svc.GetName(), svc.GetLabels()[k])
		}
	}

	rule := find(t, objs, "PrometheusRule", "kso-ksm-scale-operator")
	base := values["runbookUrl"].(string)
	wantSpec := find(t, config, "PrometheusRule", "ksm-scale-operator").Object["spec"]
	b, _ := yaml.Marshal(wantSpec)
	b = bytes.ReplaceAll(b, []byte("https://github.com/ksmscale/ksm-scale-operator/blob/main/docs/runbooks.md#"), []byte(base+"#"))
	var wantRunbook any
	if err := yaml.Unmarshal(b, &wantRunbook); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantRunbook, rule.Object["spec"]); d != "" {
		t.Errorf("PrometheusRule spec differs from config/prometheus with runbookUrl %s (-want +chart):\n%s", base, d)
	}
	if !strings.Contains(string(b), base+"#ksmshardsmissing") {
		t.Errorf("no runbook_url %s#ksmshardsmissing in the rendered rules", base)
	}

	dashboard := find(t, objs, "ConfigMap", "kso-ksm-scale-operator-dashboard")
	if dashboard.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard=\"1\"", dashboard.GetLabels())
	}
	src, err := os.ReadFile(root + "/config/grafana/ksm-scale-operator.json")
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := unstructured.NestedString(dashboard.Object, "data", "ksm-scale-operator.json")
	if strings.TrimSpace(got) != strings.TrimSpace(string(src)) {
		t.Error("the dashboard ConfigMap's JSON is not config/grafana/ksm-scale-operator.json")
	}

	// The NetworkPolicy, in each of ksmNamespaces, is config/networkpolicy's
	// (whose scrapers are monitoring and the operator's namespace, as in
	// values-all.yaml).
	wantNP := find(t, render(t, "config/networkpolicy"), "NetworkPolicy", "kube-state-metrics-scrapers").Object["spec"]
	for _, ns := range values["ksmNamespaces"].([]any) {
		var np *unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() == "NetworkPolicy" && o.GetNamespace() == ns {
				np = o
			}
		}
		if np == nil {
			t.Errorf("no NetworkPolicy in ksmNamespaces' %s", ns)
			continue
		}
		if d := cmp.Diff(wantNP, np.Object["spec"]); d != "" {
			t.Errorf("NetworkPolicy in %s differs from config/networkpolicy (-config +chart):\n%s", ns, d)
		}
	}

	for o, key := range map[*unstructured.Unstructured]string{shards: "serviceMonitor", operator: "serviceMonitor", rule: "prometheusRule", dashboard: "dashboard"} {
		for k, v := range values[key].(map[string]any)["additionalLabels"].(map[string]any) {
			if o.GetLabels()[k] != v {
				t.Errorf("%s: label %s=%q, want %q (%s.additionalLabels)", describe(o), k, o.GetLabels()[k], v, key)
			}
		}
	}
}

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestChartRejectsBadValues: values.schema.json and the templates' checks
// turn mistakes into errors at helm install, naming the value, instead of a
// release that does something else.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"misspelt key", []string{"replica=3"}, "replica"},
		{"namespaces not a list", []string{"ksmNamespaces=monitoring"}, "ksmNamespaces"},
		{"image digest not sha256", []string{"image.sha=latest"}, "sha"},
		{"KSMScale namespace not allowed", []string{"ksmScale.enabled=true", "ksmScale.spec.namespace=default"}, "not in ksmNamespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", chartRelease, chartDir}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			cmd := exec.Command(helm(t), args...)
			home := t.TempDir()
			cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("helm template --set %v succeeded; want an error naming %q", tc.set, tc.want)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("helm template --set %v failed with %q; want it to name %q", tc.set, out, tc.want)
			}
			t.Logf("rejected as expected: %s", strings.TrimSpace(string(out)))
		})
	}
}
