package kubelet

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestProberThresholds checks the probe semantics against a server on
// 127.0.0.1 whose health the test switches: a result changes only after
// successThreshold successes or failureThreshold failures in a row, a port
// is found by name, and a redirect counts as success.
func TestProberThresholds(t *testing.T) {
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "http://127.0.0.1:1/never-followed", http.StatusFound)
		case r.URL.Path == "/readyz" && healthy.Load() && r.Header.Get("X-Probe") == "yes":
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	host, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)

	r := &podRunner{k: &Kubelet{logf: t.Logf}, key: "ns/p", ip: host}
	c := &corev1.Container{Name: ContainerName, Ports: []corev1.ContainerPort{{Name: "telemetry", ContainerPort: int32(port)}}}
	probe := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/readyz", Port: intstr.FromString("telemetry"),
			HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}},
		}},
		SuccessThreshold: 2, FailureThreshold: 3, PeriodSeconds: 7,
	}
	pr := newProber(r, c, probe, time.Now())
	if pr.period != 7*time.Second || pr.client.Timeout != time.Second {
		t.Errorf("period %s timeout %s, want 7s and the default 1s", pr.period, pr.client.Timeout)
	}
	ready := false
	step := func(want bool) {
		t.Helper()
		ready, _ = pr.check(t.Context(), ready)
		if ready != want {
			t.Fatalf("ready = %v, want %v (successes %d, failures %d)", ready, want, pr.successes, pr.failures)
		}
	}
	step(false) // failing while not ready: stays not ready
	healthy.Store(true)
	step(false) // one success of two
	step(true)  // two: ready
	healthy.Store(false)
	step(true) // failure 1 of 3
	step(true) // 2 of 3
	healthy.Store(true)
	step(true) // a success resets the count
	healthy.Store(false)
	step(true)
	step(true)
	step(false) // 3 in a row

	redirect := newProber(r, c, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/redirect", Port: intstr.FromInt32(int32(port)),
	}}}, time.Now())
	if err := redirect.run(t.Context()); err != nil {
		t.Errorf("redirect: %v", err)
	}
	missing := newProber(r, c, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Port: intstr.FromString("nope"),
	}}}, time.Now())
	if err := missing.run(t.Context()); err == nil {
		t.Error("a port name the container lacks passed")
	}
	// A probe host outside loopback is never dialed: the pod IP is.
	if got := pr.host("10.1.2.3"); got != host {
		t.Errorf("host(10.1.2.3) = %s, want the pod IP %s", got, host)
	}
}
