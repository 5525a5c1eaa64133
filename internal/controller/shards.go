package controller

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// Event reasons on the KSMScale.
const (
	EventShardCreated       = "ShardCreated"
	EventShardDeleted       = "ShardDeleted"
	EventReshardingStarted  = "ReshardingStarted"
	EventReshardingFinished = "ReshardingFinished"
	EventModeSwitched       = "ModeSwitched"
	EventPDBClamped         = "MinAvailableClamped"
	EventNamespaceMoved     = "NamespaceMoved"
)

// settleSlack is added to a settle requeue so that the pass it triggers
// finds the pod settled rather than a few milliseconds short.
const settleSlack = 250 * time.Millisecond

// reconcileSharded runs the shard pods of the desired generation, retires
// the unsharded Deployment once they have taken over, and keeps the PDB.
func (r *KSMScaleReconciler) reconcileSharded(ctx context.Context, s *scope) (ctrl.Result, error) {
	st := s.ksm.Status
	in := ksm.ShardCountInput{
		Config: s.cfg, Nodes: s.obs.nodes, Now: s.now,
		SpecChanged: st.ObservedGeneration != s.ksm.Generation,
	}
	if prev := st.ShardingStatus; prev != nil && st.Mode == v1alpha1.ModeSharded {
		in.Current, in.PendingRecommendation = prev.TotalShards, prev.RecommendedShards
		if prev.RecommendedSince != nil {
			in.PendingSince = prev.RecommendedSince.Time
		}
	}
	dec := ksm.DecideShardCount(in)
	s.obs.total, s.obs.shardCount = dec.Total, dec

	dep := &appsv1.Deployment{}
	err := r.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: ksm.DeploymentName(s.cfg.Name)}, dep)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	depPresent := err == nil && metav1.IsControlledBy(dep, s.ksm)
	s.obs.deploymentPresent = depPresent
	s.obs.deploymentReady = depPresent && dep.Status.ReadyReplicas > 0

	res, err := r.reconcileShardPods(ctx, s, dec.Total, ksm.Revision(s.cfg, dec.Total), false)
	if err != nil || s.cfg.Paused {
		s.obs.trouble = r.podTrouble(ctx, s, true)
		return res, err
	}
	if depPresent && s.obs.plan.RetireDeployment {
		if err := r.deleteOwned(ctx, s, &appsv1.Deployment{}, dep.Name); err != nil {
			return res, err
		}
		r.written.forget(dep.UID)
		r.event(s, corev1.EventTypeNormal, EventModeSwitched, "SwitchMode",
			"all %d shards have settled; deleted the unsharded Deployment %s", dec.Total, dep.Name)
		s.obs.deploymentPresent, s.obs.deploymentReady = false, false
	}

	if s.cfg.EnablePDB {
		if err := r.reconcilePDB(ctx, s, dec.Total); err != nil {
			return res, err
		}
	} else if err := r.deletePDB(ctx, s); err != nil {
		return res, err
	}
	s.obs.trouble = r.podTrouble(ctx, s, true)
	if dec.RequeueAfter > 0 {
		res = earliest(res, ctrl.Result{RequeueAfter: dec.RequeueAfter})
	}
	return res, nil
}

// reconcilePDB keeps the PodDisruptionBudget. A minAvailable that is not
// below a derived shard count would forbid every eviction and block node
// drains forever, so it is lowered to shards-1 and said so in an Event.
func (r *KSMScaleReconciler) reconcilePDB(ctx context.Context, s *scope, total int32) error {
	minAvailable := s.cfg.MinAvailable
	if minAvailable >= total {
		minAvailable = total - 1
	}
	pdb := ksm.BuildPDB(s.cfg, minAvailable)
	have := pdb.DeepCopy()
	if err := r.Get(ctx, client.ObjectKeyFromObject(pdb), have); err == nil &&
		have.Spec.MinAvailable != nil && have.Spec.MinAvailable.IntVal == minAvailable {
		return r.ensurePDB(ctx, s, minAvailable)
	}
	if minAvailable != s.cfg.MinAvailable {
		r.event(s, corev1.EventTypeWarning, EventPDBClamped, "ReconcilePDB",
			"spec.sharding.advanced.minAvailable %d is not below the %d shards; the PodDisruptionBudget uses %d so that nodes can still be drained",
			s.cfg.MinAvailable, total, minAvailable)
	}
	return r.ensurePDB(ctx, s, minAvailable)
}

// reconcileShardPods applies the replacement rules to this KSMScale's shard
// pods. total 0 means sharding is off: the pods go once otherModeReady.
func (r *KSMScaleReconciler) reconcileShardPods(ctx context.Context, s *scope, total int32, rev string, otherModeReady bool) (ctrl.Result, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(s.cfg.Namespace), client.MatchingFields{ownerIndex: string(s.ksm.UID)}); err != nil {
		return ctrl.Result{}, fmt.Errorf("list shard pods: %w", err)
	}
	observed := make([]ksm.ObservedPod, 0, len(pods.Items))
	byName := map[string]*corev1.Pod{}
	held := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if r.deleted.pending(p.UID, !p.DeletionTimestamp.IsZero(), s.now) {
			// Deleted by an earlier pass; the cache is behind.
			p.DeletionTimestamp = &metav1.Time{Time: s.now}
		}
		o := observePod(p, s.cfg.Name, total, rev)
		if o.Active && p.Spec.NodeName != "" && !s.nodes[p.Spec.NodeName] {
			// Its node is gone: nothing runs this pod any more, whatever
			// its last status says, and pod garbage collection may take a
			// while. Replace it now; the pod itself goes with the old ones.
			o.Active, o.Ready = false, false
			o.Lost = true
		}
		observed = append(observed, o)
		byName[p.Name] = p
		held[p.Name] = true
	}
	s.obs.shardPodsPresent = len(observed) > 0

	plan := ksm.ComputePlan(ksm.PlanInput{
		Pods: observed, Total: total, Revision: rev,
		MinReady: time.Duration(s.cfg.MinReadySeconds) * time.Second,
		MaxSurge: s.cfg.MaxSurge, Now: s.now, OtherModeReady: otherModeReady,
	})
	s.obs.plan = plan
	if total > 0 {
		s.obs.workloadSettled = plan.TargetSettled
	}
	s.obs.shardReady, s.obs.shardPod = shardReadiness(observed, total, rev)
	// Everything status reports has been read; what follows only acts.
	s.obs.workloadObserved = true
	if s.cfg.Paused {
		return ctrl.Result{}, nil
	}

	targetEmpty := !slices.ContainsFunc(observed, func(p ksm.ObservedPod) bool { return p.Active && p.Total == total })
	if total > 0 && targetEmpty && len(plan.Create) > 0 && (plan.OtherGroups > 0 || s.obs.deploymentPresent) {
		r.event(s, corev1.EventTypeNormal, EventReshardingStarted, "Reshard",
			"starting a generation of %d shards beside the running workload", total)
	}
	for _, shard := range plan.Create {
		if err := r.createShardPod(ctx, s, shard, total, held); err != nil {
			return ctrl.Result{}, err
		}
	}

	retired := 0
	for _, d := range plan.Delete {
		p := byName[d.Name]
		uid := p.UID
		if err := r.Delete(ctx, p, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, classify(err, "delete pod "+p.Name)
		}
		r.deleted.deleted(uid, s.now)
		log.FromContext(ctx).Info("deleted shard pod", "pod", p.Name, "reason", d.Reason)
		if d.Reason == ksm.DeleteOldGroup {
			retired++
			continue
		}
		r.podEvent(s, p, corev1.EventTypeNormal, EventShardDeleted, "DeletePod", "deleted pod %s: %s", p.Name, d.Reason)
	}
	if retired > 0 {
		r.event(s, corev1.EventTypeNormal, EventReshardingFinished, "Reshard",
			"all %d shards have settled; deleted %d pods of the previous generations", total, retired)
	}
	if total == 0 && slices.ContainsFunc(plan.Delete, func(d ksm.Deletion) bool { return d.Reason == ksm.DeleteModeSwitch }) {
		r.event(s, corev1.EventTypeNormal, EventModeSwitched, "SwitchMode",
			"the Deployment is available; deleting the shard pods")
	}

	var res ctrl.Result
	if plan.RequeueAfter > 0 {
		res.RequeueAfter = plan.RequeueAfter + settleSlack
	}
	return res, nil
}

// createShardPod creates the target-revision pod of one shard under the
// first name not held by an existing pod.
func (r *KSMScaleReconciler) createShardPod(ctx context.Context, s *scope, shard, total int32, held map[string]bool) error {
	pod := ksm.BuildShardPod(s.cfg, shard, total)
	if err := controllerutil.SetControllerReference(s.ksm, pod, r.Scheme()); err != nil {
		return err
	}
	rev := pod.Labels[ksm.LabelRevision]
	for attempt := 0; attempt < 3; attempt++ {
		pod.Name = ksm.NextPodName(s.cfg.Name, shard, rev, held)
		created := pod.DeepCopy()
		err := r.Create(ctx, created)
		if err == nil {
			held[pod.Name] = true
			log.FromContext(ctx).Info("created shard pod", "pod", pod.Name, "shard", shard, "totalShards", total)
			r.podEvent(s, created, corev1.EventTypeNormal, EventShardCreated, "CreatePod",
				"created pod %s for shard %d of %d", pod.Name, shard, total)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return classify(err, "create pod "+pod.Name)
		}
		// A pod the cache does not show holds the name: either the cache is
		// behind (the next pass sees it and creates nothing) or someone
		// removed our labels, which hides it from the label-scoped cache. A
		// pod of ours that we cannot track is replaced.
		held[pod.Name] = true
		hidden := &corev1.Pod{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(pod), hidden); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !metav1.IsControlledBy(hidden, s.ksm) {
			// Someone else's pod holds the name: never touched, the shard
			// gets the next free name instead.
			r.event(s, corev1.EventTypeWarning, ReasonNameConflict, "CreatePod",
				"pod %s/%s exists and is not this KSMScale's; shard %d uses another name", pod.Namespace, pod.Name, shard)
			continue
		}
		if hidden.Labels[ksm.LabelManagedBy] == ksm.ManagedBy {
			return nil
		}
		uid := hidden.UID
		if err := r.Delete(ctx, hidden, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return classify(err, "delete pod "+hidden.Name)
		}
		r.podEvent(s, hidden, corev1.EventTypeNormal, EventShardDeleted, "DeletePod",
			"deleted pod %s: its labels were changed by someone else", hidden.Name)
	}
	return &stopError{reason: ReasonNameConflict,
		err: fmt.Errorf("no free pod name for shard %d: pods that are not this KSMScale's hold %s and its next suffixes", shard, ksm.ShardPodName(s.cfg.Name, shard, rev))}
}

// observePod reads a pod into the form the replacement rules use.
//
// A pod is identified by the revision label the operator stamped on it,
// never by comparing its spec with the builder's: admission may inject
// sidecars, rewrite images to a mirror or pin digests, and a pod that looks
// different for that reason is still exactly the pod the operator asked for.
// A later edit by someone else is told apart by what admission at creation
// cannot cause (see specWrittenByOthers): a spec field written through the
// pod itself by another field manager (an image set with kubectl), or the
// operator's own labels changed. Subresource writes (status, in-place resize,
// ephemeral debug containers) are not edits of what the operator built. An
// edited pod loses its revision and is replaced like an outdated pod: a new
// one first, the edited one after.
func observePod(p *corev1.Pod, name string, total int32, rev string) ksm.ObservedPod {
	o := ksm.ObservedPod{
		Name:     p.Name,
		Shard:    -1,
		Revision: p.Labels[ksm.LabelRevision],
		Created:  p.CreationTimestamp.Time,
	}
	terminal := p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
	deleting := !p.DeletionTimestamp.IsZero()
	o.Terminal = terminal && !deleting
	o.Active = !terminal && !deleting
	readyCond, containersReady := false, false
	var containersSince, notReadySince time.Time
	notReadyReason := ""
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			readyCond, o.ReadySince = true, cond.LastTransitionTime.Time
		}
		if cond.Type == corev1.PodReady && cond.Status != corev1.ConditionTrue {
			notReadySince, notReadyReason = cond.LastTransitionTime.Time, cond.Reason
		}
		if cond.Type == corev1.ContainersReady && cond.Status == corev1.ConditionTrue {
			containersReady, containersSince = true, cond.LastTransitionTime.Time
		}
	}
	// Ready counts only with every readiness gate True, whatever plays the
	// kubelet: the gate is what makes Ready mean "exports its objects".
	// The settle time then counts from Ready, that is from the verification:
	// the pod's objects are complete from that moment, and every Prometheus
	// needs up to one scrape interval more to hold a complete scrape of them.
	// Handing over at verification itself leaves a gap in Prometheus as long
	// as that interval. A pod that took over unverified was already held for
	// the settle time counted from its containers becoming ready (that was
	// the guess), so it is not held a second time.
	gated, gatesOK := readinessGates(p)
	o.Ready = readyCond && gatesOK
	switch {
	case !o.Ready:
		o.ReadySince = time.Time{}
	case gated && containersReady && gateReason(p) == GateUnverified:
		o.ReadySince = containersSince
	}
	if o.Ready && containersReady {
		o.ReadySince = later(o.ReadySince, containersSince.Add(ksm.DiscoveryAllowance))
	}
	// Right after a gate turns True, kubelet has not flipped Ready yet: Ready
	// False since before the gate's transition is that moment, not a lost
	// node, which turns a Ready pod not Ready later.
	catchingUp := gated && !notReadySince.After(lastGateTransition(p)) && notReadyReason != nodeNotReadyReason
	if o.Active && !readyCond && containersReady && gatesOK && !catchingUp && p.Status.Phase == corev1.PodRunning {
		// Containers ready but the pod not: the node lifecycle controller
		// marked it so because its node stopped reporting (MarkPodsNotReady
		// leaves ContainersReady alone; a failing probe clears both). Its
		// kubelet may never come back, so the shard is replaced now rather
		// than when the node is deleted or the taint evicts the pod.
		o.Active, o.Lost = false, true
	}
	i := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == ksm.ContainerName })
	if i < 0 {
		return o
	}
	o.Shard, o.Total = shardArgs(p.Spec.Containers[i].Args)
	if o.Revision == rev && rev != "" && editedAfterCreation(p, name, o.Shard, o.Total) {
		o.Revision = ""
	}
	return o
}

// editedAfterCreation reports whether someone changed the pod after the API
// server admitted it: its spec, or the labels the operator stamped, which the
// Service, the PodDisruptionBudget and users' queries select on.
func editedAfterCreation(p *corev1.Pod, name string, shard, total int32) bool {
	return specWrittenByOthers(p) || !labelsInclude(p.Labels, ksm.ShardLabels(name, shard, total))
}

// shardArgs returns the --shard and --total-shards a container runs with;
// total is 0 when either is missing or malformed.
func shardArgs(args []string) (shard, total int32) {
	shard = -1
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--shard="); ok {
			if n, err := strconv.ParseInt(v, 10, 32); err == nil {
				shard = int32(n)
			}
		}
		if v, ok := strings.CutPrefix(a, "--total-shards="); ok {
			if n, err := strconv.ParseInt(v, 10, 32); err == nil {
				total = int32(n)
			}
		}
	}
	if shard < 0 {
		return -1, 0
	}
	return shard, total
}

// shardReadiness reports, for each shard of the target generation, whether
// it has a Ready pod and which pod serves it (the Ready target-revision pod
// if there is one).
func shardReadiness(pods []ksm.ObservedPod, total int32, rev string) ([]bool, []string) {
	ready := make([]bool, total)
	names := make([]string, total)
	rank := make([]int, total)
	for _, p := range pods {
		if !p.Active || p.Total != total || p.Shard < 0 || p.Shard >= total {
			continue
		}
		r := 1
		if p.Ready {
			r += 2
		}
		if p.Revision == rev {
			r++
		}
		if r > rank[p.Shard] || (r == rank[p.Shard] && p.Name < names[p.Shard]) {
			rank[p.Shard], names[p.Shard] = r, p.Name
		}
		ready[p.Shard] = ready[p.Shard] || p.Ready
	}
	return ready, names
}

// event records an Event on the KSMScale.
func (r *KSMScaleReconciler) event(s *scope, eventType, reason, action, note string, args ...any) {
	r.podEvent(s, nil, eventType, reason, action, note, args...)
}

// podEvent records an Event on the KSMScale about one of its pods. The pod is
// the Event's related object, which also keeps the events API from folding
// the events of different shards into one series.
func (r *KSMScaleReconciler) podEvent(s *scope, pod *corev1.Pod, eventType, reason, action, note string, args ...any) {
	if r.Recorder == nil {
		return
	}
	var related runtime.Object
	if pod != nil {
		related = pod
	}
	r.Recorder.Eventf(s.ksm, related, eventType, reason, action, note, args...)
}

// readinessGates reports whether the pod has readiness gates and whether all
// of them are True.
func readinessGates(p *corev1.Pod) (gated, allTrue bool) {
	for _, g := range p.Spec.ReadinessGates {
		ok := slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == g.ConditionType && c.Status == corev1.ConditionTrue
		})
		if !ok {
			return true, false
		}
	}
	return len(p.Spec.ReadinessGates) > 0, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// gateReason is the reason of the pod's metrics-verified gate condition, ""
// when it has none.
func gateReason(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == ksm.MetricsVerifiedGate {
			return c.Reason
		}
	}
	return ""
}

// nodeNotReadyReason is the Ready condition's reason when the node lifecycle
// controller marks a pod not Ready because its node stopped reporting.
const nodeNotReadyReason = "NodeNotReady"

// lastGateTransition is the latest transition of the pod's readiness gate
// conditions.
func lastGateTransition(p *corev1.Pod) time.Time {
	var last time.Time
	for _, g := range p.Spec.ReadinessGates {
		for _, c := range p.Status.Conditions {
			if c.Type == g.ConditionType && c.LastTransitionTime.After(last) {
				last = c.LastTransitionTime.Time
			}
		}
	}
	return last
}
