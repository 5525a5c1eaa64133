package promjudge

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/workload"
	"github.com/ksmscale/ksm-scale-operator/test/kubelet"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/tools"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

const (
	// Generous: two shared cores run the control plane, kwok, two
	// kube-state-metrics and Prometheus.
	liveTimeout = 3 * time.Minute
	externalKey = "promjudge-test"
	ksmNS       = "ksm-judge"
	ksmName     = "judge"
	interval    = 2 * time.Second
)

// judgePod is shard `shard` of 2 as the operator labels and exposes it
// (internal/ksm: ShardLabels, port names and numbers, listen flags), run
// by test/kubelet as a real kube-state-metrics on a loopback pod IP.
func judgePod(shard int32) *corev1.Pod {
	lbls := ksm.ShardLabels(ksmName, shard, 2)
	lbls[externalKey] = "true"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kube-state-metrics-%s-shard-%d-test", ksmName, shard), Namespace: ksmNS, Labels: lbls},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  kubelet.ContainerName,
				Image: "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
				Args: []string{
					"--host=0.0.0.0", "--port=" + strconv.Itoa(ksm.MetricsPort),
					"--telemetry-host=0.0.0.0", "--telemetry-port=" + strconv.Itoa(ksm.TelemetryPort),
					"--shard=" + strconv.Itoa(int(shard)), "--total-shards=2",
					"--resources=pods,nodes,namespaces",
				},
				Ports: []corev1.ContainerPort{
					{Name: ksm.MetricsPortName, ContainerPort: ksm.MetricsPort, Protocol: corev1.ProtocolTCP},
					{Name: ksm.TelemetryPortName, ContainerPort: ksm.TelemetryPort, Protocol: corev1.ProtocolTCP},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/readyz", Port: intstr.FromString(ksm.TelemetryPortName), Scheme: corev1.URISchemeHTTP,
					}},
					PeriodSeconds: 1, TimeoutSeconds: 5, FailureThreshold: 3,
				},
			}},
		},
	}
}

// TestJudgeWithRealKSM runs Prometheus against two real kube-state-metrics
// shards of a local cluster and checks that it sees them as users'
// Prometheus does through the shipped ServiceMonitor (target labels, the
// labeldrop, instance per shard), that Coverage finds nothing missing while
// both serve, that it does find the objects of a shard that stops, and that
// the shipped rules load and KSMShardsMissing fires (within its scaled
// `for:`).
func TestJudgeWithRealKSM(t *testing.T) {
	bin := tools.BinDir(t, localcluster.KubeAPIServer, localcluster.Kwok, "kube-state-metrics", "prometheus")
	ctx := t.Context()
	dir := t.TempDir()

	c := localcluster.StartT(t, localcluster.Options{
		BinDir: bin, Dir: filepath.Join(dir, "cluster"), Nodes: 3, Logf: t.Logf,
		ExternalKubeletLabel: externalKey + "=true",
	})
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 100, 200
	cs := kubernetes.NewForConfigOrDie(cfg)
	nodeNames := c.NodeNames()
	sum, err := workload.Seed(ctx, cs, workload.Options{Namespaces: 2, PodsPerNamespace: 10, Nodes: nodeNames, Prefix: "pj"})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}

	k, err := kubelet.Start(ctx, kubelet.Options{
		Config: c.RESTConfig(), BinDir: bin, Dir: filepath.Join(dir, "kubelet"),
		Selector: labels.SelectorFromSet(labels.Set{externalKey: "true"}),
		// The admin kubeconfig spares a ServiceAccount and its RBAC.
		Kubeconfig: func(context.Context, *corev1.Pod) (string, error) { return c.Kubeconfig(), nil },
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Stop(); err != nil {
			t.Errorf("stop the kubelet: %v", err)
		}
	})
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ksmNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for shard := range int32(2) {
		p := judgePod(shard)
		p.Spec.NodeName = nodeNames[shard]
		if _, err := cs.CoreV1().Pods(ksmNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	s, err := Start(ctx, Options{
		Dir: filepath.Join(dir, "prometheus"), Kubeconfig: c.Kubeconfig(), Binary: filepath.Join(bin, "prometheus"),
		ScrapeInterval: interval, ForScale: ScaleFor(30, 10*time.Second),
		StaticTargets: map[string][]string{"self": nil},
		Log:           testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop prometheus: %v", err)
		}
	})
	t.Logf("prometheus ready after %s", time.Since(start).Round(time.Millisecond))
	if err := s.WaitTargets(ctx, "kube-state-metrics", 4, liveTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("4 targets up after %s", time.Since(start).Round(time.Millisecond))

	query := func(expr string) model.Vector {
		t.Helper()
		v, _, err := s.API().Query(ctx, expr, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v.(model.Vector)
	}
	want := map[string]int{"nodes": len(nodeNames), "pods": len(sum.Pods), "namespaces": len(sum.Namespaces)}
	coverage := map[string]CoverageQuery{
		"nodes":      {Kind: "nodes", Expr: `count by (node) (kube_node_info)`, Want: want["nodes"]},
		"pods":       {Kind: "pods", Expr: `count by (uid) (kube_pod_info{namespace=~"pj-.*"})`, Want: want["pods"]},
		"namespaces": {Kind: "namespaces", Expr: `count by (namespace) (kube_namespace_created{namespace=~"pj-.*"})`, Want: want["namespaces"]},
	}
	// Both shards have listed once every object has a series.
	wait.Eventually(t, time.Second, liveTimeout, "every object exported", func() error {
		for kind, q := range coverage {
			if got := len(query(q.Expr)); got != q.Want {
				return fmt.Errorf("%s: %d of %d", kind, got, q.Want)
			}
		}
		return nil
	})

	t.Run("target labels as the ServiceMonitor gives them", func(t *testing.T) {
		var instances []string
		for _, smp := range query(`up{job="kube-state-metrics", endpoint="http-metrics"}`) {
			m := smp.Metric
			instances = append(instances, string(m["instance"]))
			if smp.Value != 1 || m["ksmscale"] != ksmName || m["total_shards"] != "2" || m["instance"] != model.LabelValue(judgePod(int32(mustAtoi(t, string(m["shard"])))).Name) {
				t.Errorf("object endpoint: %s = %s", m, smp.Value)
			}
			for _, l := range []model.LabelName{"pod", "namespace", "service", "container"} {
				if _, ok := m[l]; ok {
					t.Errorf("object endpoint has %s despite the labeldrop: %s", l, m)
				}
			}
		}
		slices.Sort(instances)
		if want := []string{judgePod(0).Name, judgePod(1).Name}; !slices.Equal(instances, want) {
			t.Errorf("instances %v, want the pods' names %v", instances, want)
		}
		for _, smp := range query(`up{job="kube-state-metrics", endpoint="telemetry"}`) {
			m := smp.Metric
			if m["namespace"] != ksmNS || m["service"] != "kube-state-metrics-"+ksmName || m["container"] != kubelet.ContainerName ||
				m["pod"] != model.LabelValue(judgePod(0).Name) && m["pod"] != model.LabelValue(judgePod(1).Name) || m["shard"] == "" {
				t.Errorf("telemetry endpoint: %s, want the pod's namespace, pod, service, container and shard", m)
			}
		}
		if v := query(`kube_node_info{namespace!=""} or kube_node_info{pod!=""}`); len(v) > 0 {
			t.Errorf("kube_node_info carries the KSM pod's namespace/pod: %s", v)
		}
		// honorLabels: the object's own namespace, not the exporter's.
		if v := query(`count by (namespace) (kube_pod_info{namespace=~"pj-.*|` + ksmNS + `"})`); len(v) != 3 {
			t.Errorf("kube_pod_info by namespace: %s, want pj-0, pj-1 and %s", v, ksmNS)
		}
	})

	t.Run("static targets set at run time", func(t *testing.T) {
		if err := s.SetTargets("self", []string{strings.TrimPrefix(s.URL(), "http://")}); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitTargets(ctx, "self", 1, liveTimeout); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rules loaded", func(t *testing.T) {
		r, err := s.API().Rules(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var groups []string
		for _, g := range r.Groups {
			groups = append(groups, fmt.Sprintf("%s (%d rules)", g.Name, len(g.Rules)))
		}
		if len(r.Groups) != 1 || r.Groups[0].Name != "ksm-sharding" || len(r.Groups[0].Rules) < 10 {
			t.Errorf("rule groups %v, want ksm-sharding with every alert", groups)
		}
	})

	// waitScrapes lets Prometheus scrape and evaluate past t.
	waitPast := func(at time.Time) {
		time.Sleep(time.Until(at.Add(2 * interval)))
	}

	// A start just short of the next millisecond: Prometheus rounds it up,
	// and Coverage must still line its instants up.
	from := time.Now().Truncate(time.Millisecond).Add(999500 * time.Nanosecond)
	to := from.Add(6 * interval)
	waitPast(to)
	t.Run("both shards serving: nothing missing", func(t *testing.T) {
		for _, kind := range []string{"nodes", "pods", "namespaces"} {
			cov, err := s.Coverage(ctx, from, to, coverage[kind])
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", cov)
			if cov.Instants < 6 || cov.MissingObjectScrapes != 0 || cov.DuplicateInstants != 0 {
				t.Errorf("%s: want %d present at every instant, none twice: %s", kind, want[kind], cov)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// What shard 1 exports, which must go missing with it.
	shard1 := map[string]int{}
	for kind, q := range coverage {
		shard1[kind] = len(query(fmt.Sprintf(`%s and on (%s) (%s)`, q.Expr, byLabel(kind), withShard(kind))))
	}
	t.Logf("shard 1 exports %v", shard1)

	stopped := time.Now()
	if err := cs.CoreV1().Pods(ksmNS).Delete(ctx, judgePod(1).Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 250*time.Millisecond, liveTimeout, "shard 1's process stopped", func() error {
		if p := k.Process(ksmNS, judgePod(1).Name); p != nil {
			return fmt.Errorf("pid %d runs", p.PID())
		}
		return nil
	})
	to = time.Now().Add(8 * interval)
	waitPast(to)
	t.Run("one shard stopped: the judge sees its objects missing", func(t *testing.T) {
		total := 0
		for _, kind := range []string{"nodes", "pods", "namespaces"} {
			cov, err := s.Coverage(ctx, stopped, to, coverage[kind])
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", cov)
			total += int(cov.MissingObjectScrapes)
			if cov.Worst != shard1[kind] || (shard1[kind] > 0) != (cov.MissingObjectScrapes > 0) {
				t.Errorf("%s: want shard 1's %d missing at worst: %s", kind, shard1[kind], cov)
			}
		}
		if total == 0 {
			t.Errorf("nothing missing with shard 1 gone")
		}
	})

	t.Run("KSMShardsMissing fires", func(t *testing.T) {
		// for: 15m scaled by 30 is 30s; evaluations and scrapes add some.
		var fired Firing
		wait.Eventually(t, time.Second, 30*time.Second+liveTimeout, "KSMShardsMissing firing", func() error {
			alerts, err := s.Alerts(ctx, stopped, time.Now(), "firing")
			if err != nil {
				return err
			}
			for _, a := range alerts {
				if a.Alert == "KSMShardsMissing" {
					fired = a
					return nil
				}
			}
			return fmt.Errorf("firing: %v", alerts)
		})
		after := fired.From.Sub(stopped)
		t.Logf("KSMShardsMissing %v firing %s after shard 1 stopped", fired.Labels, after.Round(time.Second))
		if fired.Labels["ksmscale"] != ksmName || after < 30*time.Second {
			t.Errorf("fired %s: want ksmscale=%s, not before its scaled for: 30s", fired, ksmName)
		}
	})
}

// byLabel is the label that identifies an object of kind in the queries.
func byLabel(kind string) string {
	return map[string]string{"nodes": "node", "pods": "uid", "namespaces": "namespace"}[kind]
}

// withShard selects the series shard 1 exports of kind.
func withShard(kind string) string {
	return map[string]string{
		"nodes":      `kube_node_info{shard="1"}`,
		"pods":       `kube_pod_info{shard="1"}`,
		"namespaces": `kube_namespace_created{shard="1"}`,
	}[kind]
}

// testWriter sends the package's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("shard label %q: %v", s, err)
	}
	return n
}
