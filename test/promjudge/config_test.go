package promjudge

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/test/tools"
)

func TestScaleFor(t *testing.T) {
	f := ScaleFor(30, 10*time.Second)
	for _, tc := range []struct{ in, want time.Duration }{
		{5 * time.Minute, 10 * time.Second},
		{10 * time.Minute, 20 * time.Second},
		{15 * time.Minute, 30 * time.Second},
		{30 * time.Minute, time.Minute},
		{time.Minute, 10 * time.Second}, // 2s, floored
		{0, 10 * time.Second},
	} {
		if got := f(tc.in); got != tc.want {
			t.Errorf("ScaleFor(30, 10s)(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestConfig renders the whole configuration from the shipped files and
// has promtool, the checker of the Prometheus that will load it, accept
// the configuration and the rule file; every `for:` is scaled.
func TestConfig(t *testing.T) {
	promtool := tools.Promtool(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	config, rules, err := Config(Options{
		Kubeconfig:     kubeconfig,
		ForScale:       ScaleFor(30, 10*time.Second),
		StaticTargets:  map[string][]string{"ksm-scale-operator": {"127.0.0.1:8080"}},
		ScrapeInterval: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"prometheus.yml": config, "rules.yml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, config)
	}
	t.Logf("promtool: %s", strings.TrimSpace(string(out)))

	var parsed struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert string `json:"alert"`
				For   string `json:"for"`
			}
		}
	}
	if err := yaml.Unmarshal(rules, &parsed); err != nil {
		t.Fatal(err)
	}
	fors := map[string]string{}
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			fors[r.Alert] = r.For
		}
	}
	for alert, want := range map[string]string{"KSMShardDown": "10s", "KSMShardTargetDown": "20s", "KSMShardsMissing": "30s", "KSMScaleHandoverUnverified": "1m"} {
		if fors[alert] != want {
			t.Errorf("%s: for %q, want %q (scaled by 30)", alert, fors[alert], want)
		}
	}
	if !strings.Contains(string(config), "job_name: ksm-scale-operator") || !strings.Contains(string(config), "static-ksm_scale_operator.json") {
		t.Errorf("static job missing:\n%s", config)
	}
}
