// Package metrics holds the operator's own Prometheus metrics, registered on
// controller-runtime's registry so they are served on the manager's metrics
// endpoint beside the controller and client-go metrics.
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	shardsTotal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ksmscale_shards_total",
		Help: "Desired number of kube-state-metrics shards of a KSMScale (0 when sharding is off).",
	}, []string{"ksmscale"})
	shardsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ksmscale_shards_active",
		Help: "Shards of a KSMScale's desired generation that have a Ready pod.",
	}, []string{"ksmscale"})
	shardReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ksmscale_shard_ready",
		Help: "1 when the shard has a Ready pod, 0 otherwise.",
	}, []string{"ksmscale", "shard"})
	condition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ksmscale_status_condition",
		Help: "The KSMScale's status conditions: 1 for the status a condition has, 0 for the others.",
	}, []string{"ksmscale", "type", "status"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(shardsTotal, shardsActive, shardReady, condition)
}

// Record publishes the shard state of one KSMScale. ready[i] is shard i's
// readiness; shards beyond len(ready) from an earlier, larger count vanish.
func Record(ksmscale string, total int32, ready []bool) {
	shardReady.DeletePartialMatch(prometheus.Labels{"ksmscale": ksmscale})
	active := 0
	for i, r := range ready {
		v := 0.0
		if r {
			v, active = 1, active+1
		}
		shardReady.WithLabelValues(ksmscale, strconv.Itoa(i)).Set(v)
	}
	shardsTotal.WithLabelValues(ksmscale).Set(float64(total))
	shardsActive.WithLabelValues(ksmscale).Set(float64(active))
}

// RecordConditions publishes a KSMScale's conditions, so that alerts can see
// what only status shows otherwise (Degraded with NamespaceNotFound,
// NameConflict, ReconcileError: failures the operator does not retry).
func RecordConditions(ksmscale string, conds []metav1.Condition) {
	for _, c := range conds {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if c.Status == s {
				v = 1
			}
			condition.WithLabelValues(ksmscale, c.Type, string(s)).Set(v)
		}
	}
}

// Forget removes every series of a deleted KSMScale.
func Forget(ksmscale string) {
	l := prometheus.Labels{"ksmscale": ksmscale}
	shardsTotal.DeletePartialMatch(l)
	shardsActive.DeletePartialMatch(l)
	shardReady.DeletePartialMatch(l)
	condition.DeletePartialMatch(l)
}
