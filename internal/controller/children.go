package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// ReasonNameConflict: an object the operator needs to create already exists
// and belongs to someone else; the operator never takes it over.
const ReasonNameConflict = "NameConflict"

// ownership is how a child relates to its KSMScale.
type ownership int

const (
	// exclusive children carry the KSMScale's controller reference.
	exclusive ownership = iota
	// shared children (the namespace's ServiceAccount) carry a plain owner
	// reference of every KSMScale that uses them, so garbage collection
	// removes them only with the last one.
	shared
)

// apply creates `want`, or brings the existing object of that name in line
// with it: inSync reports whether `have` already matches, update copies
// `want` into `have`. An object the operator did not create (no managed-by
// label) is never adopted: a shared one is used as it is, an exclusive one is
// a name conflict. Nothing is written when the object is in sync.
func apply[T client.Object](ctx context.Context, r *KSMScaleReconciler, s *scope, want, have T, own ownership,
	inSync func(have T) bool, update func(have T)) (T, error) {
	key := client.ObjectKeyFromObject(want)
	kind := fmt.Sprintf("%T", want)
	err := r.Get(ctx, key, have)
	if apierrors.IsNotFound(err) {
		if err := r.setOwner(s, want, own); err != nil {
			return have, err
		}
		err = r.Create(ctx, want)
		if err == nil {
			log.FromContext(ctx).Info("created", "kind", kind, "name", key)
			return want, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return have, classify(err, "create "+key.String())
		}
		// The label-scoped cache cannot see an object without our label.
		err = r.APIReader.Get(ctx, key, have)
	}
	if err != nil {
		return have, fmt.Errorf("get %s: %w", key, err)
	}

	managed := have.GetLabels()[ksm.LabelManagedBy] == ksm.ManagedBy || metav1.IsControlledBy(have, s.ksm)
	switch {
	case own == shared && !managed:
		return have, nil
	case own == exclusive && !managed,
		own == exclusive && metav1.GetControllerOf(have) != nil && !metav1.IsControlledBy(have, s.ksm):
		return have, &stopError{reason: ReasonNameConflict,
			err: fmt.Errorf("%s %s exists and is not managed by KSMScale %s; delete or rename it", kind, key, s.ksm.Name)}
	}
	if inSync(have) && labelsInclude(have.GetLabels(), want.GetLabels()) && hasOwner(have, s, own) {
		return have, nil
	}
	update(have)
	labels := have.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, want.GetLabels())
	have.SetLabels(labels)
	if err := r.setOwner(s, have, own); err != nil {
		return have, err
	}
	if err := r.Update(ctx, have); err != nil {
		return have, classify(err, "update "+key.String())
	}
	log.FromContext(ctx).Info("updated", "kind", kind, "name", key)
	return have, nil
}

func (r *KSMScaleReconciler) setOwner(s *scope, obj client.Object, own ownership) error {
	if own == exclusive {
		return controllerutil.SetControllerReference(s.ksm, obj, r.Scheme())
	}
	return controllerutil.SetOwnerReference(s.ksm, obj, r.Scheme())
}

func hasOwner(obj client.Object, s *scope, own ownership) bool {
	if own == exclusive {
		return metav1.IsControlledBy(obj, s.ksm)
	}
	return slices.ContainsFunc(obj.GetOwnerReferences(), func(ref metav1.OwnerReference) bool { return ref.UID == s.ksm.UID })
}

func labelsInclude(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (r *KSMScaleReconciler) reconcileServiceAccount(ctx context.Context, s *scope) (ctrl.Result, error) {
	want := ksm.BuildServiceAccount(s.cfg.Namespace)
	_, err := apply(ctx, r, s, want, &corev1.ServiceAccount{}, shared,
		func(*corev1.ServiceAccount) bool { return true }, func(*corev1.ServiceAccount) {})
	return ctrl.Result{}, err
}

func (r *KSMScaleReconciler) reconcileRoleBinding(ctx context.Context, s *scope) (ctrl.Result, error) {
	want := ksm.BuildClusterRoleBinding(s.cfg, r.KSMClusterRole)
	have := &rbacv1.ClusterRoleBinding{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(want), have); err == nil &&
		metav1.IsControlledBy(have, s.ksm) && have.RoleRef != want.RoleRef {
		// roleRef is immutable: replace the binding.
		if err := r.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, classify(err, "delete ClusterRoleBinding "+have.Name)
		}
		return ctrl.Result{Requeue: true}, nil //nolint:staticcheck // recreate once the old one is gone
	}
	_, err := apply(ctx, r, s, want, &rbacv1.ClusterRoleBinding{}, exclusive,
		func(have *rbacv1.ClusterRoleBinding) bool {
			return equality.Semantic.DeepEqual(have.Subjects, want.Subjects)
		},
		func(have *rbacv1.ClusterRoleBinding) { have.Subjects = want.Subjects })
	return ctrl.Result{}, err
}

func (r *KSMScaleReconciler) reconcileService(ctx context.Context, s *scope) (ctrl.Result, error) {
	want := ksm.BuildService(s.cfg)
	have := &corev1.Service{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(want), have); err == nil &&
		metav1.IsControlledBy(have, s.ksm) && have.Spec.ClusterIP != corev1.ClusterIPNone {
		// clusterIP is immutable: a Service that lost its headlessness is replaced.
		if err := r.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, classify(err, "delete Service "+have.Name)
		}
		return ctrl.Result{Requeue: true}, nil //nolint:staticcheck // recreate once the old one is gone
	}
	_, err := apply(ctx, r, s, want, &corev1.Service{}, exclusive,
		func(have *corev1.Service) bool {
			return maps.Equal(have.Spec.Selector, want.Spec.Selector) &&
				len(have.Spec.Ports) == len(want.Spec.Ports) &&
				equality.Semantic.DeepDerivative(want.Spec, have.Spec)
		},
		func(have *corev1.Service) {
			have.Spec.Selector = want.Spec.Selector
			have.Spec.Ports = want.Spec.Ports
		})
	return ctrl.Result{}, err
}

// ensureDeployment keeps the unsharded Deployment as built. Besides the
// generic comparison, the container's image and arguments are compared
// exactly, since a derivative comparison would accept extra arguments.
func (r *KSMScaleReconciler) ensureDeployment(ctx context.Context, s *scope, want *appsv1.Deployment) (*appsv1.Deployment, error) {
	return apply(ctx, r, s, want, &appsv1.Deployment{}, exclusive,
		func(have *appsv1.Deployment) bool {
			return equality.Semantic.DeepDerivative(want.Spec, have.Spec) &&
				sameContainers(want.Spec.Template.Spec.Containers, have.Spec.Template.Spec.Containers)
		},
		func(have *appsv1.Deployment) { have.Spec = want.Spec })
}

func sameContainers(want, have []corev1.Container) bool {
	if len(want) != len(have) {
		return false
	}
	for i := range want {
		if want[i].Name != have[i].Name || want[i].Image != have[i].Image || !slices.Equal(want[i].Args, have[i].Args) {
			return false
		}
	}
	return true
}

func (r *KSMScaleReconciler) ensurePDB(ctx context.Context, s *scope, minAvailable int32) error {
	want := ksm.BuildPDB(s.cfg, minAvailable)
	_, err := apply(ctx, r, s, want, &policyv1.PodDisruptionBudget{}, exclusive,
		func(have *policyv1.PodDisruptionBudget) bool {
			return have.Spec.Selector != nil && maps.Equal(have.Spec.Selector.MatchLabels, want.Spec.Selector.MatchLabels) &&
				len(have.Spec.Selector.MatchExpressions) == 0 &&
				equality.Semantic.DeepDerivative(want.Spec, have.Spec)
		},
		func(have *policyv1.PodDisruptionBudget) { have.Spec = want.Spec })
	return err
}

// deletePDB removes the instance's PodDisruptionBudget when it should not exist.
func (r *KSMScaleReconciler) deletePDB(ctx context.Context, s *scope) error {
	return r.deleteOwned(ctx, s, &policyv1.PodDisruptionBudget{}, ksm.PDBName(s.cfg.Name))
}

// deleteOwned deletes the named object in the target namespace if this
// KSMScale controls it.
func (r *KSMScaleReconciler) deleteOwned(ctx context.Context, s *scope, obj client.Object, name string) error {
	err := r.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(obj, s.ksm) || !obj.GetDeletionTimestamp().IsZero() {
		return nil
	}
	uid := obj.GetUID()
	if err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return classify(err, fmt.Sprintf("delete %T %s", obj, name))
	}
	log.FromContext(ctx).Info("deleted", "kind", fmt.Sprintf("%T", obj), "name", name)
	return nil
}

// troubleReasons are container waiting reasons that do not heal by waiting.
var troubleReasons = map[string]bool{
	"CrashLoopBackOff": true, "ImagePullBackOff": true, "ErrImagePull": true,
	"InvalidImageName": true, "CreateContainerConfigError": true, "CreateContainerError": true,
}

// podTrouble describes the first pod of the desired mode that needs a person,
// or returns "".
func (r *KSMScaleReconciler) podTrouble(ctx context.Context, s *scope, sharded bool) string {
	sel := ksm.UnshardedSelector(s.cfg.Name)
	if sharded {
		sel = ksm.ShardSelector(s.cfg.Name)
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(s.cfg.Namespace), client.MatchingLabels(sel)); err != nil {
		return ""
	}
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range pods.Items {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return fmt.Sprintf("pod %s is unschedulable: %s", p.Name, c.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && troubleReasons[w.Reason] {
				return fmt.Sprintf("pod %s: %s: %s", p.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}
