package ksm

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// now is the clock of every plan test; minReady the settle time.
var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const minReady = 30 * time.Second

// Revisions used by the plan tests. They are opaque strings to ComputePlan.
const (
	revR   = "rrrrrrrrrr"
	revOld = "oooooooooo"
	rev3   = "3333333333"
	rev5   = "5555555555"
	rev7   = "7777777777"
)

type podOpt func(*ObservedPod)

// readyFor makes the pod Ready since d ago.
func readyFor(d time.Duration) podOpt {
	return func(p *ObservedPod) { p.Ready, p.ReadySince = true, now.Add(-d) }
}

// settledOpt: Ready for well over the settle time.
var settledOpt = readyFor(10 * time.Minute)

// terminal: Failed or Succeeded and not being deleted, as observePod reports it.
func terminal(p *ObservedPod) { p.Terminal, p.Active, p.Ready = true, false, false }

// lost: its node is gone, as the reconciler reports it.
func lost(p *ObservedPod) { p.Lost, p.Active, p.Ready = true, false, false }

// deleting: has a deletionTimestamp; its Ready condition may still be True.
func deleting(p *ObservedPod) { p.Active = false }

func createdAgo(d time.Duration) podOpt { return func(p *ObservedPod) { p.Created = now.Add(-d) } }

// opod is an active, not yet Ready pod serving shard/total at revision rev.
func opod(name string, shard, total int32, rev string, opts ...podOpt) ObservedPod {
	p := ObservedPod{Name: name, Shard: shard, Total: total, Revision: rev, Active: true, Created: now.Add(-time.Hour)}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// generation is one pod per shard of total, named <prefix>-<shard>.
func generation(prefix string, total int32, rev string, opts ...podOpt) []ObservedPod {
	var out []ObservedPod
	for s := int32(0); s < total; s++ {
		out = append(out, opod(fmt.Sprintf("%s-%d", prefix, s), s, total, rev, opts...))
	}
	return out
}

func pods(groups ...[]ObservedPod) []ObservedPod {
	var out []ObservedPod
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func del(reason string, names ...string) []Deletion {
	var out []Deletion
	for _, n := range names {
		out = append(out, Deletion{Name: n, Reason: reason})
	}
	return out
}

func dels(ds ...[]Deletion) []Deletion {
	var out []Deletion
	for _, d := range ds {
		out = append(out, d...)
	}
	return out
}

// The order of deletions is not part of the contract; creations are listed
// by ascending ordinal.
var planCmp = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b Deletion) bool { return a.Name < b.Name }),
}

func TestComputePlan(t *testing.T) {
	// in fills in the clock, the settle time and a surge of 1 unless given.
	type input struct {
		pods           []ObservedPod
		total          int32
		rev            string
		maxSurge       int32
		minReady       *time.Duration
		otherModeReady bool
	}
	zero := time.Duration(0)

	tests := []struct {
		name string
		in   input
		want Plan
	}{
		// First start and steady state.
		{
			name: "first start creates every shard at once",
			in:   input{total: 3, rev: revR},
			want: Plan{Create: []int32{0, 1, 2}},
		},
		{
			name: "first start creates every shard at once whatever the surge",
			in:   input{total: 5, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{0, 1, 2, 3, 4}},
		},
		{
			name: "first start: pods created but not Ready yet",
			in:   input{pods: generation("r", 3, revR), total: 3, rev: revR},
			want: Plan{},
		},
		{
			name: "first start: pods Ready but not settled wait for the earliest to settle",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 3, revR, readyFor(10*time.Second)),
				opod("r-1", 1, 3, revR, readyFor(25*time.Second)),
				opod("r-2", 2, 3, revR, readyFor(12*time.Second)),
			}, total: 3, rev: revR},
			want: Plan{RequeueAfter: 5 * time.Second, AnyGroupComplete: true},
		},
		{
			name: "converged: one settled pod per shard of the target revision",
			in:   input{pods: generation("r", 3, revR, settledOpt), total: 3, rev: revR},
			want: Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "settled exactly at the settle time",
			in:   input{pods: generation("r", 2, revR, readyFor(minReady)), total: 2, rev: revR},
			want: Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "one nanosecond short of the settle time",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 2, revR, settledOpt),
				opod("r-1", 1, 2, revR, readyFor(minReady-time.Nanosecond)),
			}, total: 2, rev: revR},
			want: Plan{RequeueAfter: time.Nanosecond, AnyGroupComplete: true},
		},
		{
			name: "settle time zero: Ready is settled",
			in:   input{pods: generation("r", 2, revR, readyFor(0)), total: 2, rev: revR, minReady: &zero},
			want: Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true, RetireDeployment: true},
		},

		// Rollout (image, resources, arguments) with maxSurge 1.
		{
			name: "rollout surge 1: all shards on the old revision, create shard 0 only",
			in:   input{pods: generation("old", 3, revOld, settledOpt), total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{0}, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout surge 1: shard 0's new pod not Ready yet, nothing else happens",
			in: input{pods: pods(generation("old", 3, revOld, settledOpt),
				[]ObservedPod{opod("new-0", 0, 3, revR)}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout surge 1: shard 0's new pod Ready, not settled: wait the time left",
			in: input{pods: pods(generation("old", 3, revOld, settledOpt),
				[]ObservedPod{opod("new-0", 0, 3, revR, readyFor(10*time.Second))}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{RequeueAfter: 20 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout surge 1: shard 0's new pod settled: delete its old pod, create shard 1",
			in: input{pods: pods(generation("old", 3, revOld, settledOpt),
				[]ObservedPod{opod("new-0", 0, 3, revR, readyFor(31*time.Second))}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{
				Create:        []int32{1},
				Delete:        del(DeleteReplaced, "old-0"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "rollout surge 1: shard 1's new pod unsettled after shard 0 done",
			in: input{pods: []ObservedPod{
				opod("new-0", 0, 3, revR, settledOpt),
				opod("old-1", 1, 3, revOld, settledOpt),
				opod("new-1", 1, 3, revR, readyFor(1*time.Second)),
				opod("old-2", 2, 3, revOld, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{RequeueAfter: 29 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout: last shard settled, last old pod goes",
			in: input{pods: pods(generation("new", 3, revR, settledOpt),
				[]ObservedPod{opod("old-2", 2, 3, revOld, settledOpt)}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteReplaced, "old-2"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "rollout: an old pod that is not Ready goes too once its shard's new pod settled",
			in: input{pods: pods(generation("new", 2, revR, settledOpt),
				[]ObservedPod{opod("old-1", 1, 2, revOld)}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteReplaced, "old-1"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},

		// Rollout with a bigger surge.
		{
			name: "rollout surge 2: two shards at once",
			in:   input{pods: generation("old", 4, revOld, settledOpt), total: 4, rev: revR, maxSurge: 2},
			want: Plan{Create: []int32{0, 1}, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout surge 2: one new pod in flight leaves room for one more",
			in: input{pods: pods(generation("old", 4, revOld, settledOpt),
				[]ObservedPod{opod("new-0", 0, 4, revR, readyFor(5*time.Second))}), total: 4, rev: revR, maxSurge: 2},
			want: Plan{Create: []int32{1}, RequeueAfter: 25 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout surge 2: two new pods in flight, nothing more",
			in: input{pods: pods(generation("old", 4, revOld, settledOpt), []ObservedPod{
				opod("new-0", 0, 4, revR, readyFor(5*time.Second)),
				opod("new-1", 1, 4, revR),
			}), total: 4, rev: revR, maxSurge: 2},
			want: Plan{RequeueAfter: 25 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "rollout: surge larger than the shard count replaces all at once",
			in:   input{pods: generation("old", 3, revOld, settledOpt), total: 3, rev: revR, maxSurge: 10},
			want: Plan{Create: []int32{0, 1, 2}, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},

		// Resharding 3 -> 5.
		{
			name: "reshard 3->5: whole new generation created at once, old one kept",
			in:   input{pods: generation("g3", 3, rev3, settledOpt), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{Create: []int32{0, 1, 2, 3, 4}, OtherGroups: 1, AnyGroupComplete: true},
		},
		{
			name: "reshard 3->5: new generation partly Ready, old one kept",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, settledOpt),
				opod("g5-1", 1, 5, rev5, settledOpt),
				opod("g5-2", 2, 5, rev5),
				opod("g5-3", 3, 5, rev5),
				opod("g5-4", 4, 5, rev5, readyFor(20*time.Second)),
			}), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{RequeueAfter: 10 * time.Second, OtherGroups: 1, AnyGroupComplete: true},
		},
		{
			name: "reshard 3->5: new generation all Ready but not settled, delete nothing",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt),
				generation("g5", 5, rev5, readyFor(10*time.Second))), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{RequeueAfter: 20 * time.Second, OtherGroups: 1, AnyGroupComplete: true},
		},
		{
			name: "reshard 3->5: all but one settled, delete nothing",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt),
				[]ObservedPod{
					opod("g5-0", 0, 5, rev5, settledOpt),
					opod("g5-1", 1, 5, rev5, settledOpt),
					opod("g5-2", 2, 5, rev5, settledOpt),
					opod("g5-3", 3, 5, rev5, settledOpt),
					opod("g5-4", 4, 5, rev5, readyFor(29*time.Second)),
				}), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{RequeueAfter: 1 * time.Second, OtherGroups: 1, AnyGroupComplete: true},
		},
		{
			name: "reshard 3->5: new generation settled, old generation retired",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt),
				generation("g5", 5, rev5, readyFor(30*time.Second))), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteOldGroup, "g3-0", "g3-1", "g3-2"),
				TargetSettled: true, OtherGroups: 1, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "reshard 3->5: old generation gone, converged",
			in:   input{pods: generation("g5", 5, rev5, settledOpt), total: 5, rev: rev5},
			want: Plan{TargetSettled: true, Converged: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "reshard 5->3: shrinking works the same way",
			in:   input{pods: pods(generation("g5", 5, rev5, settledOpt), generation("g3", 3, rev3, readyFor(5*time.Second))), total: 3, rev: rev3},
			want: Plan{RequeueAfter: 25 * time.Second, OtherGroups: 1, AnyGroupComplete: true},
		},

		// A second change mid-way: 3 -> 5 -> 7.
		{
			name: "3->5->7: group 3 complete, group 5 partial, target 7 empty: create 7, keep both",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, settledOpt),
				opod("g5-1", 1, 5, rev5, readyFor(time.Second)),
				opod("g5-2", 2, 5, rev5),
			}), total: 7, rev: rev7, maxSurge: 1},
			want: Plan{Create: []int32{0, 1, 2, 3, 4, 5, 6}, OtherGroups: 2, AnyGroupComplete: true},
		},
		{
			name: "3->5->7: group 7 all Ready, not settled: group 3 and 5 stay",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, settledOpt),
				opod("g5-1", 1, 5, rev5, settledOpt),
			}, generation("g7", 7, rev7, readyFor(15*time.Second))), total: 7, rev: rev7, maxSurge: 1},
			want: Plan{RequeueAfter: 15 * time.Second, OtherGroups: 2, AnyGroupComplete: true},
		},
		{
			name: "3->5->7: group 7 partly settled: group 3 and 5 stay",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, settledOpt),
			}, []ObservedPod{
				opod("g7-0", 0, 7, rev7, settledOpt),
				opod("g7-1", 1, 7, rev7, settledOpt),
				opod("g7-2", 2, 7, rev7, settledOpt),
				opod("g7-3", 3, 7, rev7, settledOpt),
				opod("g7-4", 4, 7, rev7, settledOpt),
				opod("g7-5", 5, 7, rev7, settledOpt),
			}), total: 7, rev: rev7, maxSurge: 1},
			want: Plan{Create: []int32{6}, OtherGroups: 2, AnyGroupComplete: true},
		},
		{
			name: "3->5->7: group 7 settled: groups 3 and 5 both go",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, settledOpt),
				opod("g5-1", 1, 5, rev5, readyFor(time.Second)),
				opod("g5-2", 2, 5, rev5),
			}, generation("g7", 7, rev7, settledOpt)), total: 7, rev: rev7, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteOldGroup, "g3-0", "g3-1", "g3-2", "g5-0", "g5-1", "g5-2"),
				TargetSettled: true, OtherGroups: 2, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "back to the previous count: target 3 complete and settled, partial 5 goes",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, readyFor(2*time.Second)),
				opod("g5-1", 1, 5, rev5),
			}), total: 3, rev: rev3, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteOldGroup, "g5-0", "g5-1"),
				TargetSettled: true, OtherGroups: 1, AnyGroupComplete: true, RetireDeployment: true,
			},
		},

		// Terminal, deleted and invalid pods.
		{
			name: "terminal pod is deleted and its shard gets a new pod at once",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 3, revR, settledOpt),
				opod("r-1", 1, 3, revR, terminal),
				opod("r-2", 2, 3, revR, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{1}, Delete: del(DeleteTerminal, "r-1")},
		},
		{
			name: "pod on a vanished node is deleted and its shard gets a new pod at once",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 3, revR, settledOpt),
				opod("r-1", 1, 3, revR, lost),
				opod("r-2", 2, 3, revR, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{1}, Delete: del(DeleteNodeLost, "r-1")},
		},
		{
			name: "terminal pods of an old generation are deleted at once too",
			in: input{pods: pods([]ObservedPod{
				opod("g3-0", 0, 3, rev3, terminal),
			}, generation("g5", 5, rev5, readyFor(time.Second))), total: 5, rev: rev5, maxSurge: 1},
			want: Plan{Delete: del(DeleteTerminal, "g3-0"), RequeueAfter: 29 * time.Second, AnyGroupComplete: true},
		},
		{
			name: "pod being deleted does not count: its shard gets a replacement at once",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 3, revR, settledOpt),
				opod("r-1", 1, 3, revR, settledOpt, deleting),
				opod("r-2", 2, 3, revR, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{1}},
		},
		{
			name: "pod being deleted during a rollout with the surge used up: still replaced at once",
			in: input{pods: []ObservedPod{
				opod("old-0", 0, 3, revOld, settledOpt),
				opod("new-0", 0, 3, revR, readyFor(time.Second)),
				opod("old-1", 1, 3, revOld, settledOpt, deleting),
				opod("old-2", 2, 3, revOld, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{1}, RequeueAfter: 29 * time.Second},
		},
		{
			name: "invalid shard arguments are deleted",
			in: input{pods: pods(generation("r", 2, revR, settledOpt), []ObservedPod{
				opod("no-total", 0, 0, revR, settledOpt),
				opod("shard-too-big", 2, 2, revR, settledOpt),
				opod("negative-shard", -1, 2, revR, settledOpt),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteInvalid, "no-total", "shard-too-big", "negative-shard"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},

		// Duplicates of the target revision for one shard.
		{
			name: "duplicates, none settled: keep both for now",
			in: input{pods: pods(generation("r", 2, revR, settledOpt)[1:], []ObservedPod{
				opod("dup-a", 0, 2, revR, readyFor(10*time.Second)),
				opod("dup-b", 0, 2, revR),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{RequeueAfter: 20 * time.Second, AnyGroupComplete: true},
		},
		{
			name: "duplicates, one settled: the other goes",
			in: input{pods: pods(generation("r", 2, revR, settledOpt)[1:], []ObservedPod{
				opod("dup-a", 0, 2, revR, readyFor(10*time.Second), createdAgo(time.Hour)),
				opod("dup-b", 0, 2, revR, settledOpt, createdAgo(2*time.Hour)),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:       del(DeleteDuplicate, "dup-a"),
				RequeueAfter: 20 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "duplicates, both settled: the one Ready longest stays",
			in: input{pods: pods(generation("r", 2, revR, settledOpt)[1:], []ObservedPod{
				opod("dup-a", 0, 2, revR, readyFor(5*time.Minute)),
				opod("dup-b", 0, 2, revR, readyFor(50*time.Minute)),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteDuplicate, "dup-a"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "duplicates, both settled at the same instant: the oldest stays",
			in: input{pods: pods(generation("r", 2, revR, settledOpt)[1:], []ObservedPod{
				opod("dup-a", 0, 2, revR, settledOpt, createdAgo(time.Hour)),
				opod("dup-b", 0, 2, revR, settledOpt, createdAgo(2*time.Hour)),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteDuplicate, "dup-a"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},
		{
			name: "duplicate and old pod of one shard: both go once one new pod settled",
			in: input{pods: pods(generation("r", 2, revR, settledOpt)[1:], []ObservedPod{
				opod("old-0", 0, 2, revOld, settledOpt),
				opod("dup-a", 0, 2, revR, settledOpt),
				opod("dup-b", 0, 2, revR),
			}), total: 2, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        dels(del(DeleteReplaced, "old-0"), del(DeleteDuplicate, "dup-b")),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},

		// A pod edited by someone else (revision "").
		{
			name: "edited pod is replaced like an old revision, within the surge",
			in: input{pods: pods(generation("r", 3, revR, settledOpt)[1:], []ObservedPod{
				opod("edited-0", 0, 3, "", settledOpt),
			}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{0}, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "edited pod waits while the surge is used by another shard",
			in: input{pods: []ObservedPod{
				opod("edited-0", 0, 3, "", settledOpt),
				opod("old-1", 1, 3, revOld, settledOpt),
				opod("new-1", 1, 3, revR, readyFor(20*time.Second)),
				opod("new-2", 2, 3, revR, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{RequeueAfter: 10 * time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "edited pod kept while its replacement settles",
			in: input{pods: pods(generation("r", 3, revR, settledOpt)[1:], []ObservedPod{
				opod("edited-0", 0, 3, "", settledOpt),
				opod("new-0", 0, 3, revR, readyFor(29*time.Second)),
			}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{RequeueAfter: time.Second, TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true},
		},
		{
			name: "edited pod deleted once its replacement settled",
			in: input{pods: pods(generation("r", 3, revR, settledOpt)[1:], []ObservedPod{
				opod("edited-0", 0, 3, "", settledOpt),
				opod("new-0", 0, 3, revR, readyFor(30*time.Second)),
			}), total: 3, rev: revR, maxSurge: 1},
			want: Plan{
				Delete:        del(DeleteReplaced, "edited-0"),
				TargetSettled: true, AnyGroupComplete: true, RetireDeployment: true,
			},
		},

		// Healing during a rollout.
		{
			name: "healing during rollout: a shard whose only pod is not Ready gets its new pod although the surge is used",
			in: input{pods: []ObservedPod{
				opod("old-0", 0, 3, revOld, settledOpt),
				opod("new-0", 0, 3, revR, readyFor(10*time.Second)),
				opod("old-1", 1, 3, revOld, settledOpt),
				opod("old-2", 2, 3, revOld),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{2}, RequeueAfter: 20 * time.Second, AnyGroupComplete: false},
		},
		{
			name: "healing during rollout: a shard with no pod at all gets its new pod at once",
			in: input{pods: []ObservedPod{
				opod("old-0", 0, 3, revOld, settledOpt),
				opod("new-0", 0, 3, revR),
				opod("old-1", 1, 3, revOld, settledOpt),
			}, total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{2}},
		},
		{
			name: "healing: a missing shard of a converged generation is recreated",
			in:   input{pods: pods(generation("r", 3, revR, settledOpt)[:2]), total: 3, rev: revR, maxSurge: 1},
			want: Plan{Create: []int32{2}},
		},
		{
			name: "not Ready pod of the target revision is not duplicated",
			in: input{pods: []ObservedPod{
				opod("r-0", 0, 2, revR, settledOpt),
				opod("r-1", 1, 2, revR),
			}, total: 2, rev: revR, maxSurge: 1},
			want: Plan{},
		},

		// Sharding switched off (target 0).
		{
			name: "sharding off: shard pods stay until the Deployment has taken over",
			in:   input{pods: generation("g3", 3, rev3, settledOpt), total: 0, otherModeReady: false},
			want: Plan{OtherGroups: 1, AnyGroupComplete: true},
		},
		{
			name: "sharding off: every shard pod goes once the Deployment is ready",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("g5-0", 0, 5, rev5, readyFor(time.Second)),
			}), total: 0, otherModeReady: true},
			want: Plan{
				Delete:      del(DeleteModeSwitch, "g3-0", "g3-1", "g3-2", "g5-0"),
				OtherGroups: 2, AnyGroupComplete: true,
			},
		},
		{
			name: "sharding off: terminal and invalid pods go at once",
			in: input{pods: pods(generation("g3", 3, rev3, settledOpt), []ObservedPod{
				opod("failed", 0, 3, rev3, terminal),
				opod("bad", 4, 3, rev3, settledOpt),
			}), total: 0, otherModeReady: false},
			want: Plan{
				Delete:      dels(del(DeleteTerminal, "failed"), del(DeleteInvalid, "bad")),
				OtherGroups: 1, AnyGroupComplete: true,
			},
		},
		{
			name: "sharding off and no shard pods left: converged",
			in:   input{pods: generation("g3", 3, rev3, deleting), total: 0, otherModeReady: true},
			want: Plan{Converged: true},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := PlanInput{
				Pods:           tc.in.pods,
				Total:          tc.in.total,
				Revision:       tc.in.rev,
				MinReady:       minReady,
				MaxSurge:       tc.in.maxSurge,
				Now:            now,
				OtherModeReady: tc.in.otherModeReady,
			}
			if in.MaxSurge == 0 {
				in.MaxSurge = 1
			}
			if tc.in.minReady != nil {
				in.MinReady = *tc.in.minReady
			}
			got := ComputePlan(in)
			if diff := cmp.Diff(tc.want, got, planCmp...); diff != "" {
				t.Errorf("ComputePlan() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestComputePlanRollout drives a whole rollout pass by pass, acting on each
// plan the way the reconciler does, and checks that every shard is served by
// a Ready pod at every step and that the rollout ends converged.
func TestComputePlanRollout(t *testing.T) {
	for _, surge := range []int32{1, 2, 5} {
		t.Run(fmt.Sprintf("maxSurge=%d", surge), func(t *testing.T) {
			const total = 5
			clock := now
			live := map[string]ObservedPod{}
			for s := int32(0); s < total; s++ {
				p := opod(fmt.Sprintf("old-%d", s), s, total, revOld)
				p.Ready, p.ReadySince = true, clock.Add(-time.Hour)
				live[p.Name] = p
			}
			maxInFlight := 0
			for step := 0; ; step++ {
				if step > 100 {
					t.Fatal("rollout did not converge in 100 passes")
				}
				var ps []ObservedPod
				for _, p := range live {
					ps = append(ps, p)
				}
				slices.SortFunc(ps, func(a, b ObservedPod) int { return strings.Compare(a.Name, b.Name) })
				plan := ComputePlan(PlanInput{Pods: ps, Total: total, Revision: revR, MinReady: minReady, MaxSurge: surge, Now: clock})
				if plan.Converged {
					for _, p := range live {
						if p.Revision != revR {
							t.Fatalf("converged with pod %s of revision %q left", p.Name, p.Revision)
						}
					}
					if len(live) != total {
						t.Fatalf("converged with %d pods, want %d", len(live), total)
					}
					break
				}
				for _, d := range plan.Delete {
					if d.Reason != DeleteReplaced {
						t.Fatalf("step %d: unexpected deletion %+v", step, d)
					}
					delete(live, d.Name)
				}
				for _, s := range plan.Create {
					p := opod(fmt.Sprintf("new-%d", s), s, total, revR)
					live[p.Name] = p
				}
				// Every shard still has a Ready pod after the pass.
				for s := int32(0); s < total; s++ {
					ok := false
					for _, p := range live {
						ok = ok || (p.Shard == s && p.Ready)
					}
					if !ok {
						t.Fatalf("step %d: shard %d has no Ready pod", step, s)
					}
				}
				inFlight := 0
				for _, p := range live {
					if p.Revision == revR && (!p.Ready || clock.Sub(p.ReadySince) < minReady) {
						inFlight++
					}
				}
				if inFlight > int(surge) {
					t.Fatalf("step %d: %d new pods in flight, surge is %d", step, inFlight, surge)
				}
				maxInFlight = max(maxInFlight, inFlight)
				// Time passes: new pods become Ready, then settle.
				clock = clock.Add(20 * time.Second)
				for n, p := range live {
					if !p.Ready {
						p.Ready, p.ReadySince = true, clock
						live[n] = p
					}
				}
			}
			if want := min(int(surge), total); maxInFlight != want {
				t.Errorf("at most %d new pods were in flight at once, want %d", maxInFlight, want)
			}
		})
	}
}

// TestComputePlanInvariants checks, over many random observations, the
// promises that keep every object exported: a complete generation other
// than the target is never deleted before the target has settled, and the
// last Ready pod of a target shard is never deleted.
func TestComputePlanInvariants(t *testing.T) {
	rng := rand.New(rand.NewSource(20250301))
	const cases = 2000
	exercised := map[string]int{}
	for i := 0; i < cases; i++ {
		in := randomPlanInput(rng)
		plan := ComputePlan(in)
		name := fmt.Sprintf("case %d (total %d, surge %d, %d pods)", i, in.Total, in.MaxSurge, len(in.Pods))

		byName := map[string]ObservedPod{}
		for _, p := range in.Pods {
			byName[p.Name] = p
		}
		deleted := map[string]bool{}
		for _, d := range plan.Delete {
			if _, ok := byName[d.Name]; !ok {
				t.Fatalf("%s: deletes unknown pod %q", name, d.Name)
			}
			if deleted[d.Name] {
				t.Fatalf("%s: deletes %q twice", name, d.Name)
			}
			deleted[d.Name] = true
		}

		// TargetSettled, recomputed from the observation.
		wantSettled := true
		for s := int32(0); s < in.Total; s++ {
			ok := false
			for _, p := range in.Pods {
				if p.Active && p.Total == in.Total && p.Shard == s && p.Ready && !now.Before(p.ReadySince.Add(in.MinReady)) {
					ok = true
				}
			}
			wantSettled = wantSettled && ok
		}
		if plan.TargetSettled != wantSettled {
			t.Fatalf("%s: TargetSettled = %v, want %v\npods: %+v", name, plan.TargetSettled, wantSettled, in.Pods)
		}

		// Invariant 1: a complete generation other than the target survives
		// until the target has settled.
		for total := int32(2); total <= 6; total++ {
			if total == in.Total || !completeGroup(in.Pods, total) {
				continue
			}
			if !plan.TargetSettled {
				exercised["complete other group, target unsettled"]++
			}
			for _, p := range in.Pods {
				if p.Active && p.Total == total && deleted[p.Name] && !plan.TargetSettled {
					t.Fatalf("%s: deletes %s of complete generation %d before the target settled\npods: %+v\nplan: %+v",
						name, p.Name, total, in.Pods, plan)
				}
			}
		}
		// Invariant 2: a target shard served by a Ready pod keeps one.
		for s := int32(0); s < in.Total; s++ {
			readyBefore, readyAfter := 0, 0
			for _, p := range in.Pods {
				if p.Active && p.Ready && p.Total == in.Total && p.Shard == s {
					readyBefore++
					if !deleted[p.Name] {
						readyAfter++
					}
				}
			}
			if readyBefore > 0 && readyAfter == 0 {
				t.Fatalf("%s: deletes every Ready pod of target shard %d\npods: %+v\nplan: %+v", name, s, in.Pods, plan)
			}
			if readyBefore > 1 && readyAfter < readyBefore {
				exercised["Ready pod of a target shard deleted, another kept"]++
			}
		}
		// Creations: in range, once each, never for a shard that has an
		// active pod of the target revision.
		seen := map[int32]bool{}
		for _, s := range plan.Create {
			if s < 0 || s >= in.Total || seen[s] {
				t.Fatalf("%s: bad or repeated creation for shard %d: %v", name, s, plan.Create)
			}
			seen[s] = true
			for _, p := range in.Pods {
				if p.Active && p.Total == in.Total && p.Shard == s && p.Revision == in.Revision {
					t.Fatalf("%s: creates shard %d which already has %s of the target revision", name, s, p.Name)
				}
			}
		}
		if plan.Converged && (len(plan.Create) > 0 || len(plan.Delete) > 0) {
			t.Fatalf("%s: converged but plan has work: %+v", name, plan)
		}
		if plan.RetireDeployment != plan.TargetSettled {
			t.Fatalf("%s: RetireDeployment %v != TargetSettled %v", name, plan.RetireDeployment, plan.TargetSettled)
		}
		if plan.TargetSettled {
			exercised["target settled"]++
		}
	}
	t.Logf("exercised: %v", exercised)
	// The random inputs must actually reach the interesting states.
	for _, k := range []string{"complete other group, target unsettled", "Ready pod of a target shard deleted, another kept", "target settled"} {
		if exercised[k] < 20 {
			t.Errorf("only %d cases with %q; the generator does not exercise the invariant", exercised[k], k)
		}
	}
}

func completeGroup(ps []ObservedPod, total int32) bool {
	for s := int32(0); s < total; s++ {
		ok := false
		for _, p := range ps {
			ok = ok || (p.Active && p.Ready && p.Total == total && p.Shard == s)
		}
		if !ok {
			return false
		}
	}
	return true
}

// randomPlanInput makes a plausible observation: a target of 2..6 shards,
// pods of the target and of other generations with random revisions and
// states, often with a complete older generation.
func randomPlanInput(rng *rand.Rand) PlanInput {
	total := int32(2 + rng.Intn(5))
	in := PlanInput{Total: total, Revision: revR, MinReady: minReady, MaxSurge: int32(1 + rng.Intn(3)), Now: now}
	n := 0
	add := func(shard, tot int32) {
		revs := []string{revR, revOld, ""}
		p := ObservedPod{
			Name: fmt.Sprintf("p%d", n), Shard: shard, Total: tot, Revision: revs[rng.Intn(len(revs))],
			Active: true, Created: now.Add(-time.Duration(rng.Intn(3600)) * time.Second),
		}
		n++
		switch r := rng.Intn(10); {
		case r == 0:
			p.Terminal, p.Active = true, false
		case r == 1:
			p.Active = false
			p.Ready = rng.Intn(2) == 0
		default:
			p.Ready = rng.Intn(10) < 7
		}
		if p.Ready {
			// Ready for 0..60s: about half settled.
			p.ReadySince = now.Add(-time.Duration(rng.Intn(61)) * time.Second)
		}
		in.Pods = append(in.Pods, p)
	}
	// Sometimes a full older generation, mostly Ready.
	if rng.Intn(2) == 0 {
		other := int32(2 + rng.Intn(5))
		for s := int32(0); s < other; s++ {
			add(s, other)
		}
	}
	// Random pods of the target and other generations.
	for k := rng.Intn(12); k > 0; k-- {
		tot := total
		if rng.Intn(3) == 0 {
			tot = int32(2 + rng.Intn(5))
		}
		add(int32(rng.Intn(int(tot))), tot)
	}
	// Sometimes every target shard has a pod, so the target can settle.
	if rng.Intn(2) == 0 {
		for s := int32(0); s < total; s++ {
			add(s, total)
		}
	}
	rng.Shuffle(len(in.Pods), func(i, j int) { in.Pods[i], in.Pods[j] = in.Pods[j], in.Pods[i] })
	return in
}

func TestNextPodName(t *testing.T) {
	base := "kube-state-metrics-prod-shard-2-0123456789"
	tests := []struct {
		name string
		held []string
		want string
	}{
		{name: "nothing held", held: nil, want: base},
		{name: "other names held", held: []string{"kube-state-metrics-prod-shard-1-0123456789", base + "-1"}, want: base},
		{name: "base held", held: []string{base}, want: base + "-1"},
		{name: "base and -1 held", held: []string{base, base + "-1"}, want: base + "-2"},
		{name: "first free suffix wins", held: []string{base, base + "-2"}, want: base + "-1"},
		{name: "many held", held: []string{base, base + "-1", base + "-2", base + "-3", base + "-4", base + "-5", base + "-6", base + "-7", base + "-8", base + "-9", base + "-10"}, want: base + "-11"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			held := map[string]bool{}
			for _, h := range tc.held {
				held[h] = true
			}
			got := NextPodName("prod", 2, "0123456789", held)
			if got != tc.want {
				t.Errorf("NextPodName() = %q, want %q", got, tc.want)
			}
			if again := NextPodName("prod", 2, "0123456789", held); again != got {
				t.Errorf("NextPodName() not deterministic: %q then %q", got, again)
			}
		})
	}
	t.Run("nil map", func(t *testing.T) {
		if got := NextPodName("prod", 2, "0123456789", nil); got != base {
			t.Errorf("NextPodName(nil) = %q, want %q", got, base)
		}
	})
}
