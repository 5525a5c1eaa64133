package dashboard

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`max by (ksmscale) (ksmscale_shards_total{job="ksm-scale-operator", ksmscale=~"a|b"})`, []string{"ksmscale_shards_total"}},
		{`sum by (le) (rate(x_bucket{a="rate(y)"}[5m])) / on (pod) group_left (shard) count(up{endpoint="telemetry"}) > bool 0.5`, []string{"up", "x_bucket"}},
		{`histogram_quantile(0.99, sum without (pod) (rate(a_seconds_bucket[$__rate_interval]))) or vector(1) unless b`, []string{"a_seconds_bucket", "b"}},
		{`count by (ksmscale) (count by (ksmscale, total_shards) (up)) and on (ksmscale) c offset 5m`, []string{"c", "up"}},
	} {
		if got := MetricNames(tc.expr); !cmp.Equal(got, tc.want) {
			t.Errorf("MetricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

func TestReadTheDashboard(t *testing.T) {
	_, qs, err := Read("../../" + File)
	if err != nil {
		t.Fatal(err)
	}
	used := Used(qs)
	if len(qs) < 10 || len(used) < 10 {
		t.Fatalf("%d expressions naming %d metrics", len(qs), len(used))
	}
	if len(used["ksmscale_shards_total"]) < 2 {
		t.Errorf("ksmscale_shards_total used at %v, want a panel and the ksmscale variable", used["ksmscale_shards_total"])
	}
}

const scrape = `# HELP kube_pod_info Information about pod.
# TYPE kube_pod_info gauge
kube_pod_info{namespace="a",pod="b",uid="c"} 1
# HELP kube_state_metrics_list_total Number of total resource list in kube-state-metrics
# TYPE kube_state_metrics_list_total counter
# TYPE controller_runtime_reconcile_time_seconds histogram
controller_runtime_reconcile_time_seconds_bucket{le="+Inf"} 3
controller_runtime_reconcile_time_seconds_sum 0.2
controller_runtime_reconcile_time_seconds_count 3
# TYPE rpc_seconds summary
# TYPE empty_seconds histogram
up 1 1700000000000
`

func TestExposition(t *testing.T) {
	e := NewExposition()
	if err := e.Add(strings.NewReader(scrape)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"kube_pod_info":                 "sample",
		"up":                            "sample",
		"kube_state_metrics_list_total": "family", // a vector without children
		"controller_runtime_reconcile_time_seconds_bucket": "sample",
		"empty_seconds_bucket":                             "family",
		"empty_seconds_count":                              "family",
		"rpc_seconds_sum":                                  "family",
		"rpc_seconds_bucket":                               "", // summaries have no buckets
		"empty_seconds":                                    "", // a histogram's own name is no series
		"kube_pod_infoo":                                   "", // a misspelling
		"kube_state_metrics_list":                          "",
	} {
		if got := e.Has(name); got != want {
			t.Errorf("Has(%s) = %q, want %q", name, got, want)
		}
	}
	for _, bad := range []string{"<html>oops</html>\n", "# TYPE x\n", "{a=\"b\"} 1\n"} {
		if err := NewExposition().Add(strings.NewReader(bad)); err == nil {
			t.Errorf("Add(%q) accepted a body that is not the text format", bad)
		}
	}
}
