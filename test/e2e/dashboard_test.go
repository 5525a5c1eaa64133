//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/test/dashboard"
)

// otherExporters are the metrics the dashboard uses that neither
// kube-state-metrics nor the operator exports, so no scrape in this suite
// can show them; each says who does. The list is kept honest both ways
// (checkDashboardNames): a name on it that our scrapes do show, or that
// the dashboard no longer uses, is an error.
var otherExporters = map[string]string{
	// Prometheus writes these per scrape target; they are not in any
	// target's /metrics.
	"up":                      "Prometheus: 1 if the target's last scrape succeeded",
	"scrape_duration_seconds": "Prometheus: duration of the target's last scrape",
	"scrape_samples_scraped":  "Prometheus: samples in the target's last scrape",
	"scrape_timeout_seconds":  "Prometheus with --enable-feature=extra-scrape-metrics: the target's scrape timeout",
	// The kubelet's cAdvisor endpoint (/metrics/cadvisor), per container;
	// kwok's nodes have no cAdvisor.
	"container_memory_working_set_bytes": "cAdvisor: working set of the KSM container",
	"container_cpu_usage_seconds_total":  "cAdvisor: CPU time of the KSM container",
}

// quietKSM are metrics kube-state-metrics defines but a healthy run of it
// does not expose, so no scrape here can show them; each says why. Instead
// the exact name must be in the kube-state-metrics binary the suite runs,
// so that a misspelling still fails, and it must not be in the scrapes (then
// the entry is stale).
var quietKSM = map[string]string{
	// KSM's pkg/watch counts LIST calls in a counter vector whose children
	// exist only after a LIST, and client_golang exposes a vector without
	// children not at all (no sample, no # TYPE). With client-go's streaming
	// watch-list (default since Kubernetes 1.35) the initial
	// list goes through WATCH, so a healthy KSM never calls LIST: the
	// dashboard's "LIST errors" panel stays empty until a fallback LIST.
	"kube_state_metrics_list_total": "counted per LIST call; streaming watch-list makes none",
}

// checkDashboardNames returns one message per problem: a metric the
// dashboard uses that no scrape exposed and that is on neither list; an
// entry of allow (other exporters) that the scrapes do expose or that the
// dashboard does not use; an entry of quiet (see quietKSM) that the scrapes
// do expose, that the dashboard does not use, or whose name the binary ksm
// does not contain. familyOnly lists the used metrics found only as a
// declared family without samples (a vector without children), which count
// as exported: the exporter knows the name.
func checkDashboardNames(used map[string][]string, exp *dashboard.Exposition, allow, quiet map[string]string, ksm []byte) (problems, familyOnly []string) {
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		has := exp.Has(n)
		if who, ok := allow[n]; ok {
			if has != "" {
				problems = append(problems, fmt.Sprintf("%s is on the allow-list of other exporters (%s) but our scrapes expose it (%s): take it off", n, who, has))
			}
			continue
		}
		if why, ok := quiet[n]; ok {
			if has != "" {
				problems = append(problems, fmt.Sprintf("%s is on the list of quiet KSM metrics (%s) but the scrapes expose it (%s): take it off", n, why, has))
			} else if !bytes.Contains(ksm, []byte(n)) {
				problems = append(problems, fmt.Sprintf("%s, used by %s, is on the list of quiet KSM metrics but the kube-state-metrics binary does not contain the name", n, strings.Join(used[n], "; ")))
			}
			continue
		}
		switch has {
		case "":
			problems = append(problems, fmt.Sprintf("%s, used by %s, is in no scrape of kube-state-metrics (metrics, telemetry) or the operator, and on neither list",
				n, strings.Join(used[n], "; ")))
		case "family":
			familyOnly = append(familyOnly, n)
		}
	}
	var stale []string
	for _, list := range []map[string]string{allow, quiet} {
		for n := range list {
			if len(used[n]) == 0 {
				stale = append(stale, n)
			}
		}
	}
	sort.Strings(stale)
	for _, n := range stale {
		problems = append(problems, fmt.Sprintf("%s is listed in dashboard_test.go but no panel uses it: take it off", n))
	}
	return problems, familyOnly
}

// scrapeInto adds one /metrics body to exp. Only loopback addresses are
// dialled, without any proxy: these tests must not reach off the machine.
func scrapeInto(t *testing.T, exp *dashboard.Exposition, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Fatalf("refusing to scrape %s: not a loopback address", rawURL)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(suiteCtx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The text format Exposition reads; KSM and client_golang serve it
	// when asked.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("scrape %s: %s: %s", rawURL, resp.Status, b)
	}
	before := len(exp.Samples)
	if err := exp.Add(resp.Body); err != nil {
		t.Fatalf("scrape %s: %v", rawURL, err)
	}
	t.Logf("scraped %s: %d sample names in all so far (+%d)", rawURL, len(exp.Samples), len(exp.Samples)-before)
}

// TestDashboardMetricsLive checks every metric name the Grafana dashboard
// uses against what really serves it: a kube-state-metrics shard pod of a
// KSMScale (its metrics port 8080 and telemetry port 8081, the real binary
// with the operator's arguments) and the operator's own /metrics after it
// reconciled that KSMScale. test/manifests checks the names against lists;
// only a scrape catches a name that a KSM or controller-runtime release
// renamed or that was misspelt in both the dashboard and the list. Names
// only other exporters provide (Prometheus, cAdvisor) are on an explicit
// allow-list, otherExporters.
func TestDashboardMetricsLive(t *testing.T) {
	// Not the migration's namespace, whose test wants it to itself.
	const ns, name = "monitoring", "dashboard"
	ensureNamespace(t, ns)
	op := startOperator(t, t, "operator-dashboard")
	// Memory limits, so kube_pod_container_resource_limits has samples
	// (the memory panel joins on them).
	createSharded(t, ns, name, 2, 1, func(s *v1alpha1.KSMScaleSpec) {
		s.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
	})
	_, qs, err := dashboard.Read(filepath.Join(root, dashboard.File))
	if err != nil {
		t.Fatal(err)
	}
	used := dashboard.Used(qs)

	// kube-state-metrics exposes a family only while it has an object of
	// its kind, and the dashboard counts deployments: make sure there is
	// one (no replicas, nothing to run).
	probe := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dashboard-probe"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dashboard-probe"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "dashboard-probe"}},
				Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65534),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{Name: "pause", Image: "registry.k8s.io/pause:3.10",
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
				},
			},
		},
	}
	if err := k8s.Create(suiteCtx, probe); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(suiteCtx, probe) })
	ksmBin, err := os.ReadFile(filepath.Join(bin, "kube-state-metrics"))
	if err != nil {
		t.Fatal(err)
	}

	// Every shard: each exports only its own objects, and a family only
	// where it has one (the cluster's two Services may hash to one shard).
	// The deployment may take a moment to reach its shard's watch.
	var exp *dashboard.Exposition
	eventually(t, 30*time.Second, "kube_deployment_created exported", func() error {
		exp = dashboard.NewExposition()
		for _, p := range activePods(t, ns, name) {
			scrapeInto(t, exp, fmt.Sprintf("http://%s/metrics", net.JoinHostPort(p.Status.PodIP, "8080")))
			scrapeInto(t, exp, fmt.Sprintf("http://%s/metrics", net.JoinHostPort(p.Status.PodIP, "8081")))
		}
		if exp.Has("kube_deployment_created") == "" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	scrapeInto(t, exp, op.metricsURL)

	problems, familyOnly := checkDashboardNames(used, exp, otherExporters, quietKSM, ksmBin)
	for _, p := range problems {
		t.Error(p)
	}
	if len(familyOnly) > 0 {
		t.Logf("declared but without samples: %v", familyOnly)
	}
	fmt.Printf("e2e dashboard: %d metric names in %d expressions: %d in the scrapes of kube-state-metrics and the operator (%d as a family without samples), %d of other exporters, %d quiet KSM metrics found in its binary; %d problems\n",
		len(used), len(qs), len(used)-len(otherExporters)-len(quietKSM), len(familyOnly), len(otherExporters), len(quietKSM), len(problems))

	// The check can fail, on the same scrapes: a made-up dashboard with a
	// misspelt name, a misspelt quiet name, an allow-list entry our
	// scrapes expose and one no panel uses. (Independent of the real
	// dashboard, so that it says only whether the check works.)
	t.Run("a misspelt name fails", func(t *testing.T) {
		used := map[string][]string{
			"kube_pod_info":                 {"panel 1 target A"},
			"kube_pod_infoo":                {"panel 2 \"misspelt\" target A"},
			"kube_node_info":                {"panel 3 target A"},
			"up":                            {"panel 4 target A"},
			"kube_state_metrics_list_total": {"panel 5 target A"},
			"kube_state_metrics_list_totl":  {"panel 6 \"misspelt quiet\" target A"},
		}
		allow := map[string]string{"up": "Prometheus", "kube_node_info": "misplaced", "kube_state_metrics_shard_ordinal": "unused"}
		quiet := map[string]string{"kube_state_metrics_list_total": "quiet", "kube_state_metrics_list_totl": "misspelt"}
		problems, _ := checkDashboardNames(used, exp, allow, quiet, ksmBin)
		t.Logf("problems found, as they should be:\n  %s", strings.Join(problems, "\n  "))
		want := []string{
			"kube_node_info is on the allow-list of other exporters",
			"kube_pod_infoo, used by",
			"kube_state_metrics_list_totl, used by",
			"kube_state_metrics_shard_ordinal is listed",
		}
		if len(problems) != len(want) {
			t.Fatalf("got %d problems, want %d", len(problems), len(want))
		}
		for i, w := range want {
			if !strings.HasPrefix(problems[i], w) {
				t.Errorf("problem %d: %q, want one starting %q", i, problems[i], w)
			}
		}
	})
}
