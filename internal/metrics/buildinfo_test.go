package metrics

import (
	"runtime"
	"testing"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ksmscale/ksm-scale-operator/internal/version"
)

// TestBuildInfo reads the metric back from controller-runtime's registry, the
// one the manager serves, so it also proves the gauge is registered there.
func TestBuildInfo(t *testing.T) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "ksmscale_build_info" {
			continue
		}
		if n := len(f.GetMetric()); n != 1 {
			t.Fatalf("ksmscale_build_info has %d series, want 1", n)
		}
		m := f.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		want := version.Get()
		if labels["version"] != want.Version || labels["revision"] != want.Revision || labels["goversion"] != runtime.Version() {
			t.Errorf("labels = %v, want version=%q revision=%q goversion=%q", labels, want.Version, want.Revision, runtime.Version())
		}
		if v := m.GetGauge().GetValue(); v != 1 {
			t.Errorf("value = %v, want 1", v)
		}
		return
	}
	t.Fatal("ksmscale_build_info is not registered on controller-runtime's metrics registry")
}
