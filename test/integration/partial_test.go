package integration

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
)

// keepsObservation checks that the status still reports the converged
// 3-shard generation: an early stop must not write 0 shards, empty shard
// health or "all 0 shards Ready", nor drop the shard gauges.
func keepsObservation(t *testing.T, name string) func(*v1alpha1.KSMScale) error {
	return func(k *v1alpha1.KSMScale) error {
		ss := k.Status.ShardingStatus
		if ss == nil || ss.TotalShards != 3 || len(ss.ShardHealth) != 3 || k.Status.DesiredReplicas != 3 {
			return fmt.Errorf("sharding status %+v, want the 3 shards observed before", ss)
		}
		if err := wantCondition(k, v1alpha1.ConditionAvailable, metav1.ConditionTrue, controller.ReasonAllShardsReady); err != nil {
			return err
		}
		if v, ok := gaugeSample(t, "ksmscale_shards_total", map[string]string{"ksmscale": name}); !ok || v != 3 {
			return fmt.Errorf("ksmscale_shards_total %v (present %v), want 3", v, ok)
		}
		return nil
	}
}

// TestPartialFailures: a child that cannot be written, or an API error
// midway, must neither corrupt the status nor stop the healing of the shard
// pods; errors that need a person are retried with backoff, so resolving
// them is noticed even when nothing the operator watches changes.
func TestPartialFailures(t *testing.T) {
	const ns, name = "partial", "partial"
	createNamespace(t, ns)
	startKubelet(t, ns)
	createKSMScale(t, shardedKSMScale(name, ns, 3, 1))
	waitConverged(t, ns, name, 3, nil)
	svcName := "kube-state-metrics-" + name
	nodes := 0
	// touch makes every KSMScale reconcile: a node is created.
	touch := func() {
		createNodes(t, "partial-node", nodes, 1)
		nodes++
	}

	t.Run("a name conflict keeps the status, shards still heal, resolving it is noticed", func(t *testing.T) {
		// Replace the operator's Service by someone else's of the same name.
		// The operator's create is held back meanwhile so that it cannot win
		// the race.
		faults.set(t, func(verb, namespace string, obj runtime.Object) error {
			if s, ok := obj.(*corev1.Service); ok && verb == "create" && s.Name == svcName {
				return apierrors.NewServiceUnavailable("held back by the test")
			}
			return nil
		})
		if err := k8s.Delete(testCtx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svcName}}); err != nil {
			t.Fatal(err)
		}
		foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svcName},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 80}}}}
		if err := k8s.Create(testCtx, foreign); err != nil {
			t.Fatal(err)
		}
		faults.clear()
		touch()
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			if err := wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionTrue, controller.ReasonNameConflict); err != nil {
				return err
			}
			return keepsObservation(t, name)(k)
		})

		victim := shardPods(t, ns, name)[1]
		if err := k8s.Delete(testCtx, &victim); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "the deleted shard pod replaced while the Service conflicts", func() error {
			pods := shardPods(t, ns, name)
			if len(pods) != 3 {
				return fmt.Errorf("%d shard pods", len(pods))
			}
			for _, p := range pods {
				if p.UID == victim.UID || !podReady(&p) {
					return fmt.Errorf("pod %s not replaced or not Ready", p.Name)
				}
			}
			return nil
		})

		// The foreign Service has no operator labels, so its deletion is
		// invisible to the operator's cache: only the retry can notice it.
		if err := k8s.Delete(testCtx, foreign); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			return wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionFalse, controller.ReasonAsExpected)
		})
		svc := &corev1.Service{}
		if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: svcName}, svc); err != nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("the operator's headless Service is not back: %v %+v", err, svc.Spec)
		}
	})

	t.Run("a foreign pod holding a shard pod's name: the shard takes the next name", func(t *testing.T) {
		victim := shardPods(t, ns, name)[0]
		faults.set(t, func(verb, namespace string, obj runtime.Object) error {
			if p, ok := obj.(*corev1.Pod); ok && verb == "create" && p.Name == victim.Name {
				return apierrors.NewServiceUnavailable("held back by the test")
			}
			return nil
		})
		if err := k8s.Delete(testCtx, &victim, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "victim gone", func() error {
			err := k8s.Get(testCtx, client.ObjectKeyFromObject(&victim), &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
		foreign := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: victim.Name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}}}
		if err := k8s.Create(testCtx, foreign); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(testCtx, foreign, client.GracePeriodSeconds(0)) })
		faults.clear()
		touch()
		got := waitConverged(t, ns, name, 3, nil)
		if got[0].Name != victim.Name+"-1" {
			t.Errorf("shard 0's pod is %s, want %s-1", got[0].Name, victim.Name)
		}
		if err := k8s.Get(testCtx, client.ObjectKeyFromObject(foreign), foreign); err != nil || !foreign.DeletionTimestamp.IsZero() {
			t.Errorf("the foreign pod was touched: %v", err)
		}
	})

	gr := func(resource string) schema.GroupResource { return schema.GroupResource{Resource: resource} }
	for _, tc := range []struct {
		name   string
		inject func(verb, namespace string, obj runtime.Object) error
		// stop: the error needs a person and shows in Degraded.
		stop bool
	}{
		{"a conflict on the ServiceAccount", func(verb, namespace string, obj runtime.Object) error {
			if sa, ok := obj.(*corev1.ServiceAccount); ok && namespace == ns && verb == "get" {
				return apierrors.NewConflict(gr("serviceaccounts"), sa.Name, errors.New("injected"))
			}
			return nil
		}, false},
		{"a timeout listing the shard pods", func(verb, namespace string, obj runtime.Object) error {
			if _, ok := obj.(*corev1.PodList); ok && namespace == ns && verb == "list" {
				return apierrors.NewTimeoutError("injected", 1)
			}
			return nil
		}, false},
		{"the binding forbidden (RBAC not active yet)", func(verb, namespace string, obj runtime.Object) error {
			if b, ok := obj.(*rbacv1.ClusterRoleBinding); ok && b.Name == "kube-state-metrics-"+name && verb == "get" {
				return apierrors.NewForbidden(gr("clusterrolebindings"), b.Name, errors.New("injected"))
			}
			return nil
		}, true},
	} {
		t.Run(tc.name+" keeps the previous observation", func(t *testing.T) {
			var hits atomic.Int32
			faults.set(t, func(verb, namespace string, obj runtime.Object) error {
				err := tc.inject(verb, namespace, obj)
				if err != nil {
					hits.Add(1)
				}
				return err
			})
			touch()
			eventually(t, 60*time.Second, "the fault hit twice", func() error {
				if hits.Load() < 2 {
					return fmt.Errorf("%d hits", hits.Load())
				}
				return nil
			})
			k := waitStatus(t, name, 30*time.Second, func(k *v1alpha1.KSMScale) error {
				if tc.stop {
					if err := wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionTrue, controller.ReasonReconcileError); err != nil {
						return err
					}
				}
				return keepsObservation(t, name)(k)
			})
			if !tc.stop {
				if err := wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionFalse, controller.ReasonAsExpected); err != nil {
					t.Errorf("a transient error set Degraded: %v", err)
				}
			}
			faults.clear()
			// Nothing the operator watches changes now: for a stopError only
			// the backoff brings the next attempt.
			waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
				if err := wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionFalse, controller.ReasonAsExpected); err != nil {
					return err
				}
				return keepsObservation(t, name)(k)
			})
		})
	}
}
