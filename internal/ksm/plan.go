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
// deleted once another complete generation has settled. The steps, in order:
// sort the pods into generations (dropping what serves nothing), see how far
// each shard of the target generation is, create what the shards need, retire
// what the settled target replaces, and retire other generations once the
// target has settled.
func ComputePlan(in PlanInput) Plan {
	var p Plan
	groups, gone := groupPods(in.Pods)
	p.Delete = gone
	for total, shards := range groups {
		if groupComplete(shards, total) {
			p.AnyGroupComplete = true
		}
	}
	if in.Total == 0 {
		return switchOff(p, groups, in)
	}

	target := groups[in.Total]
	states := shardStates(target, in, &p)
	p.Create = creations(states, in)
	p.Delete = append(p.Delete, replacedWithinShards(target, states, in)...)
	p.Delete = append(p.Delete, retiredGroups(groups, in, &p)...)
	p.RetireDeployment = p.TargetSettled
	p.Converged = converged(p, target, in)
	return p
}

// groupPods sorts the active shard pods by generation (total) and shard, and
// returns the pods that serve nothing and go at once: failed, on a lost
// node, or with arguments that name no valid shard. Pods being deleted are
// neither: they serve nothing we can count on and their names do not block
// a replacement (see NextPodName).
func groupPods(pods []ObservedPod) (map[int32]map[int32][]ObservedPod, []Deletion) {
	groups := map[int32]map[int32][]ObservedPod{}
	var gone []Deletion
	for _, pod := range pods {
		switch {
		case pod.Terminal:
			gone = append(gone, Deletion{pod.Name, DeleteTerminal})
		case pod.Lost:
			gone = append(gone, Deletion{pod.Name, DeleteNodeLost})
		case !pod.Active:
		case pod.Total < 1 || pod.Shard < 0 || pod.Shard >= pod.Total:
			gone = append(gone, Deletion{pod.Name, DeleteInvalid})
		default:
			if groups[pod.Total] == nil {
				groups[pod.Total] = map[int32][]ObservedPod{}
			}
			groups[pod.Total][pod.Shard] = append(groups[pod.Total][pod.Shard], pod)
		}
	}
	return groups, gone
}

// switchOff is the plan with sharding off: every shard pod goes once the
// Deployment has taken over.
func switchOff(p Plan, groups map[int32]map[int32][]ObservedPod, in PlanInput) Plan {
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

// shardState is how far one shard of the target generation is.
type shardState struct {
	covered    bool // has a Ready pod of any revision
	hasNew     bool // has an active pod of the target revision
	newSettled bool // ... that has been Ready for the settle time
}

// shardStates reads each target shard's pods, sets p.TargetSettled and
// p.RequeueAfter (the earliest pending settle).
func shardStates(target map[int32][]ObservedPod, in PlanInput, p *Plan) []shardState {
	p.TargetSettled = true
	states := make([]shardState, in.Total)
	for s := int32(0); s < in.Total; s++ {
		st := &states[s]
		anySettled := false
		for _, pod := range target[s] {
			ok, left := settled(pod, in)
			if left > 0 && (p.RequeueAfter == 0 || left < p.RequeueAfter) {
				p.RequeueAfter = left
			}
			st.covered = st.covered || pod.Ready
			anySettled = anySettled || ok
			if pod.Revision == in.Revision {
				st.hasNew = true
				st.newSettled = st.newSettled || ok
			}
		}
		if !anySettled {
			p.TargetSettled = false
		}
	}
	return states
}

// creations lists the shards that get a target-revision pod now: every
// shard that nothing serves (healing, first start, a new generation: there
// is nothing to protect by waiting), and, while the surge allows, shards
// still served by an older revision (a rollout). Target-revision pods that
// have not settled yet count against the surge.
func creations(states []shardState, in PlanInput) []int32 {
	inFlight := int32(0)
	for _, st := range states {
		if st.hasNew && !st.newSettled {
			inFlight++
		}
	}
	var create []int32
	for s, st := range states {
		switch {
		case st.hasNew:
		case !st.covered:
			create = append(create, int32(s))
			inFlight++
		case inFlight < in.MaxSurge:
			create = append(create, int32(s))
			inFlight++
		}
	}
	return create
}

// replacedWithinShards: once a shard's target-revision pod has settled,
// every other pod of that shard goes, older revisions and duplicates alike.
func replacedWithinShards(target map[int32][]ObservedPod, states []shardState, in PlanInput) []Deletion {
	var out []Deletion
	for s := int32(0); s < in.Total; s++ {
		if !states[s].newSettled {
			continue
		}
		keep := bestPod(target[s], in)
		for _, pod := range target[s] {
			if pod.Name == keep.Name {
				continue
			}
			reason := DeleteReplaced
			if pod.Revision == in.Revision {
				reason = DeleteDuplicate
			}
			out = append(out, Deletion{pod.Name, reason})
		}
	}
	return out
}

// retiredGroups counts the generations other than the target in
// p.OtherGroups and, once the target has settled and so can take over all
// objects, retires all of their pods.
func retiredGroups(groups map[int32]map[int32][]ObservedPod, in PlanInput, p *Plan) []Deletion {
	var out []Deletion
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
				out = append(out, Deletion{pod.Name, DeleteOldGroup})
			}
		}
	}
	return out
}

// converged: exactly the target generation at the target revision exists,
// one settled pod per shard, and nothing is left to create or delete.
func converged(p Plan, target map[int32][]ObservedPod, in PlanInput) bool {
	if !p.TargetSettled || p.OtherGroups > 0 || len(p.Create) > 0 || len(p.Delete) > 0 {
		return false
	}
	for s := int32(0); s < in.Total; s++ {
		if len(target[s]) != 1 || target[s][0].Revision != in.Revision {
			return false
		}
	}
	return true
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
