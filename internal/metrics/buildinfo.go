package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ksmscale/ksm-scale-operator/internal/version"
)

// buildInfo follows the Prometheus <name>_build_info convention (constant 1,
// the build in labels), so a query can join any operator series with the
// version that produced it, and a rollout of the operator shows as a change
// of labels.
var buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "ksmscale_build_info",
	Help: "Always 1; the labels name the running ksm-scale-operator build: version, git revision and Go version.",
}, []string{"version", "revision", "goversion"})

func init() {
	ctrlmetrics.Registry.MustRegister(buildInfo)
	i := version.Get()
	buildInfo.WithLabelValues(i.Version, i.Revision, i.GoVersion).Set(1)
}
