package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ksmscale/ksm-scale-operator/test/metricwatch"
)

var t0 = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func TestPerSecond(t *testing.T) {
	tick := func(s float64, missing int) metricwatch.Instant {
		return metricwatch.Instant{At: at(s), Missing: missing}
	}
	for _, tc := range []struct {
		name   string
		series []metricwatch.Instant
		want   []int
	}{
		{"empty", nil, nil},
		{"one tick before the first second", []metricwatch.Instant{tick(0.4, 7)}, []int{7, 7}},
		// Second 0 is covered by the tick ending at 0.9, second 1 by the
		// tick ending at 1.9, second 2 by the one ending at 3.2 (a slow
		// tick), second 3 too; second 4 holds the last tick's count.
		{"aligned to the covering tick", []metricwatch.Instant{tick(0.9, 5), tick(1.9, 3), tick(3.2, 1)}, []int{5, 3, 1, 1, 1}},
		// The gap closed at 3.7 s shows as closed at second 4.
		{"ends with the last tick", []metricwatch.Instant{tick(1, 9), tick(3.2, 500), tick(3.7, 0)}, []int{9, 9, 500, 500, 0}},
		{"a tick exactly on the second", []metricwatch.Instant{tick(1, 4), tick(2, 0)}, []int{4, 4, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := perSecond(t0, tc.series); !slices.Equal(got, tc.want) {
				t.Errorf("perSecond = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestListTimes(t *testing.T) {
	ex := func(s float64, m map[string]int) metricwatch.Instant {
		return metricwatch.Instant{At: at(s), Exported: m}
	}
	series := []metricwatch.Instant{
		ex(1, map[string]int{"a": 0}),
		ex(2, map[string]int{"a": 50, "b": 0}),
		ex(3, map[string]int{"a": 100, "b": 100, "c": 10}),
		ex(6, map[string]int{"a": 100, "b": 100, "c": 100}),
	}
	started := map[string]time.Time{"a": at(0), "b": at(1), "c": at(0), "d": at(0)}
	final := map[string]int{"a": 100, "b": 100, "c": 100, "d": 100, "e": 100, "empty": 0}
	lt := listTimes(started, series, final, 0)
	// a: 3 s, b: 2 s, c: 6 s; d never full, e never started, empty exports nothing.
	want := map[string]Seconds{"a": Seconds(3 * time.Second), "b": Seconds(2 * time.Second), "c": Seconds(6 * time.Second)}
	if lt.Pods != 3 || lt.Median != Seconds(3*time.Second) || lt.Max != Seconds(6*time.Second) || len(lt.PerPod) != 3 {
		t.Errorf("listTimes = %+v", lt)
	}
	for k, v := range want {
		if lt.PerPod[k] != v {
			t.Errorf("%s: %s, want %s", k, lt.PerPod[k], v)
		}
	}
	even := listTimes(map[string]time.Time{"a": at(0), "b": at(1)}, series, map[string]int{"a": 100, "b": 100}, 0)
	if even.Median != Seconds(2500*time.Millisecond) {
		t.Errorf("median of two = %s, want 2.5s", even.Median)
	}
	// With a slack of 2, c (98 objects at 3 s, 100 later) counts as
	// listed at 3 s: the last two were created after it listed.
	series[2].Exported["c"] = 98
	if got := listTimes(map[string]time.Time{"c": at(0)}, series, map[string]int{"c": 100}, 2); got.PerPod["c"] != Seconds(3*time.Second) {
		t.Errorf("with slack: %s, want 3s", got.PerPod["c"])
	}
}

func sampleResults() Results {
	ch := func(missing ...int) Change {
		return Change{Duration: Seconds(10 * time.Second), MetricsComplete: Seconds(12 * time.Second), Complete: true,
			MissingObjectSeconds: 42, WorstMissing: 30, WorstAt: Seconds(3 * time.Second), MissingPerSecond: missing}
	}
	all := func(m ...int) map[string]Change {
		return map[string]Change{changeCreate: ch(m...), changeRollout: ch(m...), changeReshardDn: ch(m...), changeReshardUp: ch(m...)}
	}
	return Results{Shards: 10, ReshardTo: 6, Sizes: []SizeResults{
		{Nodes: 100, Operator: OperatorResults{Available: Seconds(5 * time.Second), Changes: all(0, 0),
			ListTime: ListTimes{Pods: 10, Median: Seconds(2 * time.Second), Max: Seconds(3 * time.Second)}},
			StatefulSets: []STSResults{{Policy: "OrderedReady", Changes: all(5, 3, 0)}, {Policy: "Parallel", Changes: all(9)}}},
		{Nodes: 500, Operator: OperatorResults{Changes: map[string]Change{changeCreate: ch(1)}}},
	}}
}

func TestTableRows(t *testing.T) {
	r := sampleResults()
	dn := r.Sizes[0].Operator.Changes[changeReshardDn]
	dn.Prometheus = &PromCoverage{Pods: PromKind{MissingObjectSeconds: 12}, Nodes: PromKind{MissingObjectSeconds: 3}}
	r.Sizes[0].Operator.Changes[changeReshardDn] = dn
	rows := tableRows(r.Sizes[0], 10, 6)
	if !slices.Equal(rows[0], []string{"", "ksm-scale-operator", "STS OrderedReady", "STS Parallel"}) {
		t.Errorf("header %v", rows[0])
	}
	find := func(rows [][]string, label string) []string {
		for _, r := range rows {
			if r[0] == label {
				return r
			}
		}
		t.Fatalf("no row %q in %v", label, rows)
		return nil
	}
	if got := find(rows, "create 10: Available (ours) / all pods Ready"); !slices.Equal(got[1:], []string{"5.0s", "10.0s", "10.0s"}) {
		t.Errorf("create row %v", got)
	}
	if got := find(rows, "create 10: converged"); !slices.Equal(got[1:], []string{"10.0s", "-", "-"}) {
		t.Errorf("converged row %v", got)
	}
	if got := find(rows, "reshard 6->10: worst missing (at)"); got[1] != "30 (3.0s)" {
		t.Errorf("worst row %v", got)
	}
	if got := find(rows, "KSM list time: median / max"); !slices.Equal(got[1:], []string{"2.0s / 3.0s", "-", "-"}) {
		t.Errorf("list time row %v", got)
	}
	// The second size ran only the create: no rollout or reshard rows.
	for _, row := range tableRows(r.Sizes[1], 10, 6) {
		if strings.HasPrefix(row[0], "reshard") || strings.HasPrefix(row[0], "image") {
			t.Errorf("row %v at a size without scenarios", row)
		}
	}
	if got := find(rows, "reshard 10->6: Prometheus missing object-s, pods / nodes"); !slices.Equal(got[1:], []string{"12 / 3", "-", "-"}) {
		t.Errorf("Prometheus row %v", got)
	}
	for _, row := range rows {
		if strings.HasPrefix(row[0], "create 10: Prometheus") {
			t.Errorf("Prometheus row %v for a change no side judged", row)
		}
	}
	var b strings.Builder
	printTable(&b, r)
	if !strings.Contains(b.String(), "== 500 nodes") || !strings.Contains(b.String(), "reshard 10->6: missing object-s") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestReshardPanels(t *testing.T) {
	panels := reshardPanels(sampleResults())
	if len(panels) != 2 || panels[0].title != "reshard 10->6, 100 nodes" || panels[1].title != "reshard 6->10, 100 nodes" {
		t.Fatalf("panels %+v", panels)
	}
	ls := panels[0].lines
	if len(ls) != 3 || ls[0].label != "ksm-scale-operator" || ls[1].label != "STS OrderedReady" || ls[2].label != "STS Parallel" {
		t.Fatalf("lines %+v", ls)
	}
	if len(ls[1].xy) != 3 || ls[1].xy[1].X != 1 || ls[1].xy[1].Y != 3 {
		t.Errorf("STS OrderedReady points %v", ls[1].xy)
	}
	if reshardPanels(Results{Sizes: []SizeResults{{Nodes: 5}}}) != nil {
		t.Errorf("panels without StatefulSets")
	}
	file := filepath.Join(t.TempDir(), "plot.png")
	if err := writePlot(file, sampleResults()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Errorf("plot file: %d bytes, %v", len(b), err)
	}
}

func TestCompleteSince(t *testing.T) {
	in := func(s float64, missing, dup int) metricwatch.Instant {
		return metricwatch.Instant{At: at(s), Missing: missing, Duplicates: dup}
	}
	for _, tc := range []struct {
		name   string
		series []metricwatch.Instant
		want   time.Duration
	}{
		{"never incomplete", []metricwatch.Instant{in(1, 0, 0), in(2, 0, 0)}, 0},
		{"missing, then complete", []metricwatch.Instant{in(1, 9, 0), in(2, 3, 0), in(3, 0, 0), in(4, 0, 0)}, 3 * time.Second},
		{"complete, a gap, complete again", []metricwatch.Instant{in(1, 0, 0), in(2, 4, 0), in(3.5, 0, 0)}, 3500 * time.Millisecond},
		{"duplicates do not count", []metricwatch.Instant{in(1, 0, 5), in(2, 0, 0)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := completeSince(t0, tc.series); got != tc.want {
				t.Errorf("completeSince = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestWidenSelector(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "prometheus", "servicemonitor-shards.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wide, err := widenSelector(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(wide, "managed-by: ksm-scale-operator") || !strings.Contains(wide, "app.kubernetes.io/name: kube-state-metrics") {
		t.Errorf("selector not widened to every kube-state-metrics pod:\n%s", wide)
	}
	if _, err := widenSelector("kind: ServiceMonitor\n"); err == nil {
		t.Errorf("a ServiceMonitor without the managed-by selector was accepted")
	}
}
