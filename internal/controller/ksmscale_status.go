package controller

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// Condition reasons. They are part of the API: alerts and scripts match them.
const (
	// ReasonNamespaceNotFound: spec.namespace does not exist; nothing can run.
	ReasonNamespaceNotFound = "NamespaceNotFound"
	// ReasonReconcileError: the API server refused a change the operator needs.
	ReasonReconcileError = "ReconcileError"
	// ReasonNameConflict: an object the operator needs to create already
	// exists and belongs to someone else; the operator never takes it over.
	ReasonNameConflict = "NameConflict"
	// ReasonNamespaceNotAllowed: spec.namespace is not on the operator's
	// allow-list (--ksm-namespaces); nothing is created there.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonPodsFailing: pods of the desired workload cannot start (image pull,
	// crash loop, unschedulable).
	ReasonPodsFailing = "PodsFailing"
	// ReasonAsExpected: nothing needs attention.
	ReasonAsExpected = "AsExpected"
	// ReasonAllShardsReady: every shard of the desired generation is Ready.
	ReasonAllShardsReady = "AllShardsReady"
	// ReasonCompleteGenerationReady: some complete generation (all shards of
	// one shard count, or the unsharded Deployment) is Ready, so every object
	// is exported, though not yet by the desired one.
	ReasonCompleteGenerationReady = "CompleteGenerationReady"
	// ReasonReplicasReady: the unsharded Deployment has Ready replicas.
	ReasonReplicasReady = "ReplicasReady"
	// ReasonNoCompleteGeneration: no set of Ready pods covers every object.
	ReasonNoCompleteGeneration = "NoCompleteGeneration"
	// ReasonResharding: a generation with another shard count, or the other
	// mode's workload, still runs beside the desired one.
	ReasonResharding = "Resharding"
	// ReasonScaling: pods are being created, replaced or becoming Ready.
	ReasonScaling = "Scaling"
	// ReasonConverged: the workload matches the spec and nothing is pending.
	ReasonConverged = "Converged"
	// ReasonPaused: spec.paused is true; the operator changes nothing.
	ReasonPaused = "Paused"
	// ReasonVerified: every kube-state-metrics pod showed the objects it
	// must export before it took over.
	ReasonVerified = "Verified"
	// ReasonVerifying: pods with ready containers wait until their metrics
	// show the objects they must export.
	ReasonVerifying = "Verifying"
	// ReasonHandoverUnverified: pods took over after the settle time without
	// verified metrics (unreachable, or exporting less than they should);
	// the message names them and says why.
	ReasonHandoverUnverified = "HandoverUnverified"
	// ReasonProgressDeadlineExceeded: a change has been in progress for
	// longer than spec.progressDeadlineSeconds (pods that never become Ready,
	// say). The operator keeps trying; a new spec restarts the clock.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
)

// observation is what one pass saw and decided; status is computed from it
// alone (and from the previous status, to keep transition times).
type observation struct {
	generation int64
	namespace  string
	// paused: spec.paused; progressDeadline: spec.progressDeadlineSeconds.
	paused           bool
	progressDeadline time.Duration
	// nodesObserved and workloadObserved say how far the pass got: a pass
	// that stopped before reading the nodes or the workload leaves what it
	// did not see as the previous status had it.
	nodesObserved, workloadObserved bool
	nodes                           int32
	namespaceMissing                bool
	// previousNamespaces still hold a workload after spec.namespace changed.
	previousNamespaces []string
	// workloadSettled: the desired workload in spec.namespace has taken over
	// (every shard settled, or the Deployment available).
	workloadSettled bool
	// errReason/errMessage describe an error that stops progress.
	errReason, errMessage string
	// trouble is a pod problem that needs a person (image pull, crash loop).
	trouble string

	sharded bool
	// Unsharded mode.
	replicas, readyReplicas int32
	deploymentConverged     bool
	shardPodsPresent        bool
	// Sharded mode.
	total             int32
	shardCount        ksm.ShardCountDecision
	shardReady        []bool
	shardPod          []string
	plan              ksm.Plan
	deploymentPresent bool
	deploymentReady   bool

	// verifyEnabled: --verify-handover; verify: what the pods' gates say.
	verifyEnabled bool
	verify        verifyState
}

// computeStatus derives the whole status from one observation. It never reads
// the clock for content that did not change: conditions keep their
// transition times, shards keep lastSeen while their readiness holds, and
// lastUpdated is stamped by the caller only when something else changed.
func computeStatus(prev v1alpha1.KSMScaleStatus, o observation, now metav1.Time) v1alpha1.KSMScaleStatus {
	st := *prev.DeepCopy()
	if o.nodesObserved {
		st.NodeCount = o.nodes
	}
	degraded, degReason, degMsg := degradation(o)
	if !o.workloadObserved {
		// The pass stopped before it saw the workload: keep the previous
		// observation (shards, replicas, the damping memory in
		// shardingStatus, observedGeneration) and say what failed.
		st.Phase = v1alpha1.PhaseDegraded
		setCondition(&st, v1alpha1.ConditionDegraded, degraded, degReason, degMsg, o.generation, now)
		setCondition(&st, v1alpha1.ConditionStalled, degraded, degReason, degMsg, o.generation, now)
		setCondition(&st, v1alpha1.ConditionReady, false, degReason, degMsg, o.generation, now)
		return st
	}
	st.ObservedGeneration = o.generation

	if o.sharded {
		st.Mode = v1alpha1.ModeSharded
		st.DesiredReplicas = o.total
		st.ShardingStatus = shardingStatus(prev.ShardingStatus, o, now)
		st.CurrentReplicas = st.ShardingStatus.ActiveShards
	} else {
		st.Mode = v1alpha1.ModeUnsharded
		st.DesiredReplicas = o.replicas
		st.CurrentReplicas = o.readyReplicas
		st.ShardingStatus = nil
	}

	available, availReason, availMsg := availability(o, st)
	progressing, progReason, progMsg := progress(o, st)
	switch {
	case o.paused:
		progressing, progReason, progMsg = false, ReasonPaused, "spec.paused is true: the operator changes nothing until it is false"
	case progressing:
		progressing, progReason, progMsg = deadline(prev, o, now, progReason, progMsg)
	}
	if progReason == ReasonProgressDeadlineExceeded && !degraded {
		degraded, degReason, degMsg = true, progReason, progMsg
	}

	switch {
	case degraded:
		st.Phase = v1alpha1.PhaseDegraded
	case o.paused:
		st.Phase = v1alpha1.PhasePaused
	case progReason == ReasonResharding:
		st.Phase = v1alpha1.PhaseResharding
	case progressing:
		st.Phase = v1alpha1.PhaseScaling
	default:
		st.Phase = v1alpha1.PhaseReady
	}

	setCondition(&st, v1alpha1.ConditionAvailable, available, availReason, availMsg, o.generation, now)
	setCondition(&st, v1alpha1.ConditionProgressing, progressing, progReason, progMsg, o.generation, now)
	setCondition(&st, v1alpha1.ConditionDegraded, degraded, degReason, degMsg, o.generation, now)

	ready, readyReason, readyMsg := available && !progressing && !degraded, ReasonConverged, "every object is exported by the desired workload"
	switch {
	case degraded:
		readyReason, readyMsg = degReason, degMsg
	case progressing:
		readyReason, readyMsg = progReason, progMsg
	case !available:
		readyReason, readyMsg = availReason, availMsg
	}
	setCondition(&st, v1alpha1.ConditionReady, ready, readyReason, readyMsg, o.generation, now)
	setVerifiedCondition(&st, o, now)
	setCondition(&st, v1alpha1.ConditionReconciling, progressing, progReason, progMsg, o.generation, now)
	setCondition(&st, v1alpha1.ConditionStalled, degraded, degReason, degMsg, o.generation, now)
	return st
}

// deadline turns a change that has been in progress for longer than
// spec.progressDeadlineSeconds into Progressing=False with reason
// ProgressDeadlineExceeded, as a Deployment does. Progress counts from the
// Progressing condition's transition to True; once exceeded it stays so for
// this generation until the workload converges, with the message it got then
// (no churn).
func deadline(prev v1alpha1.KSMScaleStatus, o observation, now metav1.Time, reason, msg string) (bool, string, string) {
	c := meta.FindStatusCondition(prev.Conditions, v1alpha1.ConditionProgressing)
	switch {
	case c == nil || o.progressDeadline <= 0:
	case c.Status == metav1.ConditionFalse && c.Reason == ReasonProgressDeadlineExceeded && c.ObservedGeneration == o.generation:
		return false, ReasonProgressDeadlineExceeded, c.Message
	case c.Status == metav1.ConditionTrue && now.Sub(c.LastTransitionTime.Time) > o.progressDeadline:
		return false, ReasonProgressDeadlineExceeded, fmt.Sprintf("no progress to the spec within %s: %s", o.progressDeadline, msg)
	}
	return true, reason, msg
}

// progressDeadlineIn is how long until an in-progress change reaches its
// deadline, so that a pass runs then even if nothing else happens; 0 when
// no deadline is pending.
func progressDeadlineIn(st v1alpha1.KSMScaleStatus, d time.Duration, now time.Time) time.Duration {
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionProgressing)
	if c == nil || c.Status != metav1.ConditionTrue || d <= 0 {
		return 0
	}
	return max(c.LastTransitionTime.Add(d).Sub(now), 0) + time.Second
}

func shardingStatus(prev *v1alpha1.ShardingStatus, o observation, now metav1.Time) *v1alpha1.ShardingStatus {
	lastSeen := map[int32]v1alpha1.ShardHealth{}
	if prev != nil {
		for _, h := range prev.ShardHealth {
			lastSeen[h.ShardID] = h
		}
	}
	ss := &v1alpha1.ShardingStatus{
		TotalShards:       o.total,
		ShardCountSource:  o.shardCount.Source,
		ShardCountMessage: o.shardCount.Message,
		RecommendedShards: o.shardCount.Recommended,
	}
	if !o.shardCount.Since.IsZero() {
		ss.RecommendedSince = &metav1.Time{Time: o.shardCount.Since}
	}
	for i, ready := range o.shardReady {
		h := v1alpha1.ShardHealth{ShardID: int32(i), PodName: o.shardPod[i], Ready: ready, LastSeen: now}
		if old, ok := lastSeen[int32(i)]; ok && old.Ready == ready {
			h.LastSeen = old.LastSeen
		}
		if ready {
			ss.ActiveShards++
		}
		ss.ShardHealth = append(ss.ShardHealth, h)
	}
	return ss
}

func availability(o observation, st v1alpha1.KSMScaleStatus) (bool, string, string) {
	switch {
	case o.namespaceMissing:
		return false, ReasonNamespaceNotFound, "namespace does not exist"
	case o.sharded && st.ShardingStatus.ActiveShards == o.total:
		return true, ReasonAllShardsReady, fmt.Sprintf("all %d shards have a Ready pod", o.total)
	case o.sharded && (o.plan.AnyGroupComplete || o.deploymentReady):
		return true, ReasonCompleteGenerationReady, "an older complete generation serves every object while the desired one comes up"
	case !o.sharded && o.readyReplicas > 0:
		return true, ReasonReplicasReady, fmt.Sprintf("%d of %d replicas Ready", o.readyReplicas, o.replicas)
	case !o.sharded && o.shardPodsPresent && o.plan.AnyGroupComplete:
		return true, ReasonCompleteGenerationReady, "the shards serve every object while the Deployment comes up"
	}
	return false, ReasonNoCompleteGeneration, "no complete set of Ready kube-state-metrics pods"
}

func progress(o observation, st v1alpha1.KSMScaleStatus) (bool, string, string) {
	switch {
	case o.namespaceMissing:
		return false, ReasonNamespaceNotFound, "waiting for the namespace"
	case len(o.previousNamespaces) > 0:
		return true, ReasonResharding, fmt.Sprintf("bringing up the workload in %s beside the one in %s", o.namespace, strings.Join(o.previousNamespaces, ", "))
	case o.sharded && (o.plan.OtherGroups > 0 || o.deploymentPresent):
		return true, ReasonResharding, fmt.Sprintf("bringing up %d shards beside the previous workload", o.total)
	case o.sharded && !o.plan.Converged:
		return true, ReasonScaling, fmt.Sprintf("%d of %d shards Ready; creating, replacing or settling shard pods", st.ShardingStatus.ActiveShards, o.total)
	case !o.sharded && o.shardPodsPresent:
		return true, ReasonResharding, "bringing up the Deployment beside the shards"
	case !o.sharded && !o.deploymentConverged:
		return true, ReasonScaling, fmt.Sprintf("%d of %d replicas Ready", o.readyReplicas, o.replicas)
	case o.verifyEnabled && len(o.verify.waiting) > 0:
		// Not converged while pods still wait for their metrics: the pass
		// that verifies them (or falls back) is still to come.
		return true, ReasonVerifying, fmt.Sprintf("waiting until the metrics of %s show the objects they must export", strings.Join(o.verify.waiting, ", "))
	}
	return false, ReasonConverged, "the workload matches the spec"
}

func degradation(o observation) (bool, string, string) {
	switch {
	case o.namespaceMissing:
		return true, ReasonNamespaceNotFound, "spec.namespace does not exist; create it or change spec.namespace"
	case o.errReason != "":
		return true, o.errReason, o.errMessage
	case o.trouble != "":
		return true, ReasonPodsFailing, o.trouble
	}
	return false, ReasonAsExpected, "nothing needs attention"
}

func setCondition(st *v1alpha1.KSMScaleStatus, typ string, status bool, reason, msg string, gen int64, now metav1.Time) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now,
	})
}

// setVerifiedCondition reports the hand-over verification: removed when it is
// off, False while a fallback pod serves (it says which and why) or pods
// wait, True when every pod was verified.
func setVerifiedCondition(st *v1alpha1.KSMScaleStatus, o observation, now metav1.Time) {
	if !o.verifyEnabled {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionMetricsVerified)
		return
	}
	v := o.verify
	switch {
	case len(v.unverified) > 0:
		setCondition(st, v1alpha1.ConditionMetricsVerified, false, ReasonHandoverUnverified,
			truncate(fmt.Sprintf("%d pods serve without verified metrics (the settle time was used instead): %s",
				len(v.unverified), strings.Join(v.unverified, "; ")), 2048), o.generation, now)
	case len(v.waiting) > 0:
		setCondition(st, v1alpha1.ConditionMetricsVerified, false, ReasonVerifying,
			fmt.Sprintf("waiting until the metrics of %s show the objects they must export", strings.Join(v.waiting, ", ")), o.generation, now)
	default:
		setCondition(st, v1alpha1.ConditionMetricsVerified, true, ReasonVerified,
			"every kube-state-metrics pod showed the objects it must export before it took over", o.generation, now)
	}
}
