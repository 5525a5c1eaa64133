package controller

import (
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// Changing spec.namespace is a change like any other: the new namespace's
// complete workload comes up beside the old one, and the old namespace's
// pods, Deployment, Service, PodDisruptionBudget and ServiceAccount go only
// once the new workload has settled. Until then the binding names both
// namespaces' ServiceAccounts, so the old pods keep their permissions and
// keep exporting.

// previousNamespaces returns the namespaces other than spec.namespace that
// still hold a ServiceAccount, shard pods or a Deployment of this KSMScale,
// sorted.
func (r *KSMScaleReconciler) previousNamespaces(ctx context.Context, s *scope) ([]string, error) {
	seen := map[string]bool{}
	sas := &corev1.ServiceAccountList{}
	if err := r.List(ctx, sas, client.MatchingLabels{ksm.LabelKSMScale: s.cfg.Name}); err != nil {
		return nil, fmt.Errorf("list ServiceAccounts: %w", err)
	}
	for i := range sas.Items {
		if metav1.IsControlledBy(&sas.Items[i], s.ksm) {
			seen[sas.Items[i].Namespace] = true
		}
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.MatchingFields{ownerIndex: string(s.ksm.UID)}); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		seen[pods.Items[i].Namespace] = true
	}
	deps := &appsv1.DeploymentList{}
	if err := r.List(ctx, deps, client.MatchingLabels{ksm.LabelKSMScale: s.cfg.Name}); err != nil {
		return nil, fmt.Errorf("list Deployments: %w", err)
	}
	for i := range deps.Items {
		if metav1.IsControlledBy(&deps.Items[i], s.ksm) {
			seen[deps.Items[i].Namespace] = true
		}
	}
	delete(seen, s.cfg.Namespace)
	out := make([]string, 0, len(seen))
	for ns := range seen {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out, nil
}

// retirePreviousNamespaces deletes what this KSMScale left in its previous
// namespaces, once the workload in spec.namespace has settled.
func (r *KSMScaleReconciler) retirePreviousNamespaces(ctx context.Context, s *scope) error {
	if len(s.obs.previousNamespaces) == 0 || !s.obs.workloadSettled {
		return nil
	}
	for _, ns := range s.obs.previousNamespaces {
		pods := &corev1.PodList{}
		if err := r.List(ctx, pods, client.InNamespace(ns), client.MatchingFields{ownerIndex: string(s.ksm.UID)}); err != nil {
			return fmt.Errorf("list pods in %s: %w", ns, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if !p.DeletionTimestamp.IsZero() {
				continue
			}
			uid := p.UID
			if err := r.Delete(ctx, p, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
				return classify(err, "delete pod "+ns+"/"+p.Name)
			}
		}
		for _, o := range []client.Object{
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ksm.DeploymentName(s.cfg.Name)}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ksm.ServiceName(s.cfg.Name)}},
			&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ksm.PDBName(s.cfg.Name)}},
		} {
			if err := r.deleteIfControlled(ctx, s, o); err != nil {
				return err
			}
		}
		// The ServiceAccount goes last: it is what marks the namespace as
		// still to be retired.
		if len(pods.Items) == 0 {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ksm.ServiceAccountName(s.cfg.Name)}}
			if err := r.deleteIfControlled(ctx, s, sa); err != nil {
				return err
			}
		}
		log.FromContext(ctx).Info("retiring the previous namespace", "namespace", ns, "pods", len(pods.Items))
	}
	r.event(s, corev1.EventTypeNormal, EventNamespaceMoved, "MoveNamespace",
		"the workload in %s has settled; removing the one in %v", s.cfg.Namespace, s.obs.previousNamespaces)
	return nil
}

// deleteIfControlled deletes obj (namespace and name set) if this KSMScale
// controls it.
func (r *KSMScaleReconciler) deleteIfControlled(ctx context.Context, s *scope, obj client.Object) error {
	key := client.ObjectKeyFromObject(obj)
	if err := r.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return classify(err, fmt.Sprintf("get %T %s", obj, key))
	}
	if !metav1.IsControlledBy(obj, s.ksm) || !obj.GetDeletionTimestamp().IsZero() {
		return nil
	}
	uid := obj.GetUID()
	if err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return classify(err, fmt.Sprintf("delete %T %s", obj, key))
	}
	log.FromContext(ctx).Info("deleted", "kind", fmt.Sprintf("%T", obj), "name", key)
	return nil
}

// allowed keeps the namespaces of the allow-list.
func (r *KSMScaleReconciler) allowed(namespaces []string) []string {
	if r.AllowedNamespaces == nil {
		return namespaces
	}
	var out []string
	for _, ns := range namespaces {
		if r.AllowedNamespaces[ns] {
			out = append(out, ns)
		}
	}
	return out
}
