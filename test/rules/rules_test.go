// Package rules tests the alerting rules of config/prometheus with promtool:
// `promtool check rules` on the shipped PrometheusRule and `promtool test
// rules` on the scenarios in testdata/ (steady state, healthy and stuck
// reshards, two KSMScales with different shard counts, unsharded mode, and
// the upstream kube-state-metrics rules next to KSMScales).
//
// promtool comes from Debian's prometheus package, which .ci/run installs. The
// tests skip without it on a developer machine and fail without it in CI
// (CI set), so a missing promtool can never pass CI silently.
package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/test/tools"
)

const (
	ruleFile = "../../config/prometheus/prometheusrule.yaml"
	// The name the test files give in rule_files.
	extracted = "ksm-scale-operator.rules.yaml"
	// RunbookBase is the one form every runbook_url has: this base, "#", the
	// alert name in lower case (the anchor of its section in runbooks.md).
	// config/examples/runbook-url replaces the base and keeps the anchor.
	runbookBase = "https://github.com/ksmscale/ksm-scale-operator/blob/main/docs/runbooks.md"
)

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

// spec returns the rule groups of the shipped PrometheusRule, whose .spec is
// what Prometheus loads as a rule file.
func spec(t *testing.T) (ruleGroups, []byte) {
	t.Helper()
	raw, err := os.ReadFile(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s: %v", ruleFile, err)
	}
	if obj.Kind != "PrometheusRule" {
		t.Fatalf("%s: kind %q, want PrometheusRule", ruleFile, obj.Kind)
	}
	var groups ruleGroups
	if err := yaml.Unmarshal(obj.Spec, &groups); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.JSONToYAML(obj.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return groups, out
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out.String())
}

// TestCheckRules is `promtool check rules` on the PrometheusRule's spec:
// every expression parses, every template compiles, no duplicate names.
func TestCheckRules(t *testing.T) {
	bin := tools.Promtool(t)
	_, rules := spec(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, extracted), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, bin, "check", "rules", extracted)
}

// TestRuleUnitTests runs every testdata/*.yaml with promtool test rules
// against the shipped rules (and the upstream ones). The test files pin
// which alerts fire with which labels; annotations are left out of the rules
// they see, so the files need not repeat every description, and
// TestAlertsDocumented checks the annotations instead.
func TestRuleUnitTests(t *testing.T) {
	bin := tools.Promtool(t)
	groups, _ := spec(t)
	for gi := range groups.Groups {
		for ri := range groups.Groups[gi].Rules {
			groups.Groups[gi].Rules[ri].Annotations = nil
		}
	}
	stripped, err := yaml.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, extracted), stripped, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(f, ".rules.yaml") {
			tests = append(tests, filepath.Base(f))
		}
	}
	if len(tests) == 0 {
		t.Fatal("no test files in testdata/")
	}
	run(t, dir, bin, append([]string{"test", "rules"}, tests...)...)
}

// TestEveryAlertTested fails when an alert of the shipped rules has no test
// in testdata/ that expects it to fire, and none that expects it to stay
// silent: each alert must be shown both ways.
func TestEveryAlertTested(t *testing.T) {
	groups, _ := spec(t)
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	check := regexp.MustCompile(`(?m)^    alertname: (\S+)\n    exp_alerts:( \[\])?$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range check.FindAllStringSubmatch(string(b), -1) {
			if m[2] == "" {
				fires[m[1]] = true
			} else {
				silent[m[1]] = true
			}
		}
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if !fires[r.Alert] {
				t.Errorf("%s: no test in testdata/ expects it to fire", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: no test in testdata/ expects it to stay silent", r.Alert)
			}
		}
	}
}

// TestAlertsDocumented checks what promtool does not: every alert has a
// severity, a summary and a description, a runbook_url of the one form
// runbookBase#<alert in lower case> (what config/examples/runbook-url and a
// Helm value rely on), a section with that anchor in docs/runbooks.md and a
// row in docs/prometheus.md's alert table.
func TestAlertsDocumented(t *testing.T) {
	groups, _ := spec(t)
	runbooks, err := os.ReadFile("../../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	promDoc, err := os.ReadFile("../../docs/prometheus.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", r.Alert)
			}
			if want := runbookBase + "#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !strings.Contains(string(runbooks), "\n## "+r.Alert+"\n") {
				t.Errorf("%s: no section \"## %s\" in docs/runbooks.md", r.Alert, r.Alert)
			}
			if !strings.Contains(string(promDoc), fmt.Sprintf("| [%s](runbooks.md#%s) |", r.Alert, strings.ToLower(r.Alert))) {
				t.Errorf("%s: no row in the alert table of docs/prometheus.md", r.Alert)
			}
		}
	}
	sort.Strings(names)
	t.Logf("alerts: %s", strings.Join(names, ", "))
}
