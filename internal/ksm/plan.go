package ksm

import (
	"slices"
	"sort"
	"time"
)

// ObservedPod is what the replacement rules need to know about one shard pod.
// The reconciler derives it from the live object; Shard and Total come from
// the container's own --shard/--total-shards arguments, because those decide
// what the pod exports, whatever its labels claim.
type ObservedPod struct {
	Name string
	// Shard and Total are what the pod serves; Total is 0 when its arguments
	// do not name a valid shard.
	Shard, Total int32
	// Revision is the pod's revision label, or "" when the pod was changed by
	// someone else after the operator created it: such a pod is replaced like
	// a pod of an older revision.
	Revision string
	// Active: neither Failed/Succeeded nor being deleted.
	Active bool
	// Terminal: Failed or Succeeded; it serves nothing and is deleted at once.
	Terminal bool
	// Lost: its node no longer exists; it serves nothing and is deleted at
	// once (pod garbage collection would get to it only later).
	Lost  bool
	Ready bool
	// ReadySince is the lastTransitionTime of the pod's Ready condition.
	ReadySince time.Time
	Created    time.Time
}

// PlanInput is one pass's observation and target.
type PlanInput struct {
	Pods []ObservedPod
	// Total (M) and Revision (R) are the target. Total 0 means sharding is
	// off: every shard pod goes once the Deployment has taken over.
	Total    int32
	Revision string
	// MinReady is the settle time: how long a pod must have been Ready before
	// the pods it replaces go.
	MinReady time.Duration
	MaxSurge int32
	Now      time.Time
	// OtherModeReady is true when the other mode's workload is complete and
	// settled (in unsharded mode: the Deployment is available). It gates
	// deleting shard pods when sharding is switched off.
	OtherModeReady bool
}

// Deletion is a pod to delete and why.
type Deletion struct {
	Name   string
	Reason string
}

// Reasons for deleting a shard pod; they end up in Events.
const (
	DeleteTerminal   = "PodTerminal"
	DeleteNodeLost   = "NodeLost"
	DeleteReplaced   = "ReplacedByNewRevision"
	DeleteDuplicate  = "DuplicateShardPod"
	DeleteOldGroup   = "OldGenerationRetired"
	DeleteInvalid    = "InvalidShardArguments"
	DeleteModeSwitch = "ShardingDisabled"
)

// Plan is what one pass does to the shard pods.
type Plan struct {
	// Create lists the shards of the target generation that get a new pod of
	// the target revision now.
	Create []int32
	Delete []Deletion
	// RequeueAfter is the time until the earliest pending settle ends; zero
	// when nothing is waiting on the clock.
	RequeueAfter time.Duration
	// TargetComplete: every shard of the target generation has a Ready pod.
	TargetComplete bool
	// TargetSettled: every shard of the target generation has a pod that has
	// been Ready for the settle time, so older generations may go.
	TargetSettled bool
	// Converged: exactly the target generation at the target revision
	// exists, one settled pod per shard, nothing left to create or delete.
	Converged bool
	// OtherGroups is how many generations other than the target have pods.
	OtherGroups int
	// AnyGroupComplete: some generation has a Ready pod for every shard, so
	// every object is exported right now.
	AnyGroupComplete bool
	// RetireDeployment: the target generation can take over from the
	// unsharded Deployment.
	RetireDeployment bool
}

// settled reports whether p has been Ready for the settle time, and if not,
// how long is left (0 when it is not Ready at all).
func settled(p ObservedPod, in PlanInput) (bool, time.Duration) {
	if !p.Ready || !p.Active {
		return false, 0
	}
	left := p.ReadySince.Add(in.MinReady).Sub(in.Now)
	if left <= 0 {
		return true, 0
	}
	return false, left
}

// ComputePlan applies the replacement rules of DESIGN.md to one observation.
// It keeps the invariant that a complete, Ready generation is only ever
// deleted once another complete generation has settled.
func ComputePlan(in PlanInput) Plan {
	var p Plan
	// groups[total][shard] lists the active pods serving that shard.
	groups := map[int32]map[int32][]ObservedPod{}
	for _, pod := range in.Pods {
		switch {
		case pod.Terminal:
			p.Delete = append(p.Delete, Deletion{pod.Name, DeleteTerminal})
		case pod.Lost:
			p.Delete = append(p.Delete, Deletion{pod.Name, DeleteNodeLost})
		case !pod.Active:
			// Being deleted: serves nothing we can count on, and its name
			// does not block a replacement (see NextPodName).
		case pod.Total < 1 || pod.Shard < 0 || pod.Shard >= pod.Total:
			p.Delete = append(p.Delete, Deletion{pod.Name, DeleteInvalid})
		default:
			if groups[pod.Total] == nil {
				groups[pod.Total] = map[int32][]ObservedPod{}
			}
			groups[pod.Total][pod.Shard] = append(groups[pod.Total][pod.Shard], pod)
		}
	}
	for total, shards := range groups {
		if groupComplete(shards, total) {
			p.AnyGroupComplete = true
		}
	}

	wait := func(d time.Duration) {
		if d > 0 && (p.RequeueAfter == 0 || d < p.RequeueAfter) {
			p.RequeueAfter = d
		}
	}

	if in.Total == 0 {
		// Sharding off: every shard pod goes once the Deployment has taken over.
		if in.OtherModeReady {
			for _, total := range sortedKeys(groups) {
				for _, shard := range sortedKeys(groups[total]) {
					for _, pod := range groups[total][shard] {
						p.Delete = append(p.Delete, Deletion{pod.Name, DeleteModeSwitch})
					}
				}
			}
		}
		p.OtherGroups = len(groups)
		p.Converged = len(groups) == 0 && len(p.Delete) == 0
		return p
	}

	target := groups[in.Total]
	p.TargetComplete, p.TargetSettled = true, true
	// unsettledNew counts shards whose target-revision pod has not settled
	// yet: the rollout's surge in flight.
	unsettledNew := int32(0)
	type shardState struct {
		covered    bool // has a Ready pod of any revision
		hasNew     bool // has an active pod of the target revision
		newSettled bool
	}
	states := make([]shardState, in.Total)
	for s := int32(0); s < in.Total; s++ {
		st := &states[s]
		anySettled := false
		for _, pod := range target[s] {
			ok, left := settled(pod, in)
			wait(left)
			if pod.Ready {
				st.covered = true
			}
			anySettled = anySettled || ok
			if pod.Revision == in.Revision {
				st.hasNew = true
				st.newSettled = st.newSettled || ok
			}
		}
		if !st.covered {
			p.TargetComplete = false
		}
		if !anySettled {
			p.TargetSettled = false
		}
		if st.hasNew && !st.newSettled {
			unsettledNew++
		}
	}

	for s := int32(0); s < in.Total; s++ {
		st := states[s]
		switch {
		case st.hasNew:
		case !st.covered:
			// Healing, first start or a new generation: nothing serves this
			// shard, so there is nothing to protect by waiting.
			p.Create = append(p.Create, s)
			unsettledNew++
		case unsettledNew < in.MaxSurge:
			// Rollout: the shard is served by an older revision; replace it
			// while the surge allows.
			p.Create = append(p.Create, s)
			unsettledNew++
		}
	}

	// Within the target generation: once a shard's target-revision pod has
	// settled, every other pod of that shard goes; so do duplicates.
	for s := int32(0); s < in.Total; s++ {
		pods := target[s]
		if !states[s].newSettled {
			continue
		}
		keep := bestPod(pods, in)
		for _, pod := range pods {
			if pod.Name == keep.Name {
				continue
			}
			reason := DeleteReplaced
			if pod.Revision == in.Revision {
				reason = DeleteDuplicate
			}
			p.Delete = append(p.Delete, Deletion{pod.Name, reason})
		}
	}

	// Other generations go only when the target can take over all objects.
	for _, total := range sortedKeys(groups) {
		if total == in.Total {
			continue
		}
		p.OtherGroups++
		if !p.TargetSettled {
			continue
		}
		for _, shard := range sortedKeys(groups[total]) {
			for _, pod := range groups[total][shard] {
				p.Delete = append(p.Delete, Deletion{pod.Name, DeleteOldGroup})
			}
		}
	}
	p.RetireDeployment = p.TargetSettled

	p.Converged = p.TargetSettled && p.OtherGroups == 0 && len(p.Create) == 0 && len(p.Delete) == 0
	if p.Converged {
		for s := int32(0); s < in.Total; s++ {
			if len(target[s]) != 1 || target[s][0].Revision != in.Revision {
				p.Converged = false
			}
		}
	}
	return p
}

// bestPod picks the pod that keeps serving a shard: a settled pod of the
// target revision, the longest-settled first, then the oldest.
func bestPod(pods []ObservedPod, in PlanInput) ObservedPod {
	ranked := slices.Clone(pods)
	sort.SliceStable(ranked, func(i, j int) bool {
		a, b := ranked[i], ranked[j]
		aNew, bNew := a.Revision == in.Revision, b.Revision == in.Revision
		if aNew != bNew {
			return aNew
		}
		aOK, _ := settled(a, in)
		bOK, _ := settled(b, in)
		if aOK != bOK {
			return aOK
		}
		if !a.ReadySince.Equal(b.ReadySince) {
			return a.ReadySince.Before(b.ReadySince)
		}
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Name < b.Name
	})
	return ranked[0]
}

func groupComplete(shards map[int32][]ObservedPod, total int32) bool {
	for s := int32(0); s < total; s++ {
		ready := false
		for _, pod := range shards[s] {
			ready = ready || pod.Ready
		}
		if !ready {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[int32]V) []int32 {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// NextPodName is the name for a new pod of shard `shard` at revision `rev`:
// the base name, or, when a pod that is being deleted, has failed or was
// edited still holds it, the base name with the first free "-N" suffix. The
// choice depends only on the observed names, so two passes that see the same
// pods pick the same name and the second create meets AlreadyExists.
func NextPodName(name string, shard int32, rev string, held map[string]bool) string {
	base := ShardPodName(name, shard, rev)
	if !held[base] {
		return base
	}
	for i := 1; ; i++ {
		n := base + "-" + itoa(int32(i))
		if !held[n] {
			return n
		}
	}
}
