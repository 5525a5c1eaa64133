//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/shardcheck"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/workload"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
)

// TestShardsSplitTheClusterExactly runs real kube-state-metrics processes
// with the arguments the operator put in each shard pod and checks, for 3
// shards and again after a reshard to 7, that every pod, node, namespace and
// configmap is exported by exactly one shard, the one KSM's own algorithm
// (shardcheck.ShardOf) predicts, and that the union equals an unsharded KSM's
// output series for series.
func TestShardsSplitTheClusterExactly(t *testing.T) {
	const ns, name = "monitoring", "split"
	ensureNamespace(t, ns)
	startOperator(t, t, "operator-split")

	nodes := &corev1.NodeList{}
	if err := k8s.List(suiteCtx, nodes); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range nodes.Items {
		if n := &nodes.Items[i]; localcluster.NodeReady(n) && !n.Spec.Unschedulable {
			names = append(names, n.Name)
		}
	}
	start := time.Now()
	sum, err := workload.Seed(suiteCtx, cs, workload.Options{
		Namespaces: 10, PodsPerNamespace: 300, ConfigMapsPerNamespace: 20, Nodes: names, Prefix: "load",
	})
	if err != nil {
		t.Fatalf("seed workload: %v", err)
	}
	if err := workload.WaitPodsReady(suiteCtx, cs, sum, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("e2e: %d pods, %d configmaps in %d namespaces on %d nodes, Ready in %s\n",
		len(sum.Pods), len(sum.ConfigMaps), len(sum.Namespaces), len(names), time.Since(start).Round(time.Millisecond))

	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace: ns,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: 3, Advanced: &v1alpha1.AdvancedShardingConfig{
			MinReadySeconds: ptr.To[int32](5),
		}},
	}}
	if err := k8s.Create(suiteCtx, k); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(suiteCtx, k) })

	check := func(total int) {
		t.Helper()
		waitConverged(t, ns, name, total, 180*time.Second)
		var out bytes.Buffer
		code, err := shardcheck.Run(suiteCtx, shardcheck.Options{
			Kubeconfig: cluster.Kubeconfig(), Name: name, Bin: bin, Timeout: 5 * time.Minute,
			LogDir: filepath.Join(work, fmt.Sprintf("ksm-%d-shards", total)),
		}, &out)
		fmt.Printf("e2e: real kube-state-metrics, %d shards:\n%s", total, out.String())
		if err != nil || code != shardcheck.ExitOK {
			t.Fatalf("%d shards do not split the cluster exactly (exit %d): %v", total, code, err)
		}
	}
	check(3)

	w := watchCoverage(t, ns, name)
	patchSpec(t, name, `{"spec":{"sharding":{"shardCount":7}}}`)
	waitConverged(t, ns, name, 7, 180*time.Second)
	measure(t, w, "reshard 3->7 with 3000 pods", false, "")
	check(7)
}
