package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// printTable writes the side-by-side table of every size measured so far.
func printTable(out io.Writer, r Results) {
	fmt.Fprintf(out, "\nksm-scale-operator vs kube-state-metrics StatefulSet autosharding\n")
	fmt.Fprintf(out, "machine: %s\n", r.Machine)
	fmt.Fprintf(out, "every pod (both sides) starts in %s (kwok Stage delay); KSMScale settle (minReadySeconds) %s, maxSurge %d; steady period %s\n",
		r.StartupDelay, r.Settle, r.MaxSurge, r.Steady)
	for _, s := range r.Sizes {
		op := s.Operator
		fmt.Fprintf(out, "\n== %d nodes, %d workload pods (%d pods in the cluster; the operator's pod cache selects %d)\n",
			s.Nodes, s.WorkloadPods, op.PodsInCluster, op.PodsCached)
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		header := "\tksm-scale-operator"
		for _, st := range s.StatefulSets {
			header += fmt.Sprintf("\tSTS %s\tratio", st.Policy)
		}
		fmt.Fprintln(w, header+"\t")
		row := func(label string, ours Seconds, theirs func(STSResults) Seconds) {
			line := fmt.Sprintf("%s\t%s", label, ours)
			for _, st := range s.StatefulSets {
				t := theirs(st)
				line += fmt.Sprintf("\t%s\t%s", t, ratio(ours, t))
			}
			fmt.Fprintln(w, line+"\t")
		}
		row("time to all shards Ready (Available)", op.Available, func(x STSResults) Seconds { return x.Ready })
		row("image rollout finished", op.Rollout, func(x STSResults) Seconds { return x.Rollout })
		row("shards 10->6 finished", op.Reshard, func(x STSResults) Seconds { return x.ScaleDown })
		row("uncovered during rollout: sum over shards", op.RolloutCov.Uncovered, func(x STSResults) Seconds { return x.RolloutUncovered })
		row("uncovered during rollout: longest one shard", op.RolloutCov.Uncovered, func(x STSResults) Seconds { return x.RolloutMaxShard })
		row("uncovered during rollout: any shard", op.RolloutCov.Uncovered, func(x STSResults) Seconds { return x.RolloutAnyShard })
		row("uncovered during 10->6", op.ReshardCov.Uncovered, func(x STSResults) Seconds { return x.ScaleDownUncovered })
		w.Flush()
		fmt.Fprintf(out, "operator: overlap (two complete generations) rollout %s, reshard %s; converged %s after create\n",
			op.RolloutCov.Overlap, op.ReshardCov.Overlap, op.Converged)
		fmt.Fprintf(out, "operator process: peak RSS %.1f MiB, RSS after the steady period %.1f MiB (anonymous %.1f, live Go heap %.1f), CPU %.1f s over the run\n",
			op.PeakRSSMiB, op.SteadyRSSMiB, op.SteadyAnonMiB, op.SteadyHeapLiveMiB, op.CPUSeconds)
		fmt.Fprintf(out, "operator API requests (reads / writes):")
		for _, p := range []string{"initial", "rollout", "reshard", "steady"} {
			c := op.Requests[p]
			fmt.Fprintf(out, "  %s %.0f / %.0f", p, c.Reads, c.Writes)
		}
		fmt.Fprintf(out, "\nsteady period: %.0f reconciles, while %d node status heartbeats were posted and %d unrelated pods came and went\n",
			op.SteadyReconciles, op.NodeHeartbeats, op.ChurnPods)
	}
}

// ratio is ours / theirs, "-" when theirs is zero.
func ratio(ours, theirs Seconds) string {
	if time.Duration(theirs) == 0 {
		if time.Duration(ours) == 0 {
			return "="
		}
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(ours)/float64(theirs))
}
