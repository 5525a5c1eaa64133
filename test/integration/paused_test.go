package integration

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
)

// TestPausedAndProgressDeadline: spec.paused stops every change and keeps
// status reported; a change that cannot complete ends as
// ProgressDeadlineExceeded and Stalled, as kstatus-based tools expect.
func TestPausedAndProgressDeadline(t *testing.T) {
	const ns, name = "paused", "paused"
	createNamespace(t, ns)
	kubelet := startKubelet(t, ns)
	k := shardedKSMScale(name, ns, 2, 1)
	k.Spec.ProgressDeadlineSeconds = ptr.To[int32](5)
	createKSMScale(t, k)
	waitConverged(t, ns, name, 2, nil)
	waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
		return wantCondition(k, v1alpha1.ConditionReady, metav1.ConditionTrue, controller.ReasonConverged)
	})

	t.Run("paused: nothing is changed, status is still reported", func(t *testing.T) {
		patchSpec(t, name, `{"spec":{"paused":true}}`)
		waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
			if k.Status.Phase != v1alpha1.PhasePaused {
				return fmt.Errorf("phase %s", k.Status.Phase)
			}
			return wantCondition(k, v1alpha1.ConditionProgressing, metav1.ConditionFalse, controller.ReasonPaused)
		})
		victim := shardPods(t, ns, name)[0]
		if err := k8s.Delete(testCtx, &victim); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
			if ss := k.Status.ShardingStatus; ss == nil || ss.ActiveShards != 1 {
				return fmt.Errorf("sharding status %+v, want 1 active shard reported", ss)
			}
			return nil
		})
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if n := len(shardPods(t, ns, name)); n != 1 {
				t.Fatalf("%d shard pods while paused, want the deleted one not replaced", n)
			}
			time.Sleep(250 * time.Millisecond)
		}
		patchSpec(t, name, `{"spec":{"paused":false}}`)
		waitConverged(t, ns, name, 2, nil)
	})

	t.Run("a change that cannot complete exceeds its deadline", func(t *testing.T) {
		kubelet.setHold(func(p *corev1.Pod) bool { return p.Labels["total-shards"] == "3" })
		patchSpec(t, name, `{"spec":{"sharding":{"shardCount":3}}}`)
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			if err := wantCondition(k, v1alpha1.ConditionProgressing, metav1.ConditionFalse, controller.ReasonProgressDeadlineExceeded); err != nil {
				return err
			}
			if err := wantCondition(k, v1alpha1.ConditionStalled, metav1.ConditionTrue, controller.ReasonProgressDeadlineExceeded); err != nil {
				return err
			}
			// The old generation still serves every object.
			return wantCondition(k, v1alpha1.ConditionAvailable, metav1.ConditionTrue, controller.ReasonCompleteGenerationReady)
		})
		kubelet.setHold(nil)
		waitConverged(t, ns, name, 3, nil)
		waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
			if err := wantCondition(k, v1alpha1.ConditionStalled, metav1.ConditionFalse, controller.ReasonAsExpected); err != nil {
				return err
			}
			return wantCondition(k, v1alpha1.ConditionReady, metav1.ConditionTrue, controller.ReasonConverged)
		})
	})
}
