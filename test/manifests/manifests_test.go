// Package manifests checks the kustomize trees as users render them
// (kubectl kustomize, the way make install.yaml and kubectl apply -k do):
// the release facts that live in more than one file must agree, and every
// shipped tree is accepted by a real API server (server-side apply, dry-run)
// with our CRD and the Prometheus Operator CRDs installed (dryrun_test.go).
// The Helm chart is checked the same way and against config/default
// (chart_test.go, helminstall_test.go), and the Grafana dashboard's PromQL
// with promtool (dashboard_test.go).
//
// kubectl comes from bin/ (make tools, or hack/test.sh, builds it), else from
// PATH; helm only from bin/ (hack/build-tools.sh helm); promtool from PATH
// (Debian's prometheus package). Without one the tests that need it skip on
// a developer machine and fail in CI.
package manifests

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const root = "../.."

func kubectl(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath(root + "/bin/kubectl"); err == nil {
		return p
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no kubectl in bin/ or PATH, and CI is set: hack/test.sh builds bin/kubectl")
	}
	t.Skip("no kubectl in bin/ or PATH: run make tools")
	return ""
}

// render returns the objects of kubectl kustomize dir.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(kubectl(t), "kustomize", root+"/"+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(&stdout, 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubectl kustomize %s: %v", dir, err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

func version(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(root + "/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(string(b))
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(v) {
		t.Fatalf("VERSION %q is not a semantic version with a leading v", v)
	}
	return v
}

// TestInstallImageIsVersion: the manager image of config/default, what make
// install.yaml puts in dist/install.yaml, is the image make image builds,
// tagged with VERSION, the one place the version lives.
func TestInstallImageIsVersion(t *testing.T) {
	want := "ghcr.io/ksmscale/ksm-scale-operator:" + version(t)
	var images []string
	for _, o := range render(t, "config/default") {
		if o.GetKind() != "Deployment" || o.GetName() != "ksm-scale-operator" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			if m, ok := c.(map[string]any); ok && m["name"] == "manager" {
				images = append(images, m["image"].(string))
			}
		}
	}
	if len(images) != 1 || images[0] != want {
		t.Fatalf("manager image in config/default = %v, want [%s]; set newTag in config/manager/kustomization.yaml to VERSION", images, want)
	}
}

// TestChangelogHasVersion: a release's version has its CHANGELOG section
// (Keep a Changelog: "## [0.1.0] - date", the version without its v), and
// there is an Unreleased section to collect the next changes in.
func TestChangelogHasVersion(t *testing.T) {
	b, err := os.ReadFile(root + "/CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimPrefix(version(t), "v")
	if !regexp.MustCompile(`(?m)^## \[` + regexp.QuoteMeta(v) + `\] - \d{4}-\d{2}-\d{2}$`).Match(b) {
		t.Errorf("CHANGELOG.md has no section \"## [%s] - YYYY-MM-DD\" for VERSION", v)
	}
	if !regexp.MustCompile(`(?m)^## \[Unreleased\]$`).Match(b) {
		t.Error("CHANGELOG.md has no \"## [Unreleased]\" section")
	}
}

// TestRunbookURLExample renders config/examples/runbook-url, the overlay
// docs/prometheus.md shows: every alert's runbook_url has the new base and
// keeps its own anchor, and the input ConfigMap is not in the output.
func TestRunbookURLExample(t *testing.T) {
	const base = "https://wiki.example.com/ksm/runbooks"
	n := 0
	for _, o := range render(t, "config/examples/runbook-url") {
		if o.GetKind() == "ConfigMap" {
			t.Errorf("ConfigMap %s is in the output; it is input only (local-config)", o.GetName())
		}
		if o.GetKind() != "PrometheusRule" {
			continue
		}
		groups, _, _ := unstructured.NestedSlice(o.Object, "spec", "groups")
		for _, g := range groups {
			rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
			for _, r := range rules {
				alert, _, _ := unstructured.NestedString(r.(map[string]any), "alert")
				url, _, _ := unstructured.NestedString(r.(map[string]any), "annotations", "runbook_url")
				if want := base + "#" + strings.ToLower(alert); url != want {
					t.Errorf("%s: runbook_url %q, want %q", alert, url, want)
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts rendered from config/examples/runbook-url")
	}
}
