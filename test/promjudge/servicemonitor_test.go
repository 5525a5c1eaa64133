package promjudge

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTranslateShippedServiceMonitor checks the scrape configs made from
// the repository's servicemonitor-shards.yaml: one per endpoint, role pod,
// the Prometheus Operator's selection and target labels first, then the
// file's relabelings in their order, honor_labels as the file says.
func TestTranslateShippedServiceMonitor(t *testing.T) {
	sm, err := readServiceMonitor(repoFile("config/prometheus/servicemonitor-shards.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if sm.namespaces() != nil || sm.selector().String() != "app.kubernetes.io/managed-by=ksm-scale-operator,app.kubernetes.io/name=kube-state-metrics" {
		t.Errorf("discovery in namespaces %v with selector %q, want every namespace and the matchLabels", sm.namespaces(), sm.selector())
	}
	scs := sm.scrapeConfigs("pods.json", 2*time.Second)
	if len(scs) != 2 {
		t.Fatalf("%d scrape configs, want one per endpoint (2)", len(scs))
	}
	// Each relabeling as action:target (source labels) for comparison.
	describe := func(rc []relabelConfig) []string {
		var out []string
		for _, r := range rc {
			a := r.Action
			if a == "" {
				a = "replace"
			}
			d := a + ":" + r.TargetLabel
			if len(r.SourceLabels) > 0 {
				d += "(" + strings.Join(r.SourceLabels, ",") + ")"
			}
			if a == "keep" || a == "drop" || a == "labeldrop" {
				d += "=" + r.Regex
			}
			out = append(out, d)
		}
		return out
	}
	operator := func(port string) []string {
		return []string{
			"keep:(__meta_kubernetes_pod_label_app_kubernetes_io_managed_by,__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by)=(ksm-scale-operator);true",
			"keep:(__meta_kubernetes_pod_label_app_kubernetes_io_name,__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name)=(kube-state-metrics);true",
			"keep:(__meta_kubernetes_pod_container_port_name)=" + port,
			"drop:(__meta_kubernetes_pod_phase)=(Failed|Succeeded)",
			"replace:namespace(__meta_kubernetes_namespace)",
			"replace:container(__meta_kubernetes_pod_container_name)",
			"replace:pod(__meta_kubernetes_pod_name)",
			"replace:service(__meta_kubernetes_pod_label_ksmscale_example_com)",
			"replace:job(__meta_kubernetes_pod_label_ksmscale_example_com)",
			"replace:endpoint",
		}
	}
	own := []string{
		"replace:shard(__meta_kubernetes_pod_label_shard_id)",
		"replace:total_shards(__meta_kubernetes_pod_label_total_shards)",
		"replace:ksmscale(__meta_kubernetes_pod_label_ksmscale_example_com)",
		"replace:job",
	}
	for _, tc := range []struct {
		name        string
		sc          scrapeConfig
		port        string
		honorLabels bool
		relabel     []string
	}{
		{"http-metrics", scs[0], "http-metrics", true, slices.Concat(operator("http-metrics"), []string{
			"labeldrop:=(pod|namespace|service|container)",
			"replace:instance(__meta_kubernetes_pod_label_ksmscale_example_com,__meta_kubernetes_pod_label_shard_id)",
		}, own)},
		{"telemetry", scs[1], "telemetry", false, slices.Concat(operator("telemetry"), own)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := tc.sc
			if sc.HonorLabels != tc.honorLabels {
				t.Errorf("honor_labels %v, want %v", sc.HonorLabels, tc.honorLabels)
			}
			if sc.ScrapeInterval != "2s" || sc.ScrapeTimeout != "2s" {
				t.Errorf("interval %s, timeout %s; want the option's 2s for both", sc.ScrapeInterval, sc.ScrapeTimeout)
			}
			if len(sc.FileSDConfigs) != 1 || !slices.Equal(sc.FileSDConfigs[0].Files, []string{"pods.json"}) {
				t.Errorf("file_sd_configs %+v, want the pod targets file", sc.FileSDConfigs)
			}
			if got := describe(sc.RelabelConfigs); !slices.Equal(got, tc.relabel) {
				t.Errorf("relabelings\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tc.relabel, "\n      "))
			}
			byTarget := map[string]relabelConfig{}
			for _, r := range sc.RelabelConfigs {
				byTarget[r.TargetLabel] = r
			}
			if r := byTarget["endpoint"]; r.Replacement == nil || *r.Replacement != tc.port {
				t.Errorf("endpoint label %+v, want %q", r, tc.port)
			}
			if r := byTarget["service"]; r.Replacement == nil || *r.Replacement != "kube-state-metrics-$1" {
				t.Errorf("service label %+v, want the operator's Service name kube-state-metrics-<ksmscale>", r)
			}
			// The last job relabeling wins: the file's fixed job name.
			if r := byTarget["job"]; r.Replacement == nil || *r.Replacement != "kube-state-metrics" {
				t.Errorf("job label %+v, want kube-state-metrics", r)
			}
		})
	}
	if r := scs[0].RelabelConfigs[len(operator(""))+1]; r.Regex != "(.+);(.+)" || r.Replacement == nil || *r.Replacement != "$1-shard-$2" {
		t.Errorf("instance relabeling %+v, want (.+);(.+) -> $1-shard-$2", r)
	}
}

// TestUnknownServiceMonitorFields makes sure a field the translation does
// not reproduce fails loudly, naming the field, instead of being dropped.
func TestUnknownServiceMonitorFields(t *testing.T) {
	base, err := os.ReadFile(repoFile("config/prometheus/servicemonitor-shards.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "  - port: http-metrics\n"
	if !strings.Contains(string(base), endpoint) {
		t.Fatalf("servicemonitor-shards.yaml has no line %q to add fields after", endpoint)
	}
	// Each case replaces the first occurrence of old by new.
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"metricRelabelings", endpoint, endpoint + "    metricRelabelings: [{action: drop, regex: x}]\n", "metricRelabelings"},
		{"tlsConfig", endpoint, endpoint + "    tlsConfig: {insecureSkipVerify: true}\n", "tlsConfig"},
		{"params", endpoint, endpoint + "    params: {x: [y]}\n", "params"},
		{"path", endpoint, endpoint + "    path: /other\n", "path"},
		{"bearerTokenFile", endpoint, endpoint + "    bearerTokenFile: /t\n", "bearerTokenFile"},
		{"scheme https", endpoint, endpoint + "    scheme: https\n", "scheme"},
		{"unknown action", "- action: labeldrop", "- action: Frobnicate", "Frobnicate"},
		{"unknown relabeling field", "- action: labeldrop", "- action: labeldrop\n      sourceLabelz: [a]", "sourceLabelz"},
		{"matchExpressions", "    matchLabels:\n", "    matchExpressions: [{key: a, operator: Exists}]\n    matchLabels:\n", "matchExpressions"},
		{"jobLabel", "spec:\n", "spec:\n  jobLabel: app\n", "jobLabel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(string(base), tc.old, tc.new, 1)
			if in == string(base) {
				t.Fatalf("%q not found in servicemonitor-shards.yaml", tc.old)
			}
			_, err := parseServiceMonitor([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
