package metricwatch

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/ksmscale/ksm-scale-operator/test/e2e/ksmproc"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/workload"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/proc"
	"github.com/ksmscale/ksm-scale-operator/test/tools"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

// Generous deadlines: two shared cores run the control plane, kwok and up
// to four kube-state-metrics processes.
const (
	settleTimeout = 3 * time.Minute
	pollEvery     = 250 * time.Millisecond
	// measureTicks is how many ticks a measurement spans.
	measureTicks = 6
)

// TestWatcherWithRealKSM runs real kube-state-metrics processes as shards 0
// and 1 of 2 against a small local cluster and checks that the watcher sees
// exactly what they export: nothing missing while both serve; one shard's
// objects missing when it stops, or when its process answers /metrics but
// cannot list; duplicates when a second process serves the same shard.
func TestWatcherWithRealKSM(t *testing.T) {
	bin := tools.BinDir(t, localcluster.KubeAPIServer, localcluster.Kwok, "kube-state-metrics")
	ctx := t.Context()
	dir := t.TempDir()

	c := localcluster.StartT(t, localcluster.Options{BinDir: bin, Dir: filepath.Join(dir, "cluster"), Nodes: 4, Logf: t.Logf})
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 100, 200
	cs := kubernetes.NewForConfigOrDie(cfg)
	nodeNames := c.NodeNames()
	sum, err := workload.Seed(ctx, cs, workload.Options{Namespaces: 3, PodsPerNamespace: 17, ConfigMapsPerNamespace: 4,
		Nodes: nodeNames, Prefix: "mw"})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	t.Logf("seeded %d namespaces, %d pods, %d configmaps on %d nodes", len(sum.Namespaces), len(sum.Pods), len(sum.ConfigMaps), len(nodeNames))
	// A kubeconfig whose ServiceAccount has no permissions: KSM starts
	// (its server-version check is allowed to every authenticated user)
	// and serves /metrics, but every list is forbidden. An invalid token
	// would not do: KSM v2.20.0 then exits at start ("failed to create
	// client: ... provide credentials") instead of serving an empty set.
	forbidden := serviceAccountKubeconfig(t, cs, c.Kubeconfig(), filepath.Join(dir, "forbidden.kubeconfig"))

	startKSM := func(name, kubeconfig string, shard int) *ksmproc.Process {
		t.Helper()
		ports, err := proc.FreePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ksmproc.Start(ctx, ksmproc.Options{
			Bin: filepath.Join(bin, "kube-state-metrics"),
			Args: []string{
				"--host=127.0.0.1", "--port=" + strconv.Itoa(ports[0]),
				"--telemetry-host=127.0.0.1", "--telemetry-port=" + strconv.Itoa(ports[1]),
				"--kubeconfig=" + kubeconfig,
				"--resources=pods,nodes,namespaces,configmaps",
				"--shard=" + strconv.Itoa(shard), "--total-shards=2",
			},
			LogFile: filepath.Join(dir, name+".log"),
			Name:    name,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := p.Stop(); err != nil {
				t.Errorf("stop %s: %v", name, err)
			}
		})
		return p
	}
	target := func(p *ksmproc.Process) Target { return Target{Name: p.Name(), URL: p.MetricsURL()} }

	shard0 := startKSM("shard-0", c.Kubeconfig(), 0)
	shard1 := startKSM("shard-1", c.Kubeconfig(), 1)
	targets := &targetList{}
	targets.set(nil, target(shard0), target(shard1))

	w, err := Start(ctx, Options{Config: c.RESTConfig(), Targets: targets.get, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)

	// waitLast waits until the latest tick satisfies ok.
	waitLast := func(what string, ok func(Instant) error) {
		t.Helper()
		wait.Eventually(t, pollEvery, settleTimeout, what, func() error {
			r := w.Report()
			if r.Ticks == 0 {
				return fmt.Errorf("no tick yet")
			}
			return ok(r.Last)
		})
	}
	// measure resets the watcher and returns the report after a few ticks.
	measure := func(what string) Report {
		t.Helper()
		w.Reset()
		var r Report
		wait.Eventually(t, pollEvery, settleTimeout, what, func() error {
			if r = w.Report(); r.Ticks < measureTicks {
				return fmt.Errorf("%d ticks", r.Ticks)
			}
			return nil
		})
		t.Logf("%s: %s", what, r)
		return r
	}
	near := func(got, want int) bool { return got >= want-2 && got <= want+2 }

	waitLast("both shards listed", func(l Instant) error {
		if l.Missing != 0 || l.FailedTargets != 0 {
			return fmt.Errorf("%d missing (e.g. %v), %d failed targets", l.Missing, l.MissingExamples, l.FailedTargets)
		}
		return nil
	})

	var count0, count1 int
	t.Run("both shards serving", func(t *testing.T) {
		r := measure("both shards")
		if r.MissingObjectSeconds != 0 || r.DuplicateObjectSeconds != 0 || r.ExtraObjectSeconds != 0 || r.ScrapeErrors != 0 {
			t.Errorf("want nothing missing, duplicate, extra or failed: %s", r)
		}
		count0, count1 = r.Last.Exported["shard-0"], r.Last.Exported["shard-1"]
		total := w.truthSize()
		want := len(sum.Pods) + len(sum.Namespaces) + len(sum.ConfigMaps) + len(nodeNames)
		if count0 == 0 || count1 == 0 || count0+count1 != total || total < want {
			t.Errorf("shards export %d + %d objects; the API server has %d (%d seeded)", count0, count1, total, want)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("one shard stopped", func(t *testing.T) {
		if err := shard1.Stop(); err != nil {
			t.Fatal(err)
		}
		r := measure("shard 1 stopped")
		if r.MissingObjectSeconds <= 0 || !near(r.Worst.Missing, count1) || r.ScrapeErrors == 0 {
			t.Errorf("want shard 1's %d objects missing and scrape errors: %s", count1, r)
		}
		if r.DuplicateObjectSeconds != 0 {
			t.Errorf("duplicates with one shard: %s", r)
		}
	})

	t.Run("a shard that cannot list", func(t *testing.T) {
		blind := startKSM("shard-1-forbidden", forbidden, 1)
		targets.set(nil, target(shard0), target(blind))
		waitLast("the forbidden shard answers", func(l Instant) error {
			if _, ok := l.Exported[blind.Name()]; !ok || l.FailedTargets != 0 {
				return fmt.Errorf("exported %v, %d failed targets", l.Exported, l.FailedTargets)
			}
			return nil
		})
		r := measure("shard 1 cannot list")
		if r.ScrapeErrors != 0 {
			t.Errorf("the forbidden shard's /metrics should answer: %s", r)
		}
		if r.MissingObjectSeconds <= 0 || !near(r.Worst.Missing, count1) || r.Last.Exported[blind.Name()] != 0 {
			t.Errorf("want shard 1's %d objects missing while its process answers with nothing: %s, exported %v", count1, r, r.Last.Exported)
		}
		if blind.Exited() {
			t.Errorf("the forbidden shard exited; the case is meant to be a running, answering KSM")
		}
	})

	t.Run("two processes serve one shard", func(t *testing.T) {
		again := startKSM("shard-1-again", c.Kubeconfig(), 1)
		twin := startKSM("shard-0-twin", c.Kubeconfig(), 0)
		targets.set(nil, target(shard0), target(again), target(twin))
		waitLast("three shards listed", func(l Instant) error {
			if l.Missing != 0 || l.FailedTargets != 0 || !near(l.Duplicates, count0) {
				return fmt.Errorf("%d missing, %d failed targets, %d duplicates (want about %d)", l.Missing, l.FailedTargets, l.Duplicates, count0)
			}
			return nil
		})
		r := measure("shard 0 twice")
		if r.MissingObjectSeconds != 0 || r.DuplicateObjectSeconds <= 0 || !near(r.MostDuplicates.Duplicates, count0) {
			t.Errorf("want shard 0's %d objects duplicated and nothing missing: %s", count0, r)
		}
	})
}

// truthSize is the number of objects the API server has, for the test.
func (w *Watcher) truthSize() int {
	w.truth.mu.Lock()
	defer w.truth.mu.Unlock()
	n := 0
	for _, objs := range w.truth.objects {
		n += len(objs)
	}
	return n
}

// serviceAccountKubeconfig creates a ServiceAccount bound to nothing and
// writes a kubeconfig with a token of it.
func serviceAccountKubeconfig(t *testing.T, cs kubernetes.Interface, adminKubeconfig, path string) string {
	t.Helper()
	ctx := t.Context()
	const ns, sa = "metricwatch-forbidden", "nobody"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var tr *authenticationv1.TokenRequest
	wait.Eventually(t, pollEvery, settleTimeout, "token for "+sa, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		tr, err = cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
		}, metav1.CreateOptions{})
		return err
	})
	admin, err := clientcmd.LoadFromFile(adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	for _, cl := range admin.Clusters {
		cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: cl.Server, CertificateAuthorityData: cl.CertificateAuthorityData}
	}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["forbidden"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "forbidden"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
