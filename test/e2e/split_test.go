//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/shardcheck"
)

// TestShardsSplitTheClusterExactly runs real kube-state-metrics processes
// with the arguments the operator put in each shard pod and checks, for 3
// shards and again after a reshard to 7, that every pod, node, namespace and
// configmap is exported by exactly one shard, the one KSM's own algorithm
// (ksm.ShardOf) predicts, and that the union equals an unsharded KSM's
// output series for series.
func TestShardsSplitTheClusterExactly(t *testing.T) {
	const ns, name = "monitoring", "split"
	ensureNamespace(t, ns)
	startOperator(t, t, "operator-split")

	seedWorkload(t)

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
