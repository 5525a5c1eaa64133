//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ksmscale/ksm-scale-operator/test/promjudge"
)

// The suite's Prometheus: it scrapes every KSMScale's pods as the shipped
// ServiceMonitor has users' Prometheus do it, and the operator processes as
// job ksm-scale-operator (servicemonitor-operator.yaml's job), and
// evaluates the shipped alerts with their `for:` divided by 30.
var (
	judge *promjudge.Server

	operatorsMu sync.Mutex
	// operators are the metrics addresses of the running operator processes.
	operators = map[string]bool{}
)

const (
	judgeInterval = 2 * time.Second
	operatorJob   = "ksm-scale-operator"
)

// judgeFor is how the suite shortens the rules' `for:`: by 30, never below
// 30s (5m, 10m and 15m become 30s, 30m 60s). The floor is longer than a
// healthy change of the suite lasts (up to ~25 s): KSMShardDown, say, is
// pending during every reshard by design, and only its 5 minutes in
// production keep it quiet; scaled to 10s it fired on reshards.
var judgeFor = promjudge.ScaleFor(30, 30*time.Second)

// startJudge starts the suite's Prometheus. Without bin/prometheus it
// returns nil, and the Prometheus verdicts are skipped, unless CI is set:
// make test builds it (hack/build-tools.sh prometheus).
func startJudge(ctx context.Context) (*promjudge.Server, error) {
	binary := filepath.Join(bin, "prometheus")
	if _, err := os.Stat(binary); err != nil {
		if os.Getenv("CI") != "" {
			return nil, fmt.Errorf("no prometheus, and CI is set: %w", err)
		}
		fmt.Println("e2e: no bin/prometheus (hack/build-tools.sh prometheus): the Prometheus verdicts are skipped")
		return nil, nil
	}
	start := time.Now()
	s, err := promjudge.Start(ctx, promjudge.Options{
		Dir:            filepath.Join(work, "prometheus"),
		Kubeconfig:     cluster.Kubeconfig(),
		Binary:         binary,
		ScrapeInterval: judgeInterval,
		ForScale:       judgeFor,
		StaticTargets:  map[string][]string{operatorJob: nil},
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("e2e: prometheus at %s ready in %s (log %s)\n", s.URL(), time.Since(start).Round(time.Millisecond), s.LogPath())
	return s, nil
}

// trackOperator has the judge scrape an operator's metrics endpoint until
// owner ends.
func trackOperator(owner *testing.T, addr string) {
	if judge == nil {
		return
	}
	set := func(on bool) {
		operatorsMu.Lock()
		defer operatorsMu.Unlock()
		if on {
			operators[addr] = true
		} else {
			delete(operators, addr)
		}
		targets := make([]string, 0, len(operators))
		for a := range operators {
			targets = append(targets, a)
		}
		sort.Strings(targets)
		if err := judge.SetTargets(operatorJob, targets); err != nil {
			owner.Errorf("judge: %v", err)
		}
	}
	set(true)
	owner.Cleanup(func() { set(false) })
}

// judgeKinds are the objects the judge checks for one KSMScale, with their
// truth from the API server: the seeded workload's pods and namespaces, and
// every node.
func judgeKinds(t *testing.T, name string) []promjudge.CoverageQuery {
	t.Helper()
	sum := seedWorkload(t)
	var namespaces []string
	pods := 0
	for _, ns := range sum.Namespaces {
		namespaces = append(namespaces, ns.Name)
		list := &corev1.PodList{}
		if err := k8s.List(suiteCtx, list, client.InNamespace(ns.Name)); err != nil {
			t.Fatal(err)
		}
		pods += len(list.Items)
	}
	nodes := &corev1.NodeList{}
	if err := k8s.List(suiteCtx, nodes); err != nil {
		t.Fatal(err)
	}
	nsRe := strings.Join(namespaces, "|")
	sel := fmt.Sprintf(`job="kube-state-metrics", ksmscale=%q`, name)
	return []promjudge.CoverageQuery{
		{Kind: "pods", Want: pods, Expr: fmt.Sprintf(`count by (uid) (kube_pod_info{%s, namespace=~%q})`, sel, nsRe)},
		{Kind: "nodes", Want: len(nodes.Items), Expr: fmt.Sprintf(`count by (node) (kube_node_info{%s})`, sel)},
		{Kind: "namespaces", Want: len(namespaces), Expr: fmt.Sprintf(`count by (namespace) (kube_namespace_created{%s, namespace=~%q})`, sel, nsRe)},
	}
}

// judgeSeesAll waits until the judge has every object of the KSMScale, so
// that a measurement does not start inside discovery's first lag.
func judgeSeesAll(t *testing.T, name string) {
	t.Helper()
	if judge == nil {
		return
	}
	kinds := judgeKinds(t, name)
	eventually(t, 180*time.Second, "prometheus has every object of "+name, func() error {
		for _, q := range kinds {
			v, _, err := judge.API().Query(suiteCtx, "count("+q.Expr+")", time.Now())
			if err != nil {
				return err
			}
			if vec, ok := v.(model.Vector); !ok || len(vec) != 1 || int(vec[0].Value) != q.Want {
				return fmt.Errorf("%s: want %d, got %s", q.Kind, q.Want, v)
			}
		}
		return nil
	})
}

// judgeRules are the rules judgeChange applies beyond "no object misses a
// scrape, no alert fires".
type judgeRules struct {
	// duplicates: objects may be exported twice only between the change's
	// start and two scrapes after it converged. Off where the change ends
	// unsharded: replicas each export every object, by design.
	duplicates bool
}

// judgeChange asks the suite's Prometheus about [from, to]: no object of
// the seeded workload, no node, no namespace may miss a single scrape, and
// no alert of the project may fire for this KSMScale or the operator;
// j adds the duplicate rule.
func judgeChange(t *testing.T, name, scenario string, from, converged, to time.Time, j judgeRules) {
	t.Helper()
	if judge == nil {
		t.Logf("%s: no prometheus, no verdict", scenario)
		return
	}
	kinds := judgeKinds(t, name)
	// Prometheus must have scraped and evaluated past `to`.
	time.Sleep(time.Until(to.Add(2*judgeInterval + time.Second)))
	var figures []string
	for _, q := range kinds {
		c, err := judge.Coverage(suiteCtx, from, to, q)
		if err != nil {
			t.Fatal(err)
		}
		figures = append(figures, fmt.Sprintf("%s %.0f missing scrapes (worst %d of %d), %d dup instants", q.Kind, c.MissingObjectScrapes, c.Worst, q.Want, c.DuplicateInstants))
		if c.MissingObjectScrapes != 0 {
			t.Errorf("%s: prometheus: %s (want %d at every scrape)", scenario, c, q.Want)
		}
		if !j.duplicates {
			continue
		}
		if limit := converged.Add(2 * judgeInterval); c.DuplicateInstants > 0 && c.LastDuplicate.After(limit) {
			t.Errorf("%s: prometheus: %s; duplicates after %s (converged + 2 scrapes)", scenario, c, limit.UTC().Format("15:04:05"))
		}
	}
	firing, err := judge.Alerts(suiteCtx, from, to, "firing")
	if err != nil {
		t.Fatal(err)
	}
	pending, err := judge.Alerts(suiteCtx, from, to, "pending")
	if err != nil {
		t.Fatal(err)
	}
	alerts := "no alert firing"
	if ours := concerning(firing, name); len(ours) > 0 {
		alerts = fmt.Sprintf("firing %v", ours)
		t.Errorf("%s: prometheus: alerts fired: %v", scenario, ours)
	}
	if p := concerning(pending, name); len(p) > 0 {
		alerts += fmt.Sprintf(", pending %v", p)
	}
	fmt.Printf("e2e prometheus: %-46s %s | %s (converged after %s)\n", scenario, strings.Join(figures, "; "), alerts,
		converged.Sub(from).Round(100*time.Millisecond))
}

// concerning keeps the alerts about KSMScale name or about no KSMScale (the
// operator's own), leaving out other tests' instances.
func concerning(alerts []promjudge.Firing, name string) []promjudge.Firing {
	var out []promjudge.Firing
	for _, a := range alerts {
		if k, ok := a.Labels["ksmscale"]; !ok || k == name {
			out = append(out, a)
		}
	}
	return out
}

// TestShardLossAlert loses a shard for good: the operator is stopped, so
// nothing replaces the shard pod that is then deleted. Prometheus must
// raise KSMShardsMissing (objects are not exported) after its scaled
// `for:` and not before, and nothing else but KSMScaleOperatorDown (the
// operator is down, on purpose). The operator is then started again and
// the alert must resolve.
func TestShardLossAlert(t *testing.T) {
	if judge == nil {
		t.Skip("no prometheus")
	}
	const ns, name = "monitoring", "alerting"
	ensureNamespace(t, ns)
	seedWorkload(t)
	op := startOperator(t, t, "operator-alerting")
	createSharded(t, ns, name, 3, 1, nil)
	judgeSeesAll(t, name)

	if err := op.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	victims := waitConverged(t, ns, name, 3, 60*time.Second)
	victim := victims[1]
	lost := time.Now()
	if err := k8s.Delete(suiteCtx, &victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("operator stopped, shard %s pod %s deleted at %s", victim.Labels["shard-id"], victim.Name, lost.UTC().Format("15:04:05"))

	// for: 15m scaled is 30s; discovery (up to 5s), a scrape and the
	// evaluations come on top. A minute of margin on a shared machine.
	forDur := judgeFor(15 * time.Minute)
	var fired promjudge.Firing
	eventually(t, forDur+90*time.Second, "KSMShardsMissing firing for "+name, func() error {
		firing, err := judge.Alerts(suiteCtx, lost, time.Now(), "firing")
		if err != nil {
			return err
		}
		for _, a := range firing {
			if a.Alert == "KSMShardsMissing" && a.Labels["ksmscale"] == name {
				fired = a
				return nil
			}
		}
		return fmt.Errorf("firing: %v", firing)
	})
	after := fired.From.Sub(lost)
	fmt.Printf("e2e prometheus: shard lost: KSMShardsMissing %v firing %s after the pod's deletion (for: %s)\n", fired.Labels, after.Round(time.Second), forDur)
	if after < forDur {
		t.Errorf("KSMShardsMissing fired %s after the loss, before its for: %s", after, forDur)
	}
	if fired.Labels["severity"] != "critical" {
		t.Errorf("KSMShardsMissing labels %v, want severity critical", fired.Labels)
	}
	firing, err := judge.Alerts(suiteCtx, lost.Add(-time.Minute), time.Now(), "firing")
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, a := range concerning(firing, name) {
		if a.Alert != "KSMShardsMissing" && a.Alert != "KSMScaleOperatorDown" {
			others = append(others, a.String())
		}
		if a.Alert == "KSMScaleOperatorDown" {
			t.Logf("expected, the operator is stopped: %s", a)
		}
	}
	if len(others) > 0 {
		t.Errorf("unrelated alerts fired: %v", others)
	}

	// The operator comes back, replaces the shard, and the alert resolves.
	startOperator(t, t, "operator-alerting-2")
	waitConverged(t, ns, name, 3, 120*time.Second)
	restored := time.Now()
	eventually(t, 60*time.Second, "KSMShardsMissing resolved", func() error {
		v, _, err := judge.API().Query(suiteCtx, fmt.Sprintf(`ALERTS{alertname="KSMShardsMissing", ksmscale=%q}`, name), time.Now())
		if err != nil {
			return err
		}
		if s := v.String(); s != "" {
			return fmt.Errorf("still %s", s)
		}
		return nil
	})
	fmt.Printf("e2e prometheus: shard lost: KSMShardsMissing resolved %s after the operator converged again\n", time.Since(restored).Round(time.Second))
}
