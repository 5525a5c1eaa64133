package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/bench/sts"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/workload"
	"github.com/ksmscale/ksm-scale-operator/test/kubelet"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

// kubeletLabel marks the pods test/kubelet runs real kube-state-metrics
// for: the operator's pods carry it (ksmscale.example.com=<name>), and the
// StatefulSets' pod templates get it too. kwok leaves them alone.
const kubeletLabel = "ksmscale.example.com"

// ksmClusterRole is the read-only role the operator binds to its shards
// (config/rbac); the StatefulSets' ServiceAccount gets the same.
const ksmClusterRole = "ksm-scale-operator-kube-state-metrics"

// kubeletIPRange is where the KSM pods' IPs come from: apart from
// kubelet.DefaultIPRange, which the e2e suites use, so that a bench and a
// test run side by side never share an address (nor scrape each other).
const kubeletIPRange = "127.93.0.0/16"

// stsNamespace holds the StatefulSets, apart from the operator's namespace.
const stsNamespace = "sts-bench"

// runSize measures one cluster size: the operator, then (with the change
// scenarios) the StatefulSets, one policy after the other.
func runSize(ctx context.Context, o options, n int, manager string, scenarios bool) (SizeResults, error) {
	sr := SizeResults{Nodes: n}
	dir := filepath.Join(o.workDir, fmt.Sprintf("cluster-%d", n))
	logf("starting a local cluster with %d nodes", n)
	cl, err := localcluster.Start(ctx, localcluster.Options{BinDir: o.bin, Dir: dir, Nodes: n, ExternalKubeletLabel: kubeletLabel})
	if err != nil {
		return sr, err
	}
	defer func() {
		if err := cl.Stop(); err != nil {
			logf("stop the local cluster: %v", err)
		}
	}()
	cfg := cl.RESTConfig()
	cs := kubernetes.NewForConfigOrDie(cfg)
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return sr, err
	}
	sel, err := labels.Parse(kubeletLabel)
	if err != nil {
		return sr, err
	}
	kl, err := kubelet.Start(ctx, kubelet.Options{Config: cfg, BinDir: o.bin, Dir: filepath.Join(o.workDir, fmt.Sprintf("kubelet-%d", n)),
		Selector: sel, IPRange: kubeletIPRange})
	if err != nil {
		return sr, fmt.Errorf("start the kube-state-metrics kubelet: %w", err)
	}
	defer func() {
		if err := kl.Stop(); err != nil {
			logf("stop the kube-state-metrics kubelet: %v", err)
		}
	}()
	for _, args := range [][]string{
		{"apply", "-k", filepath.Join(o.root, "config", "crd")},
		{"apply", "-f", filepath.Join(o.root, "config", "rbac", "kube_state_metrics_role.yaml")},
		{"wait", "--for", "condition=Established", "crd/ksmscales.monitor.example.com", "--timeout=60s"},
		{"create", "namespace", ksmNS},
	} {
		cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "kubectl"), append([]string{"--kubeconfig", cl.Kubeconfig()}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return sr, fmt.Errorf("kubectl %v: %v\n%s", args, err, out)
		}
	}

	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return sr, err
	}
	var nodeNames []string
	for _, nd := range nodes.Items {
		nodeNames = append(nodeNames, nd.Name)
	}
	pods := min(n*o.podsPerNode, o.maxPods)
	namespaces := max((pods+999)/1000, 1)
	logf("seeding %d workload pods in %d namespaces", pods, namespaces)
	sum, err := workload.Seed(ctx, cs, workload.Options{Namespaces: namespaces, PodsPerNamespace: pods / namespaces,
		ConfigMapsPerNamespace: 10, Nodes: nodeNames, Prefix: "load"})
	if err != nil {
		return sr, err
	}
	if err := workload.WaitPodsReady(ctx, cs, sum, 15*time.Minute); err != nil {
		return sr, err
	}
	sr.WorkloadPods = len(sum.Pods)
	sr.Ran = []string{"operator: " + changeCreate}
	if scenarios {
		sr.Ran = append(sr.Ran, "operator: "+changeRollout, "operator: "+changeReshardDn, "operator: "+changeReshardUp)
	}
	sr.Ran = append(sr.Ran, "operator: steady", "operator: RSS")

	// A real Prometheus judges the sizes at which the sides are compared.
	var j *judge
	if scenarios {
		logf("starting Prometheus (scrapes every KSM pod every %s)", promScrapeInterval)
		j, err = startJudge(ctx, o.root, filepath.Join(o.workDir, fmt.Sprintf("prometheus-%d", n)), cl.Kubeconfig(),
			len(sum.Pods), len(nodeNames), "load-.*")
		if err != nil {
			return sr, fmt.Errorf("start Prometheus: %w", err)
		}
		defer j.stop()
	}

	op, err := measureOperator(ctx, o, cl, cs, k8s, manager, nodeNames, scenarios, j)
	if err != nil {
		return sr, err
	}
	sr.Operator = op
	if !scenarios {
		return sr, nil
	}

	for _, pol := range []appsv1.PodManagementPolicyType{appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement} {
		logf("StatefulSet autosharding, podManagementPolicy %s", pol)
		r, err := measureStatefulSet(ctx, o, cfg, cs, pol, j)
		if err != nil {
			return sr, fmt.Errorf("StatefulSet %s: %w", pol, err)
		}
		sr.StatefulSets = append(sr.StatefulSets, r)
		sr.Ran = append(sr.Ran, "STS "+string(pol)+": "+strings.Join([]string{changeCreate, changeRollout, changeReshardDn, changeReshardUp}, ", "))
	}
	return sr, nil
}

// measureStatefulSet runs one autosharded StatefulSet through create,
// rollout, scale down and back up, with real KSM behind its pods, and
// measures every change in the metrics.
func measureStatefulSet(ctx context.Context, o options, cfg *rest.Config, cs kubernetes.Interface, pol appsv1.PodManagementPolicyType, j *judge) (STSResults, error) {
	res := STSResults{Policy: string(pol), Changes: map[string]Change{}}
	name := sts.Name(pol)
	side := "sts-" + strings.ToLower(string(pol))
	m, err := startMeter(ctx, cfg, cs, stsNamespace, sts.Selector(name), o.watchInterval, j, side)
	if err != nil {
		return res, err
	}
	defer m.stop()
	keys := map[string]string{sts.PhaseCreate: changeCreate, sts.PhaseRollout: changeRollout,
		sts.PhaseScaleDown: changeReshardDn, sts.PhaseScaleUp: changeReshardUp}
	r, err := sts.Run(ctx, cs, sts.Options{
		Namespace: stsNamespace, Policy: pol, Shards: int32(o.shards), ScaleTo: int32(o.reshardTo),
		Image: imageA, NewImage: imageB,
		// Also the ksmscale label of its series in Prometheus.
		PodLabels:   map[string]string{kubeletLabel: side},
		ClusterRole: ksmClusterRole,
		Logf:        logf,
		Phase: func(phase string) func(time.Time) error {
			m.begin()
			return func(done time.Time) error {
				c, rep, err := m.finish(ctx, done)
				if err != nil {
					return err
				}
				logf("STS %s %s: done after %s, metrics complete after %s: %s", pol, phase, c.Duration, c.MetricsComplete, rep)
				res.Changes[keys[phase]] = c
				if phase == sts.PhaseCreate {
					res.ListTime, err = createListTimes(ctx, cs, stsNamespace, sts.Selector(name), rep)
				}
				return err
			}
		},
	})
	if err != nil {
		return res, err
	}
	res.ReadinessUncovered = map[string]Seconds{
		changeRollout:   Seconds(r.RolloutUncovered.Total),
		changeReshardDn: Seconds(r.ScaleDownUncovered.Total),
		changeReshardUp: Seconds(r.ScaleUpUncovered.Total),
	}
	return res, nil
}

// measureOperator runs the operator binary as its own process and drives a
// KSMScale through creation, (with scenarios) an image rollout and a
// reshard down and back up, and a steady period.
func measureOperator(ctx context.Context, o options, cl *localcluster.Cluster, cs kubernetes.Interface, k8s client.Client,
	manager string, nodes []string, scenarios bool, j *judge) (OperatorResults, error) {
	res := OperatorResults{Changes: map[string]Change{}}
	ports, err := proc.FreePorts(3)
	if err != nil {
		return res, err
	}
	mport, pport := ports[0], ports[1]
	args := []string{
		"--kubeconfig", cl.Kubeconfig(),
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", mport),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", pport),
	}
	profile := func(string) error { return nil }
	if o.profileDir != "" {
		args = append(args, fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", ports[2]))
		profile = func(when string) error {
			file := filepath.Join(o.profileDir, fmt.Sprintf("heap-%d-%s.pb.gz", len(nodes), when))
			logf("operator: heap profile %s", file)
			return saveHeapProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", ports[2]), file)
		}
	}
	logFile := filepath.Join(o.workDir, fmt.Sprintf("operator-%d.log", len(nodes)))
	p, err := proc.Start("operator", manager, args, logFile)
	if err != nil {
		return res, err
	}
	defer func() { _ = p.Stop(10 * time.Second) }()
	samp := startSampler(ctx, p.PID())
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	if err := poll(ctx, 60*time.Second, func() (bool, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", pport))
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		return res, fmt.Errorf("operator not ready (log %s): %w", logFile, err)
	}
	res.Requests = map[string]Counts{}
	phase := func(label string, f func() error) error {
		before, err := scrapeRequests(metricsURL)
		if err != nil {
			return err
		}
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		after, err := scrapeRequests(metricsURL)
		if err != nil {
			return err
		}
		res.Requests[label] = Counts{Reads: after.Reads - before.Reads, Writes: after.Writes - before.Writes}
		return nil
	}
	selector := kubeletLabel + "=" + name
	m, err := startMeter(ctx, cl.RESTConfig(), cs, ksmNS, selector, o.watchInterval, j, name)
	if err != nil {
		return res, err
	}
	defer m.stop()

	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace: ksmNS, MonitorImage: imageA,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: int32(o.shards)},
	}}
	// Unset, minReadySeconds and maxSurge take the CRD's defaults: the
	// ones users get are the ones measured.
	if o.settle != nil || o.maxSurge != nil {
		k.Spec.Sharding.Advanced = &v1alpha1.AdvancedShardingConfig{}
		if o.settle != nil {
			k.Spec.Sharding.Advanced.MinReadySeconds = ptr.To(int32(o.settle.Seconds()))
		}
		if o.maxSurge != nil {
			k.Spec.Sharding.Advanced.MaxSurge = o.maxSurge
		}
	}
	if err := phase("initial", func() error {
		logf("operator: creating a KSMScale with %d shards", o.shards)
		m.begin()
		start := time.Now()
		if err := k8s.Create(ctx, k); err != nil {
			return err
		}
		if err := poll(ctx, 10*time.Minute, func() (bool, error) {
			got := &v1alpha1.KSMScale{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionAvailable), nil
		}); err != nil {
			return err
		}
		res.Available = Seconds(time.Since(start))
		if err := waitConverged(ctx, k8s, o.shards, imageA); err != nil {
			return err
		}
		c, rep, err := m.finish(ctx, time.Now())
		if err != nil {
			return err
		}
		logf("operator: Available after %s, converged after %s, metrics complete after %s: %s", res.Available, c.Duration, c.MetricsComplete, rep)
		res.Changes[changeCreate] = c
		res.ListTime, err = createListTimes(ctx, cs, ksmNS, selector, rep)
		return err
	}); err != nil {
		return res, err
	}
	if err := profile("converged"); err != nil {
		return res, err
	}

	change := func(label, patch string, shards int, image string) error {
		return phase(label, func() error {
			logf("operator: %s", label)
			m.begin()
			if err := k8s.Patch(ctx, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}},
				client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
				return err
			}
			if err := waitConverged(ctx, k8s, shards, image); err != nil {
				return err
			}
			c, rep, err := m.finish(ctx, time.Now())
			if err != nil {
				return err
			}
			logf("operator: %s converged after %s, metrics complete after %s: %s", label, c.Duration, c.MetricsComplete, rep)
			res.Changes[label] = c
			return nil
		})
	}
	if scenarios {
		if err := change(changeRollout, fmt.Sprintf(`{"spec":{"monitorImage":%q}}`, imageB), o.shards, imageB); err != nil {
			return res, err
		}
		if err := change(changeReshardDn, fmt.Sprintf(`{"spec":{"sharding":{"shardCount":%d}}}`, o.reshardTo), o.reshardTo, imageB); err != nil {
			return res, err
		}
		if err := change(changeReshardUp, fmt.Sprintf(`{"spec":{"sharding":{"shardCount":%d}}}`, o.shards), o.shards, imageB); err != nil {
			return res, err
		}
	}
	// The steady period is about the operator; the scrapes of every shard
	// each second would only compete with it for the two cores.
	m.stop()

	// The last pass may still be sending an Event (the recorder
	// writes asynchronously): wait until the operator's writes have stopped
	// for 5 s, so the steady period counts only what happens in it.
	if err := quiesce(ctx, metricsURL); err != nil {
		return res, err
	}
	reconcilesBefore, err := scrapeSum(metricsURL, "controller_runtime_reconcile_total", `controller="ksmscale"`)
	if err != nil {
		return res, err
	}
	if err := phase("steady", func() error {
		logf("operator: steady period of %s: node heartbeats every %s per node, %d unrelated pods come and go", o.steady, o.heartbeatEvery, o.churnPods)
		sctx, cancel := context.WithTimeout(ctx, o.steady)
		defer cancel()
		var beats, churned atomic.Int64
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); heartbeats(sctx, cs, nodes, o.heartbeatEvery, &beats) }()
		go func() { defer wg.Done(); churn(sctx, cs, o.churnPods, o.steady, &churned) }()
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.NodeHeartbeats, res.ChurnPods = int(beats.Load()), int(churned.Load())
		return nil
	}); err != nil {
		return res, err
	}
	reconcilesAfter, err := scrapeSum(metricsURL, "controller_runtime_reconcile_total", `controller="ksmscale"`)
	if err != nil {
		return res, err
	}
	res.SteadyReconciles = reconcilesAfter - reconcilesBefore
	s := samp.stop()
	res.PeakRSSMiB, res.SteadyRSSMiB, res.SteadyAnonMiB, res.CPUSeconds = s.peakMiB, s.lastMiB, s.lastAnonMiB, s.cpu
	heap, err := scrapeSum(metricsURL, "go_gc_heap_live_bytes", "")
	if err != nil {
		return res, err
	}
	res.SteadyHeapLiveMiB = heap / (1 << 20)
	if err := profile("steady"); err != nil {
		return res, err
	}

	all, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return res, err
	}
	res.PodsInCluster = len(all.Items)
	managed, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=ksm-scale-operator"})
	if err != nil {
		return res, err
	}
	res.PodsCached = len(managed.Items)
	if err := k8s.Delete(ctx, k); err != nil {
		return res, err
	}
	// Its KSM processes must be gone before the StatefulSets' start, or
	// they would share the cores with them.
	return res, poll(ctx, 5*time.Minute, func() (bool, error) {
		pods, err := cs.CoreV1().Pods(ksmNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
		return err == nil && len(pods.Items) == 0, err
	})
}

// quiesce waits until the operator's write count has not changed for 5 s.
func quiesce(ctx context.Context, metricsURL string) error {
	last, stableSince := -1.0, time.Now()
	return poll(ctx, 2*time.Minute, func() (bool, error) {
		c, err := scrapeRequests(metricsURL)
		if err != nil {
			return false, err
		}
		if c.Writes != last {
			last, stableSince = c.Writes, time.Now()
		}
		return time.Since(stableSince) >= 5*time.Second, nil
	})
}

// waitConverged waits until the KSMScale is Ready on `shards` shards with
// exactly one pod per shard, all running `image`.
func waitConverged(ctx context.Context, k8s client.Client, shards int, image string) error {
	return poll(ctx, 20*time.Minute, func() (bool, error) {
		got := &v1alpha1.KSMScale{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			return false, err
		}
		ss := got.Status.ShardingStatus
		if got.Status.Phase != v1alpha1.PhaseReady || got.Status.ObservedGeneration != got.Generation || ss == nil ||
			int(ss.TotalShards) != shards || int(ss.ActiveShards) != shards {
			return false, nil
		}
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(ksmNS), client.MatchingLabels{"ksmscale.example.com": name}); err != nil {
			return false, err
		}
		if len(pods.Items) != shards {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.Spec.Containers[0].Image != image || !p.DeletionTimestamp.IsZero() {
				return false, nil
			}
		}
		return true, nil
	})
}

// heartbeats posts a node status heartbeat for every node once per `every`,
// spread evenly, as kubelets do (nodeStatusReportFrequency).
func heartbeats(ctx context.Context, cs kubernetes.Interface, nodes []string, every time.Duration, count *atomic.Int64) {
	tick := time.NewTicker(max(every/time.Duration(len(nodes)), time.Millisecond))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, nodes[i%len(nodes)], metav1.GetOptions{})
		if err != nil {
			continue
		}
		now := metav1.Now()
		for j := range n.Status.Conditions {
			n.Status.Conditions[j].LastHeartbeatTime = now
		}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err == nil {
			count.Add(1)
		}
	}
}

// churn creates `total` unrelated pods over `period`, each deleted again
// about 30 s after it was created.
func churn(ctx context.Context, cs kubernetes.Interface, total int, period time.Duration, count *atomic.Int64) {
	const ns = "churn"
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if total <= 0 {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(period / time.Duration(total+1))
	defer tick.Stop()
	var live []string
	for i := 0; i < total; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i), Labels: map[string]string{"app": "churn"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: workload.Image}}}}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err == nil {
			count.Add(1)
			live = append(live, pod.Name)
		}
		if len(live) > int(30*time.Second/(period/time.Duration(total+1)))+1 {
			_ = cs.CoreV1().Pods(ns).Delete(ctx, live[0], metav1.DeleteOptions{})
			live = live[1:]
		}
	}
	<-ctx.Done()
}

// requests are client-go's request counters of the operator, split by HTTP
// method: GET (get, list, watch) are reads, the rest writes.
func scrapeRequests(url string) (Counts, error) {
	text, err := scrape(url)
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		v := sampleValue(line)
		if strings.Contains(line, `method="GET"`) {
			c.Reads += v
		} else {
			c.Writes += v
		}
	}
	return c, nil
}

func scrapeSum(url, family, contains string) (float64, error) {
	text, err := scrape(url)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if (strings.HasPrefix(line, family+"{") || strings.HasPrefix(line, family+" ")) && strings.Contains(line, contains) {
			total += sampleValue(line)
		}
	}
	return total, nil
}

// sampleValue is the value of one exposition line, `name{labels} value` or
// `name value`.
func sampleValue(line string) float64 {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return 0
	}
	rest := line[i:]
	if strings.HasPrefix(rest, "{") {
		rest = rest[strings.LastIndex(rest, "}")+1:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func scrape(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// saveHeapProfile fetches the operator's heap profile (after a GC) into file.
func saveHeapProfile(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sampler reads the operator's memory and CPU from /proc.
type sampler struct {
	pid    int
	cancel context.CancelFunc
	done   chan sample
}

type sample struct{ peakMiB, lastMiB, lastAnonMiB, cpu float64 }

func startSampler(ctx context.Context, pid int) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{pid: pid, cancel: cancel, done: make(chan sample, 1)}
	go func() {
		var last sample
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if cur, ok := readProc(pid); ok {
				cur.peakMiB = max(cur.peakMiB, last.peakMiB)
				last = cur
			}
			select {
			case <-ctx.Done():
				s.done <- last
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() sample {
	s.cancel()
	return <-s.done
}

// readProc reads VmHWM (peak RSS), VmRSS, RssAnon (the part that is not
// the mapped binary) and utime+stime of a process.
func readProc(pid int) (sample, bool) {
	var s sample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, false
	}
	for _, l := range strings.Split(string(status), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmHWM:":
			s.peakMiB = kb / 1024
		case "VmRSS:":
			s.lastMiB = kb / 1024
		case "RssAnon:":
			s.lastAnonMiB = kb / 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, false
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	if len(f) > 12 {
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		s.cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
	}
	return s, true
}
