// Package controller reconciles KSMScale objects: it reads what exists,
// decides with the pure functions of package ksm, makes the few writes that
// are needed and records the outcome in one status write.
package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
	"github.com/ksmscale/ksm-scale-operator/internal/metrics"
)

// DefaultKSMClusterRole is the read-only ClusterRole shipped in config/rbac
// that kube-state-metrics is bound to. The operator may only bind it.
const DefaultKSMClusterRole = "ksm-scale-operator-kube-state-metrics"

// FieldOwner names the operator in managedFields.
const FieldOwner = "ksm-scale-operator"

// ownerIndex indexes pods by the UID of their controller.
const ownerIndex = ".metadata.controllerUID"

// KSMScaleReconciler runs kube-state-metrics for each KSMScale.
type KSMScaleReconciler struct {
	client.Client
	// APIReader reads around the cache; used only when a create meets a name
	// that the label-scoped cache cannot see.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// KSMClusterRole is the ClusterRole bound to kube-state-metrics.
	KSMClusterRole string
	// AllowedNamespaces are the namespaces kube-state-metrics may run in,
	// the operator-side guard against a KSMScale used to grant its
	// cluster-wide read access in a namespace of someone's choosing; nil
	// allows every namespace.
	AllowedNamespaces map[string]bool
	// Now is the clock; tests replace it.
	Now func() time.Time

	// deleted holds the pod deletions the cache has not shown yet.
	deleted deletions
	// written holds the generation of the operator's last Deployment write.
	written writtenGenerations
	// verify verifies hand-overs from the pods' own metrics (verify.go).
	verify *verifier
}

// +kubebuilder:rbac:groups=monitor.example.com,resources=ksmscales,verbs=get;list;watch
// +kubebuilder:rbac:groups=monitor.example.com,resources=ksmscales/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=monitor.example.com,resources=ksmscales/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterrolebindings,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=ksm-scale-operator-kube-state-metrics
// +kubebuilder:rbac:groups="",resources=nodes;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one KSMScale's objects towards its spec. Every decision is
// derived from what is observed now, so a restarted operator decides the same.
func (r *KSMScaleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	k := &v1alpha1.KSMScale{}
	if err := r.Get(ctx, req.NamespacedName, k); err != nil {
		if apierrors.IsNotFound(err) {
			// Garbage collection removes the children; only our metrics remain.
			metrics.Forget(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !k.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	s := &scope{ksm: k, cfg: ksm.Resolve(k), now: r.now()}
	s.cfg.VerifyHandover = r.verify != nil && r.verify.enabled
	s.obs.verifyEnabled = s.cfg.VerifyHandover
	s.obs.generation, s.obs.namespace = k.Generation, s.cfg.Namespace
	s.obs.paused, s.obs.progressDeadline = s.cfg.Paused, s.cfg.ProgressDeadline
	s.obs.sharded = s.cfg.Sharded

	res, err := r.reconcileAll(ctx, s)
	stops, err := splitErrors(err)
	if len(stops) > 0 {
		s.obs.errReason, s.obs.errMessage = stops[0].reason, joinMessages(stops)
		res = earliest(res, ctrl.Result{RequeueAfter: retryAfter(k.Status, stops[0].reason, s.now)})
	}
	if !s.obs.workloadObserved && len(stops) == 0 && err != nil {
		// Nothing was observed and nothing needs a person: the previous
		// status stays as it is, and the error is retried with backoff.
		return ctrl.Result{}, err
	}
	if serr := r.writeStatus(ctx, s); serr != nil {
		return ctrl.Result{}, errors.Join(err, serr)
	}
	if s.obs.workloadObserved {
		if s.obs.sharded {
			metrics.Record(k.Name, s.obs.total, s.obs.shardReady)
		} else {
			metrics.Record(k.Name, 0, nil)
		}
	}
	metrics.RecordConditions(k.Name, k.Status.Conditions)
	if err != nil {
		return ctrl.Result{}, err
	}
	if d := progressDeadlineIn(k.Status, s.cfg.ProgressDeadline, s.now); d > 0 {
		res = earliest(res, ctrl.Result{RequeueAfter: d})
	}
	return res, nil
}

// scope carries one pass's state between its phases.
type scope struct {
	ksm *v1alpha1.KSMScale
	cfg ksm.Config
	now time.Time
	// nodes are the names of the cluster's nodes.
	nodes map[string]bool
	// serviceAccountOwned: the pass found or made the KSMScale's own
	// ServiceAccount; only then may the binding name it.
	serviceAccountOwned bool
	obs                 observation
}

// stopError is a failure that retrying at once will not fix: a forbidden or
// invalid object (an exceeded ResourceQuota, a webhook's denial, RBAC not yet
// active at install), a name held by someone else. It is reported in the
// Degraded condition and retried with a capped exponential backoff
// (retryAfter), because what fixes it is often invisible to the operator's
// watches: a conflicting object without the operator's labels is not in its
// cache, and a quota or a role changing triggers nothing.
type stopError struct {
	reason string
	err    error
}

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// classify turns API errors that need a person into stopErrors.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
		return &stopError{reason: ReasonReconcileError, err: fmt.Errorf("%s: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// splitErrors separates the stopErrors of a pass (possibly several, joined
// with errors.Join) from the rest, which are retried with the workqueue's
// backoff.
func splitErrors(err error) ([]*stopError, error) {
	if err == nil {
		return nil, nil
	}
	all := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		all = joined.Unwrap()
	}
	var stops []*stopError
	var rest []error
	for _, e := range all {
		var stop *stopError
		if errors.As(e, &stop) {
			stops = append(stops, stop)
		} else {
			rest = append(rest, e)
		}
	}
	return stops, errors.Join(rest...)
}

func joinMessages(stops []*stopError) string {
	msgs := make([]string, len(stops))
	for i, s := range stops {
		msgs[i] = s.Error()
	}
	return strings.Join(msgs, "; ")
}

// Retry bounds for stopErrors.
const (
	minRetry = 5 * time.Second
	maxRetry = 5 * time.Minute
)

// retryAfter is when to try again after a stopError: as long as the failure
// has lasted (the Degraded condition's transition time, kept in status, so a
// restarted operator backs off the same), at least minRetry and at most
// maxRetry — 5 s, 10 s, 20 s, ... 5 min.
func retryAfter(prev v1alpha1.KSMScaleStatus, reason string, now time.Time) time.Duration {
	c := meta.FindStatusCondition(prev.Conditions, v1alpha1.ConditionDegraded)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason {
		return minRetry
	}
	return min(max(now.Sub(c.LastTransitionTime.Time), minRetry), maxRetry)
}

func (r *KSMScaleReconciler) reconcileAll(ctx context.Context, s *scope) (ctrl.Result, error) {
	nodes, err := r.listNodes(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.nodes = nodes
	s.obs.nodes, s.obs.nodesObserved = int32(len(nodes)), true

	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, types.NamespacedName{Name: s.cfg.Namespace}, ns); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		ns.DeletionTimestamp = &metav1.Time{Time: s.now}
	}
	if !ns.DeletionTimestamp.IsZero() {
		// Whoever recreates the namespace and a ServiceAccount of that name
		// must not inherit the binding.
		s.obs.namespaceMissing, s.obs.workloadObserved = true, true
		return ctrl.Result{}, r.deleteBinding(ctx, s)
	}
	if r.AllowedNamespaces != nil && !r.AllowedNamespaces[s.cfg.Namespace] {
		return ctrl.Result{}, errors.Join(r.deleteBinding(ctx, s), &stopError{reason: ReasonNamespaceNotAllowed,
			err: fmt.Errorf("spec.namespace %q is not one of the namespaces this operator may run kube-state-metrics in (flag --ksm-namespaces)", s.cfg.Namespace)})
	}

	prev, err := r.previousNamespaces(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.obs.previousNamespaces = prev

	// The phases run independently: a child that cannot be written (a
	// quota, a webhook, a name conflict) does not stop the others, and above
	// all not the healing of the shard pods.
	phases := []func(context.Context, *scope) (ctrl.Result, error){
		r.reconcileServiceAccount,
		r.reconcileRoleBinding,
		r.reconcileService,
		r.verifyHandovers,
		r.reconcileWorkload,
		func(ctx context.Context, s *scope) (ctrl.Result, error) {
			return ctrl.Result{}, r.retirePreviousNamespaces(ctx, s)
		},
	}
	if s.cfg.Paused {
		// Observe and report only; the workload phase reads without writing.
		phases = []func(context.Context, *scope) (ctrl.Result, error){r.reconcileWorkload}
	}
	var result ctrl.Result
	var errs []error
	for _, phase := range phases {
		res, err := phase(ctx, s)
		if err != nil {
			errs = append(errs, err)
		}
		result = earliest(result, res)
	}
	return result, errors.Join(errs...)
}

// earliest merges two results, keeping the sooner requeue.
func earliest(a, b ctrl.Result) ctrl.Result {
	if a.RequeueAfter == 0 || (b.RequeueAfter > 0 && b.RequeueAfter < a.RequeueAfter) {
		a.RequeueAfter = b.RequeueAfter
	}
	return a
}

// listNodes returns the names of the cluster's nodes, read from the
// metadata-only Node cache. It reads the cached objects themselves instead of
// deep copies (it only reads their names): at 5,000 nodes the copies were
// most of what a reconcile allocated.
func (r *KSMScaleReconciler) listNodes(ctx context.Context) (map[string]bool, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := r.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	names := make(map[string]bool, len(nodes.Items))
	for _, n := range nodes.Items {
		names[n.Name] = true
	}
	return names, nil
}

func (r *KSMScaleReconciler) reconcileWorkload(ctx context.Context, s *scope) (ctrl.Result, error) {
	if s.cfg.Sharded {
		return r.reconcileSharded(ctx, s)
	}
	return r.reconcileUnsharded(ctx, s)
}

// reconcileUnsharded keeps the Deployment at ceil(nodes / nodesPerMonitor)
// replicas and retires shard pods once the Deployment has taken over.
func (r *KSMScaleReconciler) reconcileUnsharded(ctx context.Context, s *scope) (ctrl.Result, error) {
	replicas := ksm.UnshardedReplicas(s.obs.nodes, s.cfg.NodesPerMonitor)
	s.obs.replicas = replicas
	var d *appsv1.Deployment
	var err error
	if s.cfg.Paused {
		d = &appsv1.Deployment{}
		err = client.IgnoreNotFound(r.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: ksm.DeploymentName(s.cfg.Name)}, d))
	} else {
		d, err = r.ensureDeployment(ctx, s, ksm.BuildDeployment(s.cfg, replicas))
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	s.obs.readyReplicas = d.Status.ReadyReplicas
	s.obs.workloadSettled = deploymentAvailable(d, replicas)
	s.obs.deploymentConverged = deploymentConverged(d, replicas)
	s.obs.trouble = r.podTrouble(ctx, s, false)
	if s.cfg.Paused {
		return r.reconcileShardPods(ctx, s, 0, "", false)
	}

	if err := r.deletePDB(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	// Shard pods left from sharded mode go once the Deployment serves: it
	// is available, and a replica of it is Ready with every readiness gate
	// True by the operator's own reading (a Deployment's availability is
	// only as honest as whatever plays the kubelet: kwok ignores gates).
	serving := false
	if deploymentAvailable(d, replicas) {
		if serving, err = r.replicaServing(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	return r.reconcileShardPods(ctx, s, 0, "", serving)
}

// replicaServing reports whether some replica of the unsharded Deployment is
// Ready with all its readiness gates True, so it exports every object.
func (r *KSMScaleReconciler) replicaServing(ctx context.Context, s *scope) (bool, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(s.cfg.Namespace), client.MatchingLabels(ksm.UnshardedSelector(s.cfg.Name))); err != nil {
		return false, fmt.Errorf("list Deployment pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		o := observePod(p, s.cfg.Name, 0, "")
		if o.Active && o.Ready {
			return true, nil
		}
	}
	return false, nil
}

// deploymentAvailable: every wanted replica runs the current template and has
// been Ready for the Deployment's minReadySeconds.
func deploymentAvailable(d *appsv1.Deployment, replicas int32) bool {
	return d.Status.ObservedGeneration >= d.Generation &&
		d.Status.UpdatedReplicas >= replicas &&
		d.Status.AvailableReplicas >= replicas
}

func deploymentConverged(d *appsv1.Deployment, replicas int32) bool {
	return deploymentAvailable(d, replicas) && d.Status.Replicas == replicas && d.Status.ReadyReplicas == replicas
}

// SetupWithManager registers the controller and its watches. Nodes and
// Namespaces are watched as metadata only, and only their creation and
// deletion matter: node heartbeats never trigger a reconcile.
func (r *KSMScaleReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, ownerIndex, func(o client.Object) []string {
		if ref := metav1.GetControllerOf(o); ref != nil && ref.Kind == "KSMScale" {
			return []string{string(ref.UID)}
		}
		return nil
	}); err != nil {
		return err
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	createDelete := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return true },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	// A namespace being deleted is an update (its deletionTimestamp set).
	deleting := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("ksmscale").
		For(&v1alpha1.KSMScale{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Pod{}).
		// The Deployment's replicas are owned by its ReplicaSets; their
		// readiness and the verification of their metrics matter too.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(replicaOwner)).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&rbacv1.ClusterRoleBinding{}).
		Owns(&corev1.ServiceAccount{}).
		WatchesMetadata(metadataOf("Node"), handler.EnqueueRequestsFromMapFunc(r.allKSMScales), builder.WithPredicates(createDelete)).
		WatchesMetadata(metadataOf("Namespace"), handler.EnqueueRequestsFromMapFunc(r.ksmScalesInNamespace), builder.WithPredicates(predicate.Or[client.Object](createDelete, deleting))).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// replicaOwner maps an unsharded replica to its KSMScale by the instance
// label the Deployment's selector includes.
func replicaOwner(_ context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[ksm.LabelSharded] != "false" || l[ksm.LabelKSMScale] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: l[ksm.LabelKSMScale]}}}
}

func (r *KSMScaleReconciler) allKSMScales(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.ksmScalesMatching(ctx, func(*v1alpha1.KSMScale) bool { return true })
}

func (r *KSMScaleReconciler) ksmScalesInNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	return r.ksmScalesMatching(ctx, func(k *v1alpha1.KSMScale) bool {
		return ksm.Resolve(k).Namespace == ns.GetName()
	})
}

// ksmScalesMatching runs for every Node and Namespace created or deleted
// (5,000 times as the Node informer starts at 5,000 nodes); keep only reads,
// so the cached KSMScales are not copied.
func (r *KSMScaleReconciler) ksmScalesMatching(ctx context.Context, keep func(*v1alpha1.KSMScale) bool) []reconcile.Request {
	list := &v1alpha1.KSMScaleList{}
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list KSMScales")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if keep(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return reqs
}

func (r *KSMScaleReconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// writeStatus computes the status from the pass's observation and writes it
// only when its content changed; lastUpdated moves only then.
func (r *KSMScaleReconciler) writeStatus(ctx context.Context, s *scope) error {
	k := s.ksm
	now := metav1.NewTime(s.now.Truncate(time.Second))
	next := computeStatus(k.Status, s.obs, now)
	next.LastUpdated = k.Status.LastUpdated
	if equality.Semantic.DeepEqual(k.Status, next) {
		return nil
	}
	next.LastUpdated = &now
	before := k.DeepCopy()
	k.Status = next
	if err := r.Status().Patch(ctx, k, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}
