package integration

import (
	"fmt"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
)

const (
	mirrorImage  = "mirror.local/kube-state-metrics@sha256:0123456789abcdef"
	sidecarImage = "mesh.local/proxy:1"
)

// installMeshPolicies serves what a service mesh and a registry policy do
// to every kube-state-metrics pod in ns, as real MutatingAdmissionPolicies:
// a sidecar container is injected and the KSM image is rewritten to a mirror
// digest, in pods and in Deployments' pod templates. It returns once the API
// server applies them.
func installMeshPolicies(t *testing.T, ns string) {
	t.Helper()
	containers := func(prefix string) string {
		return fmt.Sprintf(`[%[1]s{name: "kube-state-metrics", image: %[2]q}, %[1]s{name: "mesh-proxy", image: %[3]q}]`,
			prefix, mirrorImage, sidecarImage)
	}
	policies := map[string]struct {
		resource, expression string
	}{
		"pods": {"pods", `Object{spec: Object.spec{containers: ` + containers("Object.spec.containers") + `}}`},
		"deployments": {"deployments", `Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{containers: ` +
			containers("Object.spec.template.spec.containers") + `}}}}`},
	}
	for kind, p := range policies {
		group := ""
		if kind == "deployments" {
			group = "apps"
		}
		name := "mesh-" + ns + "-" + kind
		policy := &admissionv1.MutatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.MutatingAdmissionPolicySpec{
				MatchConstraints: &admissionv1.MatchResources{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
					ResourceRules: []admissionv1.NamedRuleWithOperations{{RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
						Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: []string{p.resource}},
					}}},
				},
				MatchConditions: []admissionv1.MatchCondition{{Name: "kube-state-metrics",
					Expression: `object.metadata.?labels["app.kubernetes.io/name"].orValue("") == "kube-state-metrics"`}},
				FailurePolicy:      ptr.To(admissionv1.Fail),
				ReinvocationPolicy: admissionv1.NeverReinvocationPolicy,
				Mutations: []admissionv1.Mutation{{
					PatchType:          admissionv1.PatchTypeApplyConfiguration,
					ApplyConfiguration: &admissionv1.ApplyConfiguration{Expression: p.expression},
				}},
			},
		}
		binding := &admissionv1.MutatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       admissionv1.MutatingAdmissionPolicyBindingSpec{PolicyName: name},
		}
		for _, o := range []client.Object{policy, binding} {
			if err := k8s.Create(testCtx, o); err != nil {
				t.Fatalf("create %T %s: %v", o, name, err)
			}
			t.Cleanup(func() { _ = k8s.Delete(testCtx, o) })
		}
	}
	// Policies take effect when the API server's informers see them: probe
	// with a dry-run pod until it comes back mutated.
	eventually(t, 60*time.Second, "mutating admission policies active", func() error {
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-", Labels: map[string]string{"app.kubernetes.io/name": "kube-state-metrics"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "kube-state-metrics", Image: "x:1"}}},
		}
		if err := k8s.Create(testCtx, probe, client.DryRunAll); err != nil {
			return err
		}
		if len(probe.Spec.Containers) != 2 || probe.Spec.Containers[0].Image != mirrorImage {
			return fmt.Errorf("probe pod not mutated: %+v", probe.Spec.Containers)
		}
		return nil
	})
}

// mutated checks that a pod went through the mesh policies.
func mutated(p corev1.Pod) error {
	if len(p.Spec.Containers) != 2 || p.Spec.Containers[0].Image != mirrorImage || p.Spec.Containers[1].Image != sidecarImage {
		return fmt.Errorf("not mutated at admission: %+v", p.Spec.Containers)
	}
	return nil
}

// TestAdmissionMutationsAreNotFought: sidecar injection and image rewriting
// at admission change every pod and Deployment the operator creates; the
// operator must identify them by what it stamped and converge to exactly one
// pod per shard, stay quiet, and roll out, reshard and switch modes as usual.
func TestAdmissionMutationsAreNotFought(t *testing.T) {
	const ns, name = "mesh", "mesh"
	createNamespace(t, ns)
	startKubelet(t, ns)
	startDeploymentController(t, ns)
	installMeshPolicies(t, ns)

	createKSMScale(t, shardedKSMScale(name, ns, 3, 1))
	pods := waitConverged(t, ns, name, 3, mutated)
	quiet := func(t *testing.T, objs ...client.Object) {
		t.Helper()
		objs = append(objs, &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}})
		assertQuiet(t, 15*time.Second, objs...)
	}

	t.Run("one pod per shard, and quiet", func(t *testing.T) {
		var objs []client.Object
		for i := range pods {
			objs = append(objs, &pods[i])
		}
		quiet(t, objs...)
		if got := shardPods(t, ns, name); len(got) != 3 {
			t.Errorf("%d shard pods after the quiet window, want 3", len(got))
		}
	})

	t.Run("image rollout and reshard proceed", func(t *testing.T) {
		w := watchCoverage(t, ns, name)
		old := pods[0].Labels["ksmscale.example.com/revision"]
		patchSpec(t, name, `{"spec":{"monitorImage":"registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.19.0"}}`)
		waitConverged(t, ns, name, 3, func(p corev1.Pod) error {
			if p.Labels["ksmscale.example.com/revision"] == old {
				return fmt.Errorf("still of the old revision")
			}
			return mutated(p)
		})
		assertCoverage(t, w, "image rollout under admission mutations", time.Second)
		w = watchCoverage(t, ns, name)
		patchSpec(t, name, `{"spec":{"sharding":{"shardCount":4}}}`)
		waitConverged(t, ns, name, 4, mutated)
		assertCoverage(t, w, "reshard 3 to 4 under admission mutations", time.Second)
	})

	t.Run("the unsharded Deployment is not fought either", func(t *testing.T) {
		patchSpec(t, name, `{"spec":{"sharding":{"enabled":false}}}`)
		var d *appsv1.Deployment
		waitStatus(t, name, 120*time.Second, func(k *v1alpha1.KSMScale) error {
			if k.Status.Mode != v1alpha1.ModeUnsharded || k.Status.Phase != v1alpha1.PhaseReady || k.Status.ObservedGeneration != k.Generation {
				return fmt.Errorf("mode %s phase %s", k.Status.Mode, k.Status.Phase)
			}
			if n := len(shardPods(t, ns, name)); n != 0 {
				return fmt.Errorf("%d shard pods left", n)
			}
			var err error
			d, err = getDeployment(ns, "kube-state-metrics-"+name)
			return err
		})
		c := d.Spec.Template.Spec.Containers
		if len(c) != 2 || c[0].Image != mirrorImage {
			t.Fatalf("the Deployment's template was not mutated at admission: %+v", c)
		}
		quiet(t, d)

		// A spec change updates the mutated Deployment once, and then the
		// operator is quiet again.
		hash := d.Annotations["ksmscale.example.com/spec-hash"]
		patchSpec(t, name, `{"spec":{"extraArgs":["--resources=pods,nodes"]}}`)
		eventually(t, 60*time.Second, "Deployment updated for the new spec", func() error {
			var err error
			if d, err = getDeployment(ns, "kube-state-metrics-"+name); err != nil {
				return err
			}
			if d.Annotations["ksmscale.example.com/spec-hash"] == hash {
				return fmt.Errorf("spec hash unchanged")
			}
			return nil
		})
		if c := d.Spec.Template.Spec.Containers; len(c) != 2 || c[0].Image != mirrorImage {
			t.Errorf("the updated template was not mutated at admission: %+v", c)
		}
		waitStatus(t, name, 60*time.Second, func(k *v1alpha1.KSMScale) error {
			if k.Status.Phase != v1alpha1.PhaseReady || k.Status.ObservedGeneration != k.Generation {
				return fmt.Errorf("phase %s", k.Status.Phase)
			}
			return nil
		})
		quiet(t, d)
	})
}
