package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
)

func getDeployment(ns, name string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	return d, k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: name}, d)
}

func condition(k *v1alpha1.KSMScale, typ string) *metav1.Condition {
	return meta.FindStatusCondition(k.Status.Conditions, typ)
}

// waitStatus waits until the KSMScale's status satisfies check.
func waitStatus(t *testing.T, name string, timeout time.Duration, check func(*v1alpha1.KSMScale) error) *v1alpha1.KSMScale {
	t.Helper()
	var k *v1alpha1.KSMScale
	eventually(t, timeout, "status of "+name, func() error {
		k = &v1alpha1.KSMScale{}
		if err := k8s.Get(testCtx, client.ObjectKey{Name: name}, k); err != nil {
			return err
		}
		return check(k)
	})
	return k
}

func wantCondition(k *v1alpha1.KSMScale, typ string, status metav1.ConditionStatus, reason string) error {
	c := condition(k, typ)
	if c == nil {
		return fmt.Errorf("no %s condition", typ)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Errorf("%s=%s (%s: %s), want %s (%s)", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	if c.ObservedGeneration != k.Generation {
		return fmt.Errorf("%s observedGeneration %d, generation %d", typ, c.ObservedGeneration, k.Generation)
	}
	return nil
}

func TestUnshardedFollowsNodeCount(t *testing.T) {
	const ns, name = "unsharded", "unsharded"
	createNamespace(t, ns)
	startKubelet(t, ns)
	startDeploymentController(t, ns)
	createNodes(t, "unsharded-node", 0, 5)

	k := &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		NodesPerMonitor: 2,
		Namespace:       ns,
		ExtraArgs:       []string{"--resources=pods,nodes"},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: mustQuantity("100m"), corev1.ResourceMemory: mustQuantity("150Mi"),
		}},
	}}
	createKSMScale(t, k)

	// ceil(5 / 2) = 3 replicas.
	var d *appsv1.Deployment
	eventually(t, 60*time.Second, "Deployment with 3 replicas", func() error {
		var err error
		if d, err = getDeployment(ns, "kube-state-metrics-"+name); err != nil {
			return err
		}
		if *d.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		}
		return nil
	})
	k = getKSMScale(t, name)
	if !metav1.IsControlledBy(d, k) {
		t.Errorf("Deployment is not controlled by the KSMScale: %v", d.OwnerReferences)
	}
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081", "--resources=pods,nodes"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %v, want %v", c.Args, wantArgs)
	}
	if c.Image != v1alpha1.DefaultMonitorImage {
		t.Errorf("image %q, want the default", c.Image)
	}
	if c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe.HTTPGet.Port.StrVal != "http-metrics" || c.ReadinessProbe.HTTPGet.Port.StrVal != "telemetry" {
		t.Errorf("probes: liveness %+v readiness %+v", c.LivenessProbe.HTTPGet, c.ReadinessProbe.HTTPGet)
	}
	if got := c.Resources.Requests.Memory().String(); got != "150Mi" {
		t.Errorf("memory request %s", got)
	}
	if sc := c.SecurityContext; sc == nil || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container securityContext not restricted: %+v", sc)
	}
	if ps := d.Spec.Template.Spec.SecurityContext; ps == nil || !*ps.RunAsNonRoot || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext not restricted: %+v", ps)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "kube-state-metrics-"+name {
		t.Errorf("service account %q", d.Spec.Template.Spec.ServiceAccountName)
	}

	sa := &corev1.ServiceAccount{}
	eventually(t, 30*time.Second, "ServiceAccount", func() error {
		return k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name}, sa)
	})
	crb := &rbacv1.ClusterRoleBinding{}
	eventually(t, 30*time.Second, "ClusterRoleBinding", func() error {
		return k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-" + name}, crb)
	})
	if crb.RoleRef.Name != controller.DefaultKSMClusterRole || len(crb.Subjects) != 1 ||
		crb.Subjects[0].Name != "kube-state-metrics-"+name || crb.Subjects[0].Namespace != ns {
		t.Errorf("binding %+v", crb)
	}
	if !metav1.IsControlledBy(crb, k) {
		t.Errorf("binding not owned by the KSMScale")
	}

	k = waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
		s := k.Status
		if s.NodeCount != 5 || s.DesiredReplicas != 3 || s.CurrentReplicas != 3 || s.Phase != v1alpha1.PhaseReady ||
			s.Mode != v1alpha1.ModeUnsharded || s.ObservedGeneration != k.Generation || s.LastUpdated == nil {
			return fmt.Errorf("status %+v", s)
		}
		if err := wantCondition(k, v1alpha1.ConditionAvailable, metav1.ConditionTrue, controller.ReasonReplicasReady); err != nil {
			return err
		}
		if err := wantCondition(k, v1alpha1.ConditionProgressing, metav1.ConditionFalse, controller.ReasonConverged); err != nil {
			return err
		}
		return wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionFalse, controller.ReasonAsExpected)
	})

	t.Run("adding nodes scales up", func(t *testing.T) {
		createNodes(t, "unsharded-node", 5, 3) // 8 nodes: 4 replicas
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			if k.Status.NodeCount != 8 || k.Status.CurrentReplicas != 4 || k.Status.Phase != v1alpha1.PhaseReady {
				return fmt.Errorf("status %+v", k.Status)
			}
			return nil
		})
		d, _ = getDeployment(ns, "kube-state-metrics-"+name)
		if *d.Spec.Replicas != 4 {
			t.Errorf("replicas %d, want 4", *d.Spec.Replicas)
		}
		deleteNodes(t, "unsharded-node", 3, 5) // 3 nodes: 2 replicas
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			if k.Status.NodeCount != 3 || k.Status.DesiredReplicas != 2 || k.Status.CurrentReplicas != 2 {
				return fmt.Errorf("status %+v", k.Status)
			}
			return nil
		})
	})

	t.Run("node heartbeats do not reconcile", func(t *testing.T) {
		// Wait for the reconciles of the scale-down to drain, and for the
		// new replicas' hand-over: the fake kubelet gives pods no IP, so
		// they take over after the settle time (30 s by default).
		waitStatus(t, name, 90*time.Second, func(k *v1alpha1.KSMScale) error {
			return wantCondition(k, v1alpha1.ConditionProgressing, metav1.ConditionFalse, controller.ReasonConverged)
		})
		time.Sleep(2 * time.Second)
		before := reconcileCount(t)
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				n := &corev1.Node{}
				if err := k8s.Get(testCtx, client.ObjectKey{Name: fmt.Sprintf("unsharded-node-%d", i)}, n); err != nil {
					t.Fatal(err)
				}
				n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
					LastHeartbeatTime: metav1.Now(), Reason: "KubeletReady", Message: fmt.Sprintf("beat %d", j)}}
				if err := k8s.Status().Update(testCtx, n); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(3 * time.Second)
		if after := reconcileCount(t); after != before {
			t.Errorf("node heartbeats caused %v reconciles", after-before)
		}
	})

	t.Run("a converged instance writes nothing", func(t *testing.T) {
		assertQuiet(t, 20*time.Second, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}})
	})

	t.Run("a foreign edit of the Deployment is undone", func(t *testing.T) {
		d, _ := getDeployment(ns, "kube-state-metrics-"+name)
		d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--foo=bar")
		d.Spec.Template.Spec.Containers[0].Image = "example.com/other:1"
		if err := k8s.Update(testCtx, d); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "Deployment restored", func() error {
			d, err := getDeployment(ns, "kube-state-metrics-"+name)
			if err != nil {
				return err
			}
			c := d.Spec.Template.Spec.Containers[0]
			if !slices.Equal(c.Args, wantArgs) || c.Image != v1alpha1.DefaultMonitorImage {
				return fmt.Errorf("args %v image %s", c.Args, c.Image)
			}
			return nil
		})
	})

	t.Run("a deleted ServiceAccount and binding are restored", func(t *testing.T) {
		if err := k8s.Delete(testCtx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-state-metrics-" + name}}); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Delete(testCtx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kube-state-metrics-" + name}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "restored", func() error {
			if err := k8s.Get(testCtx, client.ObjectKey{Namespace: ns, Name: "kube-state-metrics-" + name}, &corev1.ServiceAccount{}); err != nil {
				return err
			}
			return k8s.Get(testCtx, client.ObjectKey{Name: "kube-state-metrics-" + name}, &rbacv1.ClusterRoleBinding{})
		})
	})
}

func TestEmptySpecRunsOneReplicaInMonitoring(t *testing.T) {
	createNamespace(t, "monitoring")
	startKubelet(t, "monitoring")
	startDeploymentController(t, "monitoring")
	createKSMScale(t, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: "empty"}})
	waitStatus(t, "empty", 60*time.Second, func(k *v1alpha1.KSMScale) error {
		if k.Status.DesiredReplicas != 1 || k.Status.CurrentReplicas != 1 || k.Status.Phase != v1alpha1.PhaseReady {
			return fmt.Errorf("status %+v", k.Status)
		}
		return nil
	})
	d, err := getDeployment("monitoring", "kube-state-metrics-empty")
	if err != nil || *d.Spec.Replicas != 1 {
		t.Fatalf("deployment %v %v", d, err)
	}
}

func TestMissingNamespaceIsReported(t *testing.T) {
	const name, ns = "no-namespace", "created-later"
	createKSMScale(t, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{Namespace: ns}})
	waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
		if k.Status.Phase != v1alpha1.PhaseDegraded {
			return fmt.Errorf("phase %q", k.Status.Phase)
		}
		if err := wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionTrue, controller.ReasonNamespaceNotFound); err != nil {
			return err
		}
		return wantCondition(k, v1alpha1.ConditionAvailable, metav1.ConditionFalse, controller.ReasonNamespaceNotFound)
	})
	eventually(t, 30*time.Second, "Degraded exported as a metric", func() error {
		// The metric is recorded just after the status write the wait above
		// saw: poll for the sample rather than fail on its first absence.
		if v, ok := gaugeSample(t, "ksmscale_status_condition", map[string]string{"ksmscale": name, "type": "Degraded", "status": "True"}); !ok || v != 1 {
			return fmt.Errorf("ksmscale_status_condition{type=Degraded,status=True} = %v (present %v)", v, ok)
		}
		return nil
	})
	// The namespace appearing is enough to recover: no requeue loop, a watch.
	createNamespace(t, ns)
	startKubelet(t, ns)
	startDeploymentController(t, ns)
	waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
		if k.Status.Phase != v1alpha1.PhaseReady {
			return fmt.Errorf("phase %q", k.Status.Phase)
		}
		return wantCondition(k, v1alpha1.ConditionDegraded, metav1.ConditionFalse, controller.ReasonAsExpected)
	})
	if v := gauge(t, "ksmscale_status_condition", map[string]string{"ksmscale": name, "type": "Degraded", "status": "True"}); v != 0 {
		t.Errorf("Degraded still exported as True: %v", v)
	}
}
