package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// printTable writes the side-by-side table of every size measured so far.
func printTable(out io.Writer, r Results) {
	fmt.Fprintf(out, "\nksm-scale-operator vs kube-state-metrics StatefulSet autosharding, measured in the metrics (real kube-state-metrics behind every pod)\n")
	fmt.Fprintf(out, "machine: %s\n", r.Machine)
	fmt.Fprintf(out, "KSMScale minReadySeconds %s, maxSurge %s; every KSM pod's /metrics compared with the API server every %s; steady period %s\n",
		r.Settle, r.MaxSurge, r.WatchInterval, r.Steady)
	for _, s := range r.Sizes {
		op := s.Operator
		fmt.Fprintf(out, "\n== %d nodes, %d workload pods (%d pods in the cluster; the operator's pod cache selects %d)\n",
			s.Nodes, s.WorkloadPods, op.PodsInCluster, op.PodsCached)
		fmt.Fprintf(out, "ran: %s\n", strings.Join(s.Ran, "; "))
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, row := range tableRows(s, r.Shards, r.ReshardTo) {
			fmt.Fprintln(w, strings.Join(row, "\t")+"\t")
		}
		w.Flush()
		fmt.Fprintf(out, "time to Available %s vs KSM list time median %s, max %s (target: Available within 2 s of the list time)\n",
			op.Available, op.ListTime.Median, op.ListTime.Max)
		fmt.Fprintf(out, "operator process: peak RSS %.1f MiB, RSS after the steady period %.1f MiB (anonymous %.1f, live Go heap %.1f), CPU %.1f s over the run\n",
			op.PeakRSSMiB, op.SteadyRSSMiB, op.SteadyAnonMiB, op.SteadyHeapLiveMiB, op.CPUSeconds)
		fmt.Fprintf(out, "operator API requests (reads / writes):")
		for _, p := range []string{"initial", changeRollout, changeReshardDn, changeReshardUp, "steady"} {
			if c, ok := op.Requests[p]; ok {
				fmt.Fprintf(out, "  %s %.0f / %.0f", p, c.Reads, c.Writes)
			}
		}
		fmt.Fprintf(out, "\nsteady period: %.0f reconciles, while %d node status heartbeats were posted and %d unrelated pods came and went\n",
			op.SteadyReconciles, op.NodeHeartbeats, op.ChurnPods)
	}
}

// column is one side of the table.
type column struct {
	changes   map[string]Change
	listTime  ListTimes
	available *Seconds // the operator's time to Available
}

// tableRows is the side-by-side table of one size: a header, then for each
// change that ran on some side its duration, when its metrics were
// complete, the missing and duplicate object-seconds and the worst
// instant; then the KSM list time. A side without a figure shows "-".
func tableRows(s SizeResults, shards, reshardTo int) [][]string {
	header := []string{"", "ksm-scale-operator"}
	cols := []column{{changes: s.Operator.Changes, listTime: s.Operator.ListTime, available: &s.Operator.Available}}
	for _, st := range s.StatefulSets {
		header = append(header, "STS "+st.Policy)
		cols = append(cols, column{changes: st.Changes, listTime: st.ListTime})
	}
	rows := [][]string{header}
	row := func(label string, cell func(column) string) {
		r := []string{label}
		for _, c := range cols {
			r = append(r, cell(c))
		}
		rows = append(rows, r)
	}
	changes := []struct{ key, label string }{
		{changeCreate, fmt.Sprintf("create %d", shards)},
		{changeRollout, "image rollout"},
		{changeReshardDn, fmt.Sprintf("reshard %d->%d", shards, reshardTo)},
		{changeReshardUp, fmt.Sprintf("reshard %d->%d", reshardTo, shards)},
	}
	for _, ch := range changes {
		ran := false
		for _, c := range cols {
			_, ok := c.changes[ch.key]
			ran = ran || ok
		}
		if !ran {
			continue
		}
		field := func(f func(Change) string) func(column) string {
			return func(c column) string {
				x, ok := c.changes[ch.key]
				if !ok {
					return "-"
				}
				return f(x)
			}
		}
		if ch.key == changeCreate {
			row(ch.label+": Available (ours) / all pods Ready", func(c column) string {
				if c.available != nil {
					return c.available.String()
				}
				return field(func(x Change) string { return x.Duration.String() })(c)
			})
			row(ch.label+": converged", func(c column) string {
				if c.available == nil {
					return "-"
				}
				return field(func(x Change) string { return x.Duration.String() })(c)
			})
		} else {
			row(ch.label+": done", field(func(x Change) string { return x.Duration.String() }))
		}
		row(ch.label+": metrics complete after", field(func(x Change) string {
			if !x.Complete {
				return ">" + x.MetricsComplete.String()
			}
			return x.MetricsComplete.String()
		}))
		row(ch.label+": missing object-s", field(func(x Change) string { return fmt.Sprintf("%.0f", x.MissingObjectSeconds) }))
		row(ch.label+": worst missing (at)", field(func(x Change) string {
			if x.WorstMissing == 0 {
				return "0"
			}
			return fmt.Sprintf("%d (%s)", x.WorstMissing, x.WorstAt)
		}))
		row(ch.label+": duplicate object-s", field(func(x Change) string { return fmt.Sprintf("%.0f", x.DuplicateObjectSeconds) }))
		judged := false
		for _, c := range cols {
			judged = judged || c.changes[ch.key].Prometheus != nil
		}
		if !judged {
			continue
		}
		prom := func(f func(p *PromCoverage) string) func(column) string {
			return field(func(x Change) string {
				if x.Prometheus == nil {
					return "-"
				}
				return f(x.Prometheus)
			})
		}
		row(ch.label+": Prometheus missing object-s, pods / nodes", prom(func(p *PromCoverage) string {
			return fmt.Sprintf("%.0f / %.0f", p.Pods.MissingObjectSeconds, p.Nodes.MissingObjectSeconds)
		}))
		row(ch.label+": Prometheus worst missing, pods / nodes", prom(func(p *PromCoverage) string {
			return fmt.Sprintf("%d / %d", p.Pods.Worst, p.Nodes.Worst)
		}))
		row(ch.label+": Prometheus instants with duplicates, pods", prom(func(p *PromCoverage) string {
			return fmt.Sprint(p.Pods.DuplicateInstants)
		}))
	}
	row("KSM list time: median / max", func(c column) string {
		if c.listTime.Pods == 0 {
			return "-"
		}
		return fmt.Sprintf("%s / %s", c.listTime.Median, c.listTime.Max)
	})
	return rows
}
