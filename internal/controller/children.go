package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

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

// apply creates `want`, or brings the existing object of that name in line
// with it: inSync reports whether `have` already matches, update copies
// `want` into `have`. Every child carries its KSMScale's controller
// reference. An object the operator did not create (no managed-by label, or
// another controller) is never adopted: it is a name conflict. Nothing is
// written when the object is in sync.
func apply[T client.Object](ctx context.Context, r *KSMScaleReconciler, s *scope, want, have T,
	inSync func(have T) bool, update func(have T)) (T, error) {
	key := client.ObjectKeyFromObject(want)
	kind := fmt.Sprintf("%T", want)
	err := r.Get(ctx, key, have)
	if apierrors.IsNotFound(err) {
		if err := controllerutil.SetControllerReference(s.ksm, want, r.Scheme()); err != nil {
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
		return have, classify(err, "get "+key.String())
	}

	managed := have.GetLabels()[ksm.LabelManagedBy] == ksm.ManagedBy || metav1.IsControlledBy(have, s.ksm)
	if !managed || (metav1.GetControllerOf(have) != nil && !metav1.IsControlledBy(have, s.ksm)) {
		return have, &stopError{reason: ReasonNameConflict,
			err: fmt.Errorf("%s %s exists and is not managed by KSMScale %s; delete or rename it", kind, key, s.ksm.Name)}
	}
	if inSync(have) && labelsInclude(have.GetLabels(), want.GetLabels()) && metav1.IsControlledBy(have, s.ksm) {
		return have, nil
	}
	update(have)
	labels := have.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, want.GetLabels())
	have.SetLabels(labels)
	if err := controllerutil.SetControllerReference(s.ksm, have, r.Scheme()); err != nil {
		return have, err
	}
	if err := r.Update(ctx, have); err != nil {
		return have, classify(err, "update "+key.String())
	}
	log.FromContext(ctx).Info("updated", "kind", kind, "name", key)
	return have, nil
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
	want := ksm.BuildServiceAccount(s.cfg)
	_, err := apply(ctx, r, s, want, &corev1.ServiceAccount{},
		func(*corev1.ServiceAccount) bool { return true }, func(*corev1.ServiceAccount) {})
	var stop *stopError
	if errors.As(err, &stop) && stop.reason == ReasonNameConflict {
		// Someone else's account holds the name: it must never be bound.
		return ctrl.Result{}, errors.Join(err, r.deleteBinding(ctx, s))
	}
	s.serviceAccountOwned = err == nil
	return ctrl.Result{}, err
}

func (r *KSMScaleReconciler) reconcileRoleBinding(ctx context.Context, s *scope) (ctrl.Result, error) {
	if !s.serviceAccountOwned {
		// Not known to be ours this pass (its phase failed): leave the
		// binding as it is, neither granting nor taking away.
		return ctrl.Result{}, nil
	}
	want := ksm.BuildClusterRoleBinding(s.cfg, r.KSMClusterRole, r.allowed(s.obs.previousNamespaces)...)
	have := &rbacv1.ClusterRoleBinding{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(want), have); err == nil &&
		metav1.IsControlledBy(have, s.ksm) && have.RoleRef != want.RoleRef {
		// roleRef is immutable: replace the binding.
		if err := r.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, classify(err, "delete ClusterRoleBinding "+have.Name)
		}
		return ctrl.Result{RequeueAfter: time.Second}, nil // recreate once the old one is gone
	}
	_, err := apply(ctx, r, s, want, &rbacv1.ClusterRoleBinding{},
		func(have *rbacv1.ClusterRoleBinding) bool {
			return equality.Semantic.DeepEqual(have.Subjects, want.Subjects)
		},
		func(have *rbacv1.ClusterRoleBinding) { have.Subjects = want.Subjects })
	return ctrl.Result{}, err
}

// deleteBinding removes the KSMScale's ClusterRoleBinding, when its
// namespace is gone or not allowed.
func (r *KSMScaleReconciler) deleteBinding(ctx context.Context, s *scope) error {
	return r.deleteIfControlled(ctx, s, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ksm.ClusterRoleBindingName(s.cfg.Name)}})
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
		return ctrl.Result{RequeueAfter: time.Second}, nil // recreate once the old one is gone
	}
	_, err := apply(ctx, r, s, want, &corev1.Service{},
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

// ensureDeployment keeps the unsharded Deployment as built, by the hash of
// the wanted spec and the generation of the operator's last write (see
// writtenGenerations), never by comparing specs.
func (r *KSMScaleReconciler) ensureDeployment(ctx context.Context, s *scope, want *appsv1.Deployment) (*appsv1.Deployment, error) {
	d, err := apply(ctx, r, s, want, &appsv1.Deployment{},
		func(have *appsv1.Deployment) bool {
			return have.Annotations[ksm.AnnotationSpecHash] == want.Annotations[ksm.AnnotationSpecHash] && r.written.unchanged(have)
		},
		func(have *appsv1.Deployment) {
			have.Spec = want.Spec
			if have.Annotations == nil {
				have.Annotations = map[string]string{}
			}
			have.Annotations[ksm.AnnotationSpecHash] = want.Annotations[ksm.AnnotationSpecHash]
		})
	if err == nil {
		r.written.record(d)
	}
	return d, err
}

func (r *KSMScaleReconciler) ensurePDB(ctx context.Context, s *scope, minAvailable int32) error {
	want := ksm.BuildPDB(s.cfg, minAvailable)
	_, err := apply(ctx, r, s, want, &policyv1.PodDisruptionBudget{},
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
	obj.SetNamespace(s.cfg.Namespace)
	obj.SetName(name)
	return r.deleteIfControlled(ctx, s, obj)
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
				if w.Reason == "CrashLoopBackOff" {
					// Its message carries the growing back-off ("back-off
					// 40s restarting failed container"): copied, it would
					// rewrite status on every restart.
					return fmt.Sprintf("pod %s: container %s is in CrashLoopBackOff", p.Name, cs.Name)
				}
				return fmt.Sprintf("pod %s: %s: %s", p.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}
