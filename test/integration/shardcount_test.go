package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
)

// TestShardCountFollowsNodesWithDamping: without shardCount, the shard count
// follows ceil(nodes / nodesPerMonitor); a change is adopted only after it
// has held for its stabilization window, and status says why.
func TestShardCountFollowsNodesWithDamping(t *testing.T) {
	const ns, name = "auto-shards", "auto-shards"
	createNamespace(t, ns)
	startKubelet(t, ns)
	nodes := &corev1.NodeList{}
	if err := k8s.List(testCtx, nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) > 6 {
		t.Fatalf("test needs at most 6 nodes to start with, found %d", len(nodes.Items))
	}
	base := len(nodes.Items)
	createNodes(t, "auto-node", 0, 6-base) // 6 nodes / 2 = 3 shards

	createKSMScale(t, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace:       ns,
		NodesPerMonitor: 2,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, Advanced: &v1alpha1.AdvancedShardingConfig{
			MinReadySeconds:               ptr.To[int32](1),
			ScaleUpStabilizationSeconds:   ptr.To[int32](6),
			ScaleDownStabilizationSeconds: ptr.To[int32](10),
		}},
	}})
	waitConverged(t, ns, name, 3, nil)
	k := getKSMScale(t, name)
	if ss := k.Status.ShardingStatus; ss.ShardCountSource != "NodesPerMonitor" || !strings.Contains(ss.ShardCountMessage, "ceil(6 nodes / 2 nodesPerMonitor)") {
		t.Errorf("status does not say why: %+v", ss)
	}

	// Growth to 8 nodes calls for 4 shards, held back for 6 s.
	createNodes(t, "auto-node", 6-base, 2)
	added := time.Now()
	waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
		ss := k.Status.ShardingStatus
		if ss.TotalShards != 3 || ss.RecommendedShards != 4 || ss.RecommendedSince == nil || !strings.Contains(ss.ShardCountMessage, "keeping 3 shards") {
			return fmt.Errorf("pending growth not reported: %+v", ss)
		}
		return nil
	})
	waitConverged(t, ns, name, 4, nil)
	if d := time.Since(added); d < 6*time.Second {
		t.Errorf("resharded to 4 after %s, before the 6 s window", d)
	}

	// A dip that does not last for the 10 s down window changes nothing.
	deleteNodes(t, "auto-node", 6-base, 2)
	waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
		if ss := k.Status.ShardingStatus; ss.RecommendedShards != 3 || ss.TotalShards != 4 {
			return fmt.Errorf("pending shrink not reported: %+v", ss)
		}
		return nil
	})
	createNodes(t, "auto-node", 100, 2) // back to 8 nodes
	waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
		if ss := k.Status.ShardingStatus; ss.RecommendedShards != 0 || ss.TotalShards != 4 {
			return fmt.Errorf("pending shrink not cancelled: %+v", ss)
		}
		return nil
	})
	time.Sleep(11 * time.Second) // past the down window: still 4 shards
	if ss := getKSMScale(t, name).Status.ShardingStatus; ss.TotalShards != 4 {
		t.Errorf("a dip shorter than the window resharded to %d", ss.TotalShards)
	}

	// A lasting shrink is adopted after the window.
	deleteNodes(t, "auto-node", 100, 2)
	removed := time.Now()
	waitConverged(t, ns, name, 3, nil)
	if d := time.Since(removed); d < 10*time.Second {
		t.Errorf("resharded down after %s, before the 10 s window", d)
	}
}
