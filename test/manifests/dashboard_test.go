package manifests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/test/dashboard"
	"github.com/ksmscale/ksm-scale-operator/test/tools"
)

// The Grafana dashboard's tests. Every panel expression is parsed by the real
// PromQL parser, Prometheus' own promtool (`promtool check rules` on the
// expressions written as recording rules), without adding
// github.com/prometheus/prometheus to go.mod; every metric an expression
// names must be one that we, controller-runtime, kube-state-metrics,
// Prometheus or cAdvisor export. That the names appear in a live scrape of
// our shards, KSM's telemetry and the operator is checked by the e2e suite
// (TestDashboardMetricsLive in test/e2e/dashboard_test.go); both read the
// dashboard through test/dashboard.

const dashboardFile = root + "/" + dashboard.File

// dashboardMetrics are the metrics the dashboard may use, by who exports them.
// Ours are read from internal/metrics instead (ourMetrics).
var dashboardMetrics = map[string]string{
	// Prometheus, per target.
	"up":                      "prometheus",
	"scrape_duration_seconds": "prometheus",
	"scrape_samples_scraped":  "prometheus",
	// Only with extra scrape metrics (see KSMShardScrapeSlow).
	"scrape_timeout_seconds": "prometheus",
	// cAdvisor (kubelet), per container.
	"container_memory_working_set_bytes": "cadvisor",
	"container_cpu_usage_seconds_total":  "cadvisor",
	// controller-runtime on the operator's metrics endpoint.
	"controller_runtime_reconcile_total":               "controller-runtime",
	"controller_runtime_reconcile_errors_total":        "controller-runtime",
	"controller_runtime_reconcile_time_seconds_bucket": "controller-runtime",
	"workqueue_depth":                                    "controller-runtime",
	"workqueue_queue_duration_seconds_bucket":            "controller-runtime",
	"leader_election_master_status":                      "controller-runtime",
	"controller_runtime_terminal_reconcile_errors_total": "controller-runtime",
	// kube-state-metrics v2 documented families (docs/metrics/), object
	// endpoint.
	"kube_pod_info":                      "kube-state-metrics",
	"kube_pod_container_resource_limits": "kube-state-metrics",
	"kube_node_info":                     "kube-state-metrics",
	"kube_namespace_created":             "kube-state-metrics",
	"kube_deployment_created":            "kube-state-metrics",
	"kube_service_info":                  "kube-state-metrics",
	// kube-state-metrics' telemetry endpoint.
	"kube_state_metrics_list_total":    "kube-state-metrics",
	"kube_state_metrics_watch_total":   "kube-state-metrics",
	"kube_state_metrics_shard_ordinal": "kube-state-metrics",
	"kube_state_metrics_total_shards":  "kube-state-metrics",
	"kube_state_metrics_build_info":    "kube-state-metrics",
}

// ourMetrics are the names internal/metrics registers (Name: "ksmscale_...").
func ourMetrics(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(root + "/internal/metrics/*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	re := regexp.MustCompile(`Name:\s*"(ksmscale_[a-z0-9_]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("found no ksmscale_* metric in internal/metrics")
	}
	return names
}

// readDashboard reads the dashboard and its expressions through
// test/dashboard, the reading the e2e suite checks against live scrapes.
func readDashboard(t *testing.T) (dashboard.Dashboard, []dashboard.Query) {
	t.Helper()
	d, qs, err := dashboard.Read(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	return d, qs
}

// checkExprs writes the expressions as recording rules and runs promtool
// check rules on them: the PromQL parser of the Prometheus that evaluates
// them. The rule names carry the index, which promtool's errors name.
func checkExprs(t *testing.T, qs []dashboard.Query) (string, error) {
	t.Helper()
	type rec struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rec
	for i, q := range qs {
		rules = append(rules, rec{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: dashboard.GrafanaVars.Replace(q.Expr)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tools.Promtool(t), "check", "rules", path).CombinedOutput()
	return string(out), err
}

// TestDashboardPromQLParses: every panel expression and variable query of
// the dashboard parses; and the check fails on a broken expression.
func TestDashboardPromQLParses(t *testing.T) {
	_, qs := readDashboard(t)
	if len(qs) < 10 {
		t.Fatalf("only %d expressions in %s", len(qs), dashboardFile)
	}
	out, err := checkExprs(t, qs)
	if err != nil {
		for i, q := range qs {
			t.Logf("dashboard:query_%d = %s: %s", i, q.Where, q.Expr)
		}
		t.Fatalf("promtool check rules on the dashboard's expressions: %v\n%s", err, out)
	}
	t.Logf("%d expressions: %s", len(qs), strings.TrimSpace(out))

	t.Run("rejects a broken expression", func(t *testing.T) {
		out, err := checkExprs(t, []dashboard.Query{{Where: "broken", Expr: `sum by (ksmscale (up{job="kube-state-metrics"})`}})
		if err == nil {
			t.Fatalf("promtool accepted a broken expression:\n%s", out)
		}
		t.Logf("rejected as expected: %s", strings.TrimSpace(out))
	})
}

// TestDashboardMetricsExist: every metric the dashboard names is exported by
// us (internal/metrics), controller-runtime, kube-state-metrics, Prometheus
// or cAdvisor; and the panels the issue asks for are there (Ready vs
// desired, balance, scrape duration vs timeout, memory vs limit, list/watch
// errors, reconciles, hand-overs).
func TestDashboardMetricsExist(t *testing.T) {
	_, qs := readDashboard(t)
	ours := ourMetrics(t)
	used := map[string]bool{}
	for _, q := range qs {
		for _, n := range dashboard.MetricNames(q.Expr) {
			used[n] = true
			if !ours[n] && dashboardMetrics[n] == "" {
				t.Errorf("%s uses metric %s, which neither internal/metrics nor the list in dashboard_test.go (controller-runtime, kube-state-metrics, Prometheus, cAdvisor) has: %s", q.Where, n, q.Expr)
			}
		}
	}
	for _, need := range []string{
		"ksmscale_shards_total", "ksmscale_shards_active", // Ready vs desired
		"scrape_samples_scraped", "kube_pod_info", // balance
		"scrape_duration_seconds", "scrape_timeout_seconds",
		"container_memory_working_set_bytes", "kube_pod_container_resource_limits",
		"kube_state_metrics_list_total", "kube_state_metrics_watch_total",
		"controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total",
		"ksmscale_shard_ready", // hand-overs: readiness changes
	} {
		if !used[need] {
			t.Errorf("no panel uses %s", need)
		}
	}
}

// TestDashboardShape: what Grafana and its sidecar need: a fixed uid, unique
// panel ids, every query on the ${datasource} variable, a legend and refId
// per target.
func TestDashboardShape(t *testing.T) {
	d, _ := readDashboard(t)
	if d.UID != "ksm-scale-operator" || d.Title == "" {
		t.Errorf("uid %q title %q, want uid ksm-scale-operator and a title", d.UID, d.Title)
	}
	ids := map[int]string{}
	var walk func([]dashboard.Panel)
	walk = func(ps []dashboard.Panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.Type != "row" {
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				if p.Data["uid"] != "${datasource}" {
					t.Errorf("panel %q datasource %v, want uid ${datasource}", p.Title, p.Data)
				}
			}
			for _, tg := range p.Targets {
				if tg["refId"] == "" || tg["legendFormat"] == "" {
					t.Errorf("panel %q: target %v lacks refId or legendFormat", p.Title, tg)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v["name"].(string)] = true
	}
	if !vars["datasource"] || !vars["ksmscale"] {
		t.Errorf("template variables %v, want datasource and ksmscale", vars)
	}
}

// TestDashboardKustomize: config/grafana renders the ConfigMap the sidecar
// loads, holding the JSON file unchanged.
func TestDashboardKustomize(t *testing.T) {
	objs := render(t, "config/grafana")
	if len(objs) != 1 || objs[0].GetKind() != "ConfigMap" {
		t.Fatalf("config/grafana rendered %d objects, want one ConfigMap", len(objs))
	}
	cm := objs[0]
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard=\"1\"", cm.GetLabels())
	}
	src, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := cm.Object["data"].(map[string]any)
	if data["ksm-scale-operator.json"] != string(src) {
		t.Error("the ConfigMap's ksm-scale-operator.json is not the file")
	}
}
