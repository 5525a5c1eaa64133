package controller

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

var (
	t0 = metav1.NewTime(time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	t2 = metav1.NewTime(time.Date(2025, 3, 1, 12, 5, 0, 0, time.UTC))
)

// cond is a condition as computeStatus should set it; messages are checked
// only for being present.
func cond(typ string, status bool, reason string, gen int64, at metav1.Time) metav1.Condition {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, ObservedGeneration: gen, LastTransitionTime: at}
}

func conds(gen int64, at metav1.Time, avail bool, availReason string, prog bool, progReason string, degr bool, degrReason string) []metav1.Condition {
	readyReason := ReasonConverged
	switch {
	case degr:
		readyReason = degrReason
	case prog:
		readyReason = progReason
	case !avail:
		readyReason = availReason
	}
	return []metav1.Condition{
		cond(v1alpha1.ConditionAvailable, avail, availReason, gen, at),
		cond(v1alpha1.ConditionProgressing, prog, progReason, gen, at),
		cond(v1alpha1.ConditionDegraded, degr, degrReason, gen, at),
		// The kstatus conditions, derived.
		cond(v1alpha1.ConditionReady, avail && !prog && !degr, readyReason, gen, at),
		cond(v1alpha1.ConditionReconciling, prog, progReason, gen, at),
		cond(v1alpha1.ConditionStalled, degr, degrReason, gen, at),
	}
}

// sharded is an observation of total shards with the given readiness, pods
// named pod-<i>.
func sharded(gen int64, total int32, ready []bool, plan ksm.Plan) observation {
	names := make([]string, len(ready))
	for i := range ready {
		names[i] = "pod-" + string(rune('0'+i))
	}
	return observation{
		nodesObserved: true, workloadObserved: true, generation: gen, nodes: 12, sharded: true, total: total,
		shardCount: ksm.ShardCountDecision{Total: total, Source: ksm.SourceShardCount, Message: "spec.sharding.shardCount is set"},
		shardReady: ready, shardPod: names, plan: plan,
	}
}

func health(at metav1.Time, ready ...bool) []v1alpha1.ShardHealth {
	var out []v1alpha1.ShardHealth
	for i, r := range ready {
		out = append(out, v1alpha1.ShardHealth{ShardID: int32(i), PodName: "pod-" + string(rune('0'+i)), Ready: r, LastSeen: at})
	}
	return out
}

func shardingStatusOf(total, active int32, h []v1alpha1.ShardHealth) *v1alpha1.ShardingStatus {
	return &v1alpha1.ShardingStatus{
		TotalShards: total, ActiveShards: active, ShardHealth: h,
		ShardCountSource: ksm.SourceShardCount, ShardCountMessage: "spec.sharding.shardCount is set",
	}
}

var statusCmp = []cmp.Option{
	cmpopts.IgnoreFields(metav1.Condition{}, "Message"),
	cmpopts.EquateEmpty(),
}

func checkMessages(t *testing.T, st v1alpha1.KSMScaleStatus) {
	t.Helper()
	for _, c := range st.Conditions {
		if c.Message == "" {
			t.Errorf("condition %s has no message", c.Type)
		}
	}
}

func TestComputeStatus(t *testing.T) {
	all := []bool{true, true, true}
	none := []bool{false, false, false}
	converged := ksm.Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true, RetireDeployment: true}
	previouslySharded := v1alpha1.KSMScaleStatus{Mode: v1alpha1.ModeSharded, ShardingStatus: shardingStatusOf(3, 3, health(t0, true, true, true))}

	tests := []struct {
		name string
		prev v1alpha1.KSMScaleStatus
		obs  observation
		want v1alpha1.KSMScaleStatus
	}{
		{
			name: "sharded, every shard Ready, converged",
			obs:  sharded(4, 3, all, converged),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 4, Mode: v1alpha1.ModeSharded, CurrentReplicas: 3, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseReady,
				ShardingStatus: shardingStatusOf(3, 3, health(t1, true, true, true)),
				Conditions:     conds(4, t1, true, ReasonAllShardsReady, false, ReasonConverged, false, ReasonAsExpected),
			},
		},
		{
			name: "sharded, first start, no shard Ready",
			obs:  sharded(1, 3, none, ksm.Plan{Create: []int32{0, 1, 2}}),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 1, Mode: v1alpha1.ModeSharded, CurrentReplicas: 0, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseScaling,
				ShardingStatus: shardingStatusOf(3, 0, health(t1, false, false, false)),
				Conditions:     conds(1, t1, false, ReasonNoCompleteGeneration, true, ReasonScaling, false, ReasonAsExpected),
			},
		},
		{
			name: "sharded, rollout under way, every shard Ready",
			obs:  sharded(2, 3, all, ksm.Plan{Create: []int32{1}, TargetSettled: true, AnyGroupComplete: true}),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 3, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseScaling,
				ShardingStatus: shardingStatusOf(3, 3, health(t1, true, true, true)),
				Conditions:     conds(2, t1, true, ReasonAllShardsReady, true, ReasonScaling, false, ReasonAsExpected),
			},
		},
		{
			name: "resharding 3->5: old generation serves",
			obs:  sharded(3, 5, []bool{true, true, false, false, false}, ksm.Plan{OtherGroups: 1, AnyGroupComplete: true}),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 3, Mode: v1alpha1.ModeSharded, CurrentReplicas: 2, DesiredReplicas: 5, NodeCount: 12,
				Phase:          v1alpha1.PhaseResharding,
				ShardingStatus: shardingStatusOf(5, 2, health(t1, true, true, false, false, false)),
				Conditions:     conds(3, t1, true, ReasonCompleteGenerationReady, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "resharding 3->5: new generation all Ready, old still there",
			obs:  sharded(3, 5, []bool{true, true, true, true, true}, ksm.Plan{OtherGroups: 1, AnyGroupComplete: true}),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 3, Mode: v1alpha1.ModeSharded, CurrentReplicas: 5, DesiredReplicas: 5, NodeCount: 12,
				Phase:          v1alpha1.PhaseResharding,
				ShardingStatus: shardingStatusOf(5, 5, health(t1, true, true, true, true, true)),
				Conditions:     conds(3, t1, true, ReasonAllShardsReady, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "switching sharding on: the Deployment still serves",
			obs: func() observation {
				o := sharded(2, 3, none, ksm.Plan{})
				o.deploymentPresent, o.deploymentReady = true, true
				return o
			}(),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 0, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseResharding,
				ShardingStatus: shardingStatusOf(3, 0, health(t1, false, false, false)),
				Conditions:     conds(2, t1, true, ReasonCompleteGenerationReady, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "switching sharding on: nothing complete serves",
			obs: func() observation {
				o := sharded(2, 3, []bool{true, false, false}, ksm.Plan{})
				o.deploymentPresent = true
				return o
			}(),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 1, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseResharding,
				ShardingStatus: shardingStatusOf(3, 1, health(t1, true, false, false)),
				Conditions:     conds(2, t1, false, ReasonNoCompleteGeneration, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "pods failing: degraded",
			obs: func() observation {
				o := sharded(2, 3, []bool{true, false, true}, ksm.Plan{})
				o.trouble = "pod pod-1: ImagePullBackOff"
				return o
			}(),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 2, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseDegraded,
				ShardingStatus: shardingStatusOf(3, 2, health(t1, true, false, true)),
				Conditions:     conds(2, t1, false, ReasonNoCompleteGeneration, true, ReasonScaling, true, ReasonPodsFailing),
			},
		},
		{
			name: "API error: degraded with its reason, even when converged",
			obs: func() observation {
				o := sharded(2, 3, all, converged)
				o.errReason, o.errMessage = ReasonReconcileError, "create pod: forbidden"
				return o
			}(),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 3, DesiredReplicas: 3, NodeCount: 12,
				Phase:          v1alpha1.PhaseDegraded,
				ShardingStatus: shardingStatusOf(3, 3, health(t1, true, true, true)),
				Conditions:     conds(2, t1, true, ReasonAllShardsReady, false, ReasonConverged, true, ReasonReconcileError),
			},
		},
		{
			name: "namespace missing",
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 1, nodes: 3, namespaceMissing: true, replicas: 1},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 1, Mode: v1alpha1.ModeUnsharded, DesiredReplicas: 1, NodeCount: 3,
				Phase:      v1alpha1.PhaseDegraded,
				Conditions: conds(1, t1, false, ReasonNamespaceNotFound, false, ReasonNamespaceNotFound, true, ReasonNamespaceNotFound),
			},
		},
		{
			name: "unsharded, converged; the old sharding status goes",
			prev: previouslySharded,
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 7, nodes: 40, replicas: 2, readyReplicas: 2, deploymentConverged: true},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 7, Mode: v1alpha1.ModeUnsharded, CurrentReplicas: 2, DesiredReplicas: 2, NodeCount: 40,
				Phase:      v1alpha1.PhaseReady,
				Conditions: conds(7, t1, true, ReasonReplicasReady, false, ReasonConverged, false, ReasonAsExpected),
			},
		},
		{
			name: "unsharded, scaling up with some Ready",
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 7, nodes: 80, replicas: 3, readyReplicas: 1},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 7, Mode: v1alpha1.ModeUnsharded, CurrentReplicas: 1, DesiredReplicas: 3, NodeCount: 80,
				Phase:      v1alpha1.PhaseScaling,
				Conditions: conds(7, t1, true, ReasonReplicasReady, true, ReasonScaling, false, ReasonAsExpected),
			},
		},
		{
			name: "unsharded, nothing Ready",
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 1, nodes: 1, replicas: 1},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 1, Mode: v1alpha1.ModeUnsharded, CurrentReplicas: 0, DesiredReplicas: 1, NodeCount: 1,
				Phase:      v1alpha1.PhaseScaling,
				Conditions: conds(1, t1, false, ReasonNoCompleteGeneration, true, ReasonScaling, false, ReasonAsExpected),
			},
		},
		{
			name: "switching sharding off: the shards serve while the Deployment comes up",
			prev: previouslySharded,
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 8, nodes: 40, replicas: 2, shardPodsPresent: true, plan: ksm.Plan{OtherGroups: 1, AnyGroupComplete: true}},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 8, Mode: v1alpha1.ModeUnsharded, DesiredReplicas: 2, NodeCount: 40,
				Phase:      v1alpha1.PhaseResharding,
				Conditions: conds(8, t1, true, ReasonCompleteGenerationReady, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "switching sharding off: Deployment Ready, shards not yet gone",
			obs:  observation{nodesObserved: true, workloadObserved: true, generation: 8, nodes: 40, replicas: 2, readyReplicas: 2, deploymentConverged: true, shardPodsPresent: true, plan: ksm.Plan{OtherGroups: 1, AnyGroupComplete: true}},
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 8, Mode: v1alpha1.ModeUnsharded, CurrentReplicas: 2, DesiredReplicas: 2, NodeCount: 40,
				Phase:      v1alpha1.PhaseResharding,
				Conditions: conds(8, t1, true, ReasonReplicasReady, true, ReasonResharding, false, ReasonAsExpected),
			},
		},
		{
			name: "a pending shard-count change is reported",
			obs: func() observation {
				o := sharded(2, 3, all, converged)
				o.shardCount = ksm.ShardCountDecision{Total: 3, Source: ksm.SourceNodesPerMonitor, Message: "waiting", Recommended: 5, Since: t0.Time, RequeueAfter: time.Minute}
				return o
			}(),
			want: v1alpha1.KSMScaleStatus{
				ObservedGeneration: 2, Mode: v1alpha1.ModeSharded, CurrentReplicas: 3, DesiredReplicas: 3, NodeCount: 12,
				Phase: v1alpha1.PhaseReady,
				ShardingStatus: &v1alpha1.ShardingStatus{
					TotalShards: 3, ActiveShards: 3, ShardCountSource: ksm.SourceNodesPerMonitor, ShardCountMessage: "waiting",
					RecommendedShards: 5, RecommendedSince: &t0, ShardHealth: health(t1, true, true, true),
				},
				Conditions: conds(2, t1, true, ReasonAllShardsReady, false, ReasonConverged, false, ReasonAsExpected),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev := *tc.prev.DeepCopy()
			got := computeStatus(tc.prev, tc.obs, t1)
			if diff := cmp.Diff(tc.want, got, statusCmp...); diff != "" {
				t.Errorf("computeStatus() (-want +got):\n%s", diff)
			}
			checkMessages(t, got)
			if !equality.Semantic.DeepEqual(prev, tc.prev) {
				t.Errorf("computeStatus changed its prev argument")
			}
			// The same observation again, later: nothing changes, so the
			// reconciler writes nothing.
			again := computeStatus(got, tc.obs, t2)
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("second identical pass changed the status (-first +second):\n%s", diff)
			}
		})
	}
}

func TestComputeStatusTransitions(t *testing.T) {
	all := []bool{true, true, true}
	converged := ksm.Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true}
	first := computeStatus(v1alpha1.KSMScaleStatus{}, sharded(4, 3, all, converged), t1)

	tests := []struct {
		name string
		obs  observation
		want []metav1.Condition
	}{
		{
			name: "new generation, same state: transition times kept, generation follows",
			obs:  sharded(5, 3, all, converged),
			want: conds(5, t1, true, ReasonAllShardsReady, false, ReasonConverged, false, ReasonAsExpected),
		},
		{
			name: "reason changes, status holds: transition time kept",
			obs: func() observation {
				// Resharding 3->5 with the old generation serving: Available
				// stays True with another reason; Progressing flips.
				return sharded(5, 5, []bool{true, false, false, false, false}, ksm.Plan{OtherGroups: 1, AnyGroupComplete: true})
			}(),
			want: []metav1.Condition{
				cond(v1alpha1.ConditionAvailable, true, ReasonCompleteGenerationReady, 5, t1),
				cond(v1alpha1.ConditionProgressing, true, ReasonResharding, 5, t2),
				cond(v1alpha1.ConditionDegraded, false, ReasonAsExpected, 5, t1),
				cond(v1alpha1.ConditionReady, false, ReasonResharding, 5, t2),
				cond(v1alpha1.ConditionReconciling, true, ReasonResharding, 5, t2),
				cond(v1alpha1.ConditionStalled, false, ReasonAsExpected, 5, t1),
			},
		},
		{
			name: "every status flips",
			obs: func() observation {
				o := sharded(4, 3, []bool{false, false, false}, ksm.Plan{})
				o.trouble = "crash loop"
				return o
			}(),
			want: conds(4, t2, false, ReasonNoCompleteGeneration, true, ReasonScaling, true, ReasonPodsFailing),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := computeStatus(first, tc.obs, t2)
			if diff := cmp.Diff(tc.want, got.Conditions, statusCmp...); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if got.ObservedGeneration != tc.obs.generation {
				t.Errorf("observedGeneration %d, want %d", got.ObservedGeneration, tc.obs.generation)
			}
		})
	}

	t.Run("flip and flip back: the time of the last flip", func(t *testing.T) {
		down := computeStatus(first, sharded(4, 3, []bool{false, false, false}, ksm.Plan{}), t2)
		t3 := metav1.NewTime(t2.Add(time.Minute))
		up := computeStatus(down, sharded(4, 3, all, converged), t3)
		want := conds(4, t3, true, ReasonAllShardsReady, false, ReasonConverged, false, ReasonAsExpected)
		want[2].LastTransitionTime = t1 // Degraded never flipped,
		want[5].LastTransitionTime = t1 // nor Stalled.
		if diff := cmp.Diff(want, up.Conditions, statusCmp...); diff != "" {
			t.Errorf("conditions (-want +got):\n%s", diff)
		}
	})

	t.Run("lastUpdated is left to the caller", func(t *testing.T) {
		prev := first
		prev.LastUpdated = &t0
		got := computeStatus(prev, sharded(9, 3, []bool{false, true, true}, ksm.Plan{}), t2)
		if got.LastUpdated == nil || !got.LastUpdated.Equal(&t0) {
			t.Errorf("lastUpdated %v, want %v", got.LastUpdated, t0)
		}
	})
}

func TestComputeStatusShardHealth(t *testing.T) {
	prev := v1alpha1.KSMScaleStatus{
		Mode: v1alpha1.ModeSharded,
		ShardingStatus: &v1alpha1.ShardingStatus{TotalShards: 3, ActiveShards: 2, ShardHealth: []v1alpha1.ShardHealth{
			{ShardID: 0, PodName: "old-0", Ready: true, LastSeen: t0},
			{ShardID: 1, PodName: "old-1", Ready: false, LastSeen: t0},
			{ShardID: 2, PodName: "old-2", Ready: true, LastSeen: t0},
		}},
	}
	// Now 4 shards: 0 stays Ready (new pod), 1 becomes Ready, 2 stops being
	// Ready, 3 is new.
	o := sharded(6, 4, []bool{true, true, false, false}, ksm.Plan{OtherGroups: 1, AnyGroupComplete: true})
	got := computeStatus(prev, o, t2)
	want := []v1alpha1.ShardHealth{
		{ShardID: 0, PodName: "pod-0", Ready: true, LastSeen: t0},
		{ShardID: 1, PodName: "pod-1", Ready: true, LastSeen: t2},
		{ShardID: 2, PodName: "pod-2", Ready: false, LastSeen: t2},
		{ShardID: 3, PodName: "pod-3", Ready: false, LastSeen: t2},
	}
	if diff := cmp.Diff(want, got.ShardingStatus.ShardHealth); diff != "" {
		t.Errorf("shardHealth (-want +got):\n%s", diff)
	}
	if got.ShardingStatus.ActiveShards != 2 || got.ShardingStatus.TotalShards != 4 {
		t.Errorf("active %d total %d, want 2 and 4", got.ShardingStatus.ActiveShards, got.ShardingStatus.TotalShards)
	}

	// Later, same readiness: every lastSeen holds.
	later := computeStatus(got, o, metav1.NewTime(t2.Add(time.Hour)))
	if diff := cmp.Diff(want, later.ShardingStatus.ShardHealth); diff != "" {
		t.Errorf("shardHealth an hour later (-want +got):\n%s", diff)
	}
}

// A pass that stopped before it saw the workload (a failed list, an error in
// an earlier phase of an older version) must not turn its blank observation
// into status: no 0 shards, no "all 0 shards Ready", and the damping memory
// (recommendedShards/recommendedSince) stays.
func TestComputeStatusKeepsWhatWasNotObserved(t *testing.T) {
	converged := ksm.Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true}
	o := sharded(4, 3, []bool{true, true, true}, converged)
	o.shardCount.Recommended, o.shardCount.Since = 5, t0.Time
	prev := computeStatus(v1alpha1.KSMScaleStatus{}, o, t1)

	for name, stopped := range map[string]observation{
		"stopped before the nodes": {generation: 5, sharded: true, errReason: ReasonReconcileError, errMessage: "list nodes: forbidden"},
		"stopped before the pods":  {generation: 5, sharded: true, nodesObserved: true, nodes: 12, total: 3, errReason: ReasonNameConflict, errMessage: "Service exists"},
	} {
		t.Run(name, func(t *testing.T) {
			got := computeStatus(prev, stopped, t2)
			if diff := cmp.Diff(prev.ShardingStatus, got.ShardingStatus); diff != "" {
				t.Errorf("shardingStatus changed (-prev +got):\n%s", diff)
			}
			if got.ObservedGeneration != 4 || got.CurrentReplicas != 3 || got.DesiredReplicas != 3 || got.NodeCount != 12 || got.Mode != v1alpha1.ModeSharded {
				t.Errorf("status %+v, want the previous observation of generation 4", got)
			}
			for _, typ := range []string{v1alpha1.ConditionAvailable, v1alpha1.ConditionProgressing} {
				if diff := cmp.Diff(findCond(prev, typ), findCond(got, typ)); diff != "" {
					t.Errorf("%s changed (-prev +got):\n%s", typ, diff)
				}
			}
			if d := findCond(got, v1alpha1.ConditionDegraded); d.Status != metav1.ConditionTrue || d.Reason != stopped.errReason || d.Message != stopped.errMessage {
				t.Errorf("Degraded %+v, want True %s", d, stopped.errReason)
			}
			if got.Phase != v1alpha1.PhaseDegraded {
				t.Errorf("phase %s, want Degraded", got.Phase)
			}
		})
	}
}

func findCond(st v1alpha1.KSMScaleStatus, typ string) metav1.Condition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

func TestRetryAfterBacksOffExponentially(t *testing.T) {
	degradedSince := func(reason string, since time.Time) v1alpha1.KSMScaleStatus {
		return v1alpha1.KSMScaleStatus{Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: reason, LastTransitionTime: metav1.NewTime(since)}}}
	}
	now := t1.Time
	for _, tc := range []struct {
		name string
		prev v1alpha1.KSMScaleStatus
		want time.Duration
	}{
		{"first failure", v1alpha1.KSMScaleStatus{}, minRetry},
		{"failing 1s", degradedSince(ReasonNameConflict, now.Add(-time.Second)), minRetry},
		{"failing 40s", degradedSince(ReasonNameConflict, now.Add(-40*time.Second)), 40 * time.Second},
		{"failing an hour", degradedSince(ReasonNameConflict, now.Add(-time.Hour)), maxRetry},
		{"another failure before", degradedSince(ReasonPodsFailing, now.Add(-time.Hour)), minRetry},
	} {
		if got := retryAfter(tc.prev, ReasonNameConflict, now); got != tc.want {
			t.Errorf("%s: retryAfter = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestComputeStatusPausedAndProgressDeadline(t *testing.T) {
	stuck := sharded(2, 3, []bool{true, true, false}, ksm.Plan{Create: []int32{2}})
	stuck.progressDeadline = 10 * time.Minute
	start := computeStatus(v1alpha1.KSMScaleStatus{}, stuck, t1)
	if c := findCond(start, v1alpha1.ConditionProgressing); c.Status != metav1.ConditionTrue {
		t.Fatalf("Progressing %+v, want True", c)
	}

	// Five minutes later: still within the deadline.
	if got := computeStatus(start, stuck, t2); findCond(got, v1alpha1.ConditionProgressing).Status != metav1.ConditionTrue {
		t.Errorf("Progressing ended before the deadline: %+v", findCond(got, v1alpha1.ConditionProgressing))
	}

	// Eleven minutes after the change began: exceeded, and Stalled.
	late := metav1.NewTime(t1.Add(11 * time.Minute))
	exceeded := computeStatus(start, stuck, late)
	p := findCond(exceeded, v1alpha1.ConditionProgressing)
	if p.Status != metav1.ConditionFalse || p.Reason != ReasonProgressDeadlineExceeded {
		t.Errorf("Progressing %+v, want False ProgressDeadlineExceeded", p)
	}
	for _, typ := range []string{v1alpha1.ConditionStalled, v1alpha1.ConditionDegraded} {
		if c := findCond(exceeded, typ); c.Status != metav1.ConditionTrue || c.Reason != ReasonProgressDeadlineExceeded {
			t.Errorf("%s %+v, want True ProgressDeadlineExceeded", typ, c)
		}
	}
	if exceeded.Phase != v1alpha1.PhaseDegraded {
		t.Errorf("phase %s, want Degraded", exceeded.Phase)
	}
	// It stays exceeded (same message, no churn) for this generation...
	again := computeStatus(exceeded, stuck, metav1.NewTime(late.Add(time.Hour)))
	if diff := cmp.Diff(exceeded.Conditions, again.Conditions); diff != "" {
		t.Errorf("an exceeded deadline changed on the next pass (-first +second):\n%s", diff)
	}
	// ...until the workload converges or the spec changes.
	respec := stuck
	respec.generation = 3
	if c := findCond(computeStatus(exceeded, respec, late), v1alpha1.ConditionProgressing); c.Status != metav1.ConditionTrue {
		t.Errorf("a new spec did not restart the clock: %+v", c)
	}

	paused := stuck
	paused.paused = true
	got := computeStatus(start, paused, late)
	if c := findCond(got, v1alpha1.ConditionProgressing); c.Status != metav1.ConditionFalse || c.Reason != ReasonPaused {
		t.Errorf("Progressing %+v, want False Paused", c)
	}
	if got.Phase != v1alpha1.PhasePaused {
		t.Errorf("phase %s, want Paused", got.Phase)
	}
	if c := findCond(got, v1alpha1.ConditionStalled); c.Status != metav1.ConditionFalse {
		t.Errorf("a paused KSMScale is Stalled: %+v", c)
	}
}
