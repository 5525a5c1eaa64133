package ksmproc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

// TestMain doubles as a fake kube-state-metrics: with KSMPROC_FAKE set, the
// test binary serves /healthz (after a short delay) and a /metrics whose
// kube_pod_info grows by one series per scrape up to three, which is what a
// KSM that is still listing looks like.
func TestMain(m *testing.M) {
	if os.Getenv("KSMPROC_FAKE") != "" {
		fakeKSM()
		return
	}
	os.Exit(m.Run())
}

func fakeKSM() {
	host, _ := FlagValue(os.Args[1:], "host")
	port, _ := FlagValue(os.Args[1:], "port")
	up := time.Now().Add(300 * time.Millisecond)
	var scrapes atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if time.Now().Before(up) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "OK")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		n := min(int(scrapes.Add(1)), 3)
		fmt.Fprintln(w, "# HELP kube_pod_info Information about pod.\n# TYPE kube_pod_info gauge")
		for i := range n {
			fmt.Fprintf(w, "kube_pod_info{namespace=\"ns\",pod=\"p-%d\"} 1\n", i)
		}
	})
	if err := http.ListenAndServe(host+":"+port, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func startFake(t *testing.T) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KSMPROC_FAKE", "1")
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(context.Background(), Options{
		Bin:     self,
		Args:    []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", ports[0]), "--telemetry-host=127.0.0.1", fmt.Sprintf("--telemetry-port=%d", ports[1])},
		LogFile: filepath.Join(t.TempDir(), "fake.log"),
		Name:    "fake",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func TestProcessLifecycle(t *testing.T) {
	p := startFake(t)
	if !strings.HasPrefix(p.MetricsURL(), "http://127.0.0.1:") || !strings.HasSuffix(p.MetricsURL(), "/metrics") {
		t.Errorf("MetricsURL %q", p.MetricsURL())
	}
	// Not asked for anything in particular: stable once three scrapes
	// spanning 2 s agree, i.e. after the third series appeared.
	began := time.Now()
	got, err := WaitStable(context.Background(), p, []string{"kube_pod_info"}, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got["kube_pod_info"]) != 3 || time.Since(began) < stableGap {
		t.Errorf("stable after %s with %v", time.Since(began), got)
	}
	// A want that holds returns at once.
	began = time.Now()
	if _, err := WaitStable(context.Background(), p, []string{"kube_pod_info"}, func(c map[string]int) bool { return c["kube_pod_info"] == 3 }, time.Minute); err != nil || time.Since(began) > time.Second {
		t.Errorf("want: %v after %s", err, time.Since(began))
	}
	// A timeout is reported with the last series.
	last, err := WaitStable(context.Background(), p, []string{"kube_pod_info"}, func(map[string]int) bool { return false }, 0)
	if err == nil {
		t.Errorf("no timeout error, got %v", last)
	}

	pid := p.PID()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Error("not exited after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists after Stop: %v", pid, err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := p.Scrape(context.Background()); err == nil {
		t.Error("scrape after Stop succeeded")
	}
}

// A real KSM that cannot reach its API server exits at once; Start must say
// so with the log, not wait out its deadline.
func TestStartReportsEarlyExit(t *testing.T) {
	bin, _ := filepath.Abs("../../../bin/kube-state-metrics")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/kube-state-metrics not built")
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = Start(context.Background(), Options{
		Bin:     bin,
		Args:    []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", ports[0]), "--telemetry-host=127.0.0.1", fmt.Sprintf("--telemetry-port=%d", ports[1]), "--kubeconfig=" + kubeconfig},
		LogFile: filepath.Join(t.TempDir(), "ksm.log"),
		Name:    "unreachable",
	})
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Start: %v", err)
	}
	if d := time.Since(began); d > 30*time.Second {
		t.Errorf("took %s to notice the exit", d)
	}
}

// fixture is a slice of what KSM v2 serves, plus the odd cases the parser
// must survive: escaped label values, labels out of order, a timestamp, an
// OpenMetrics exemplar and EOF, a histogram, a quoted metric name and junk.
const fixture = `# HELP kube_pod_info [STABLE] Information about pod.
# TYPE kube_pod_info gauge
kube_pod_info{namespace="ns-0",pod="p-1",uid="u1",host_ip="10.0.0.1",pod_ip="10.244.0.5",node="kwok-node-1",created_by_kind="<none>",created_by_name="<none>",priority_class="",host_network="false"} 1
kube_pod_info{pod="p-0",namespace="ns-0",uid="u0",host_ip="",pod_ip="",node="",created_by_kind="<none>",created_by_name="<none>",priority_class="",host_network="false"} 1 1700000000000
# HELP kube_pod_status_phase [STABLE] The pods current phase.
# TYPE kube_pod_status_phase gauge
kube_pod_status_phase{namespace="ns-0",pod="p-0",uid="u0",phase="Running"} 1
kube_pod_status_phase{namespace="ns-0",pod="p-0",uid="u0",phase="Pending"} 0
# HELP kube_configmap_info [STABLE] Information about configmap.
# TYPE kube_configmap_info gauge
kube_configmap_info{namespace="ns-0",configmap="weird \"name\", with {braces}\\and\nnewline"} 1
kube_configmap_info{namespace="ns-0",configmap="kube-root-ca.crt"} 1 # {trace_id="abc"} 1.0
# HELP kube_namespace_created [STABLE] Unix creation timestamp
# TYPE kube_namespace_created gauge
kube_namespace_created{namespace="default"} 1.7e+09
kube_namespace_created { namespace = "ns-0" } 1.7e+09
# HELP http_request_duration_seconds A histogram.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 3
http_request_duration_seconds_bucket{le="+Inf"} 4
http_request_duration_seconds_sum 0.2
http_request_duration_seconds_count 4
{"kube_node_info",node="kwok-node-0",kernel_version=""} 1
kube_node_info{node="kwok-node-1",kernel_version=""} 1
this is not a sample {
kube_broken{namespace="unterminated} 1
# EOF
`

func TestParseSeries(t *testing.T) {
	got := ParseSeries(fixture, "kube_pod_info", "kube_configmap_info", "kube_namespace_created", "kube_node_info", "http_request_duration_seconds", "kube_missing")
	want := map[string][]string{
		"kube_pod_info": {
			`kube_pod_info{created_by_kind="<none>",created_by_name="<none>",host_ip="",host_network="false",namespace="ns-0",node="",pod="p-0",pod_ip="",priority_class="",uid="u0"}`,
			`kube_pod_info{created_by_kind="<none>",created_by_name="<none>",host_ip="10.0.0.1",host_network="false",namespace="ns-0",node="kwok-node-1",pod="p-1",pod_ip="10.244.0.5",priority_class="",uid="u1"}`,
		},
		"kube_configmap_info": {
			`kube_configmap_info{configmap="kube-root-ca.crt",namespace="ns-0"}`,
			`kube_configmap_info{configmap="weird \"name\", with {braces}\\and\nnewline",namespace="ns-0"}`,
		},
		"kube_namespace_created": {
			`kube_namespace_created{namespace="default"}`,
			`kube_namespace_created{namespace="ns-0"}`,
		},
		"kube_node_info": {
			`kube_node_info{kernel_version="",node="kwok-node-0"}`,
			`kube_node_info{kernel_version="",node="kwok-node-1"}`,
		},
		"http_request_duration_seconds": {
			`http_request_duration_seconds_bucket{le="+Inf"}`,
			`http_request_duration_seconds_bucket{le="0.1"}`,
			`http_request_duration_seconds_count`,
			`http_request_duration_seconds_sum`,
		},
		"kube_missing": {},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ParseSeries (-want +got):\n%s", d)
	}
	if c := Counts(got); c["kube_pod_info"] != 2 || c["kube_missing"] != 0 {
		t.Errorf("Counts = %v", c)
	}

	// The escaped value survives a round trip through Labels.
	name, labels := Labels(got["kube_configmap_info"][1])
	if name != "kube_configmap_info" || labels["configmap"] != "weird \"name\", with {braces}\\and\nnewline" {
		t.Errorf("Labels = %q %q", name, labels)
	}
}

func TestParseSeriesAll(t *testing.T) {
	all := ParseSeries(fixture)
	var names []string
	n := 0
	for f, s := range all {
		names = append(names, f)
		n += len(s)
	}
	// 2 pod_info + 2 phase + 2 configmap + 2 namespace + 4 histogram + 2 node.
	if n != 14 {
		t.Errorf("all series: %d in %v", n, names)
	}
	if _, ok := all["kube_broken"]; ok {
		t.Error("a malformed line was parsed")
	}
	if len(all["http_request_duration_seconds_bucket"]) != 2 {
		t.Errorf("without families, samples are keyed by their own name: %v", names)
	}
}

func TestParseSeriesOrderIndependent(t *testing.T) {
	a := "m{b=\"2\",a=\"1\"} 1\n"
	b := "# TYPE m gauge\nm{a=\"1\",b=\"2\"} 7 123\n"
	if !reflect.DeepEqual(ParseSeries(a, "m"), ParseSeries(b, "m")) {
		t.Errorf("%v != %v", ParseSeries(a, "m"), ParseSeries(b, "m"))
	}
}

func shardPod(args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: "kube-state-metrics-demo-shard-1-abc"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "sidecar", Args: []string{"--port=1"}},
			{Name: ContainerName, Args: args},
		}},
	}
}

func TestArgsFromPod(t *testing.T) {
	pod := shardPod("--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081",
		"--shard=1", "--total-shards=3", "--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]")
	got, err := ArgsFromPod(pod, "/tmp/kc", 40001, 40002)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--host=127.0.0.1", "--port=40001", "--telemetry-host=127.0.0.1", "--telemetry-port=40002",
		"--shard=1", "--total-shards=3", "--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]", "--kubeconfig=/tmp/kc"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ArgsFromPod (-want +got):\n%s", d)
	}
	// The pod is not modified.
	if pod.Spec.Containers[1].Args[1] != "--port=8080" {
		t.Error("ArgsFromPod modified the pod")
	}

	// Separate values and an existing --kubeconfig.
	pod = shardPod("--host", "0.0.0.0", "--port", "8080", "--telemetry-host=0.0.0.0", "--telemetry-port", "8081",
		"--kubeconfig", "/in/pod", "--shard=0", "--total-shards=2")
	got, err = ArgsFromPod(pod, "/tmp/kc", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"--host=127.0.0.1", "--port=1", "--telemetry-host=127.0.0.1", "--telemetry-port=2",
		"--shard=0", "--total-shards=2", "--kubeconfig=/tmp/kc"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ArgsFromPod (-want +got):\n%s", d)
	}
	if v, ok := FlagValue(got, "port"); !ok || v != "1" {
		t.Errorf("FlagValue port = %q %v", v, ok)
	}
}

func TestArgsFromPodErrors(t *testing.T) {
	for name, pod := range map[string]*corev1.Pod{
		"no container":      {Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "other", Args: []string{"--port=1"}}}}},
		"no telemetry port": shardPod("--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--shard=0"),
		"no host":           shardPod("--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081"),
		"dangling value":    shardPod("--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port"),
		// --portal is not --port.
		"prefix is not the flag": shardPod("--host=0.0.0.0", "--portal=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081"),
	} {
		if _, err := ArgsFromPod(pod, "/tmp/kc", 1, 2); err == nil {
			t.Errorf("%s: no error", name)
		} else if name != "no container" && name != "dangling value" && !strings.Contains(err.Error(), "lacks") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ArgsFromPod(shardPod("--host=a", "--port=1", "--telemetry-host=b", "--telemetry-port=2"), "", 1, 2); err == nil {
		t.Error("empty kubeconfig accepted")
	}
}

func TestUnshardedArgs(t *testing.T) {
	in := []string{"--host=127.0.0.1", "--port=1", "--shard=2", "--total-shards=3", "--shard", "1", "--total-shards", "4",
		"--shard-label=x", "--resources=pods", "--kubeconfig=/k"}
	got := UnshardedArgs(in)
	want := []string{"--host=127.0.0.1", "--port=1", "--shard-label=x", "--resources=pods", "--kubeconfig=/k"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("UnshardedArgs (-want +got):\n%s", d)
	}
	if in[2] != "--shard=2" {
		t.Error("UnshardedArgs modified its input")
	}
}

func TestArgsOnHost(t *testing.T) {
	pod := shardPod()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{{
		name: "operator shard pod",
		args: []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host", "0.0.0.0", "--telemetry-port=8081",
			"--kubeconfig=/in/pod", "--shard=0", "--total-shards=1"},
		want: []string{"--host=127.65.0.3", "--port=8080", "--telemetry-host=127.65.0.3", "--telemetry-port=8081",
			"--shard=0", "--total-shards=1", "--kubeconfig=/tmp/kc"},
	}, {
		name: "autosharding statefulset: listen flags left to KSM's defaults",
		args: []string{"--pod=ksm-0", "--pod-namespace=kube-system", "--port", "9090"},
		want: []string{"--pod=ksm-0", "--pod-namespace=kube-system", "--port", "9090",
			"--host=127.65.0.3", "--telemetry-host=127.65.0.3", "--telemetry-port=8081", "--kubeconfig=/tmp/kc"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]string(nil), tc.args...)
			got, err := ArgsOnHost(pod, in, "/tmp/kc", "127.65.0.3")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("ArgsOnHost (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.args, in); d != "" {
				t.Errorf("ArgsOnHost modified its input:\n%s", d)
			}
		})
	}
	if _, err := ArgsOnHost(pod, []string{"--host"}, "/tmp/kc", "127.65.0.3"); err == nil {
		t.Error("dangling --host accepted")
	}
	if _, err := ArgsOnHost(pod, nil, "/tmp/kc", ""); err == nil {
		t.Error("empty host accepted")
	}
}
