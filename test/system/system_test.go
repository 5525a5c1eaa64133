// Package system runs the operator against the local cluster of
// test/localcluster: a real kube-apiserver with kube-controller-manager
// (garbage collection, disruption controller), kube-scheduler and kwok
// nodes that make scheduled pods Running and Ready. It proves what envtest
// cannot: scheduling with the spread, evictions against the PDB, and that
// deleting a KSMScale leaves nothing behind.
package system

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
	"github.com/ksmscale/ksm-scale-operator/test/coverage"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	wait.Eventually(t, 200*time.Millisecond, timeout, what, cond)
}

func TestOnLocalCluster(t *testing.T) {
	root, _ := filepath.Abs("../..")
	bin := os.Getenv("KUBEBUILDER_ASSETS")
	if bin == "" {
		bin = filepath.Join(root, "bin")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s missing in %s: run hack/build-tools.sh", b, bin)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{BinDir: bin, Dir: t.TempDir(), Nodes: 6, Logf: t.Logf})
	if err != nil {
		t.Fatalf("start local cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := cl.Stop(); err != nil {
			t.Errorf("stop local cluster: %v", err)
		}
	})
	cfg := cl.RESTConfig()

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(root, "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install CRD: %v", err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controller.CacheOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if err := controller.Setup(ctx, mgr, controller.DefaultKSMClusterRole); err != nil {
		t.Fatal(err)
	}
	mgrDone := make(chan struct{})
	go func() { defer close(mgrDone); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-mgrDone })

	const ns, name = "monitoring", "system"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace: ns,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: 3, Advanced: &v1alpha1.AdvancedShardingConfig{
			MinAvailable: 2, MinReadySeconds: ptr.To[int32](2),
		}},
	}}
	if err := k8s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}

	shardPods := func() ([]corev1.Pod, error) {
		list := &corev1.PodList{}
		err := k8s.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{"ksmscale.example.com": name})
		return list.Items, err
	}
	waitReady := func(what string) []corev1.Pod {
		var pods []corev1.Pod
		eventually(t, 120*time.Second, what, func() error {
			got := &v1alpha1.KSMScale{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
				return err
			}
			if got.Status.Phase != v1alpha1.PhaseReady || got.Status.ObservedGeneration != got.Generation {
				return fmt.Errorf("phase %q", got.Status.Phase)
			}
			var err error
			if pods, err = shardPods(); err != nil {
				return err
			}
			if len(pods) != 3 {
				return fmt.Errorf("%d pods", len(pods))
			}
			for _, p := range pods {
				if !podReady(&p) || !p.DeletionTimestamp.IsZero() {
					return fmt.Errorf("pod %s not Ready", p.Name)
				}
			}
			return nil
		})
		return pods
	}

	pods := waitReady("3 shards Ready on kwok nodes")
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
	}
	if len(nodes) != 3 {
		t.Errorf("anti-affinity should spread 3 shards over 3 of 6 nodes, got %v", nodes)
	}

	t.Run("eviction respects the PDB and the shard heals", func(t *testing.T) {
		w, err := coverage.Watch(ctx, cs, ns, "ksmscale.example.com="+name, "kube-state-metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		// Wait until the disruption controller has counted the shards.
		eventually(t, 60*time.Second, "PDB allows one disruption", func() error {
			pdb := &policyv1.PodDisruptionBudget{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name + "-pdb"}, pdb); err != nil {
				return err
			}
			if pdb.Status.DisruptionsAllowed != 1 {
				return fmt.Errorf("disruptionsAllowed %d", pdb.Status.DisruptionsAllowed)
			}
			return nil
		})
		evict := func(p corev1.Pod) error {
			return cs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns}})
		}
		// No room for a replacement: with every node cordoned, the evicted
		// shard's new pod stays Pending, so the budget stays used up and the
		// outcome of the second eviction does not race the scheduler.
		setUnschedulable := func(v bool) {
			nodes := &corev1.NodeList{}
			if err := k8s.List(ctx, nodes); err != nil {
				t.Fatal(err)
			}
			for i := range nodes.Items {
				n := &nodes.Items[i]
				n.Spec.Unschedulable = v
				if err := k8s.Update(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
		}
		setUnschedulable(true)
		if err := evict(pods[0]); err != nil {
			t.Fatalf("first eviction refused: %v", err)
		}
		// A second eviction would take the shards below minAvailable 2.
		if err := evict(pods[1]); !apierrors.IsTooManyRequests(err) {
			t.Errorf("second eviction: want 429 from the PDB, got %v", err)
		}
		eventually(t, 60*time.Second, "unschedulable replacement reported as Degraded", func() error {
			got := &v1alpha1.KSMScale{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
				return err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionDegraded)
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controller.ReasonPodsFailing || !strings.Contains(c.Message, "unschedulable") {
				return fmt.Errorf("Degraded condition %+v", c)
			}
			return nil
		})
		setUnschedulable(false)
		eventually(t, 120*time.Second, "evicted shard replaced", func() error {
			for _, p := range waitReady("3 shards Ready") {
				if p.UID == pods[0].UID {
					return fmt.Errorf("evicted pod still listed")
				}
			}
			if r := w.Report(time.Now()); !r.Covered {
				return fmt.Errorf("coverage watcher: %s", r)
			}
			return nil
		})
		// The eviction removed the only pod of its shard, so a gap is
		// expected; it must end as soon as the replacement is Ready.
		t.Logf("eviction: %s", w.Report(time.Now()))
	})

	t.Run("deleting the KSMScale leaves nothing behind", func(t *testing.T) {
		if err := k8s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		eventually(t, 120*time.Second, "garbage collected", func() error {
			pods, err := shardPods()
			if err != nil {
				return err
			}
			if len(pods) > 0 {
				return fmt.Errorf("%d pods left", len(pods))
			}
			for _, o := range []client.Object{
				&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}},
				&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name + "-pdb"}},
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}},
				&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kube-state-metrics-" + name}},
				&v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}},
			} {
				err := k8s.Get(ctx, client.ObjectKeyFromObject(o), o)
				if err == nil {
					return fmt.Errorf("%T %s left", o, o.GetName())
				}
				if !apierrors.IsNotFound(err) {
					return err
				}
			}
			return nil
		})
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
