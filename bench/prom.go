package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ksmscale/ksm-scale-operator/test/promjudge"
)

// promScrapeInterval is the judge's scrape interval: coarser than
// metricwatch's second, as a real Prometheus would be, yet fine enough to
// see a gap of a few seconds.
const promScrapeInterval = 2 * time.Second

// PromCoverage is a real Prometheus' verdict on one change: what a user's
// Prometheus, scraping the side's pods every 2 s as the shipped
// ServiceMonitor has it do, saw of the workload pods and the nodes.
type PromCoverage struct {
	Pods  PromKind `json:"pods"`
	Nodes PromKind `json:"nodes"`
}

// PromKind is promjudge's Coverage of one kind, relative to the change.
type PromKind struct {
	// Want is the number of objects (the API server's count).
	Want int `json:"want"`
	// MissingObjectSeconds: objects without a series, per evaluation
	// instant, times the step.
	MissingObjectSeconds float64 `json:"missingObjectSeconds"`
	// Worst is the most objects missing at one instant, WorstAt when
	// (since the change).
	Worst   int     `json:"worst"`
	WorstAt Seconds `json:"worstAt"`
	// DuplicateInstants counts the instants at which some object had two
	// exporters.
	DuplicateInstants int `json:"duplicateInstants"`
}

// judge is one Prometheus for a cluster size, scraping the KSM pods of both
// sides; each series carries the ksmscale label (the pod's
// ksmscale.example.com label: the KSMScale's name, or sts-<policy>), which
// tells the sides apart.
type judge struct {
	s               *promjudge.Server
	pods, nodes     int
	podNamespaceRex string
}

// startJudge starts Prometheus with the shipped ServiceMonitor's endpoints
// and relabelings, its selector widened to every kube-state-metrics pod so
// that it scrapes the StatefulSets' pods too.
func startJudge(ctx context.Context, root, dir, kubeconfig string, pods, nodes int, podNamespaceRex string) (*judge, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sm, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "servicemonitor-shards.yaml"))
	if err != nil {
		return nil, err
	}
	wide, err := widenSelector(string(sm))
	if err != nil {
		return nil, err
	}
	smFile := filepath.Join(dir, "servicemonitor-bench.yaml")
	if err := os.WriteFile(smFile, []byte(wide), 0o644); err != nil {
		return nil, err
	}
	s, err := promjudge.Start(ctx, promjudge.Options{Dir: dir, Kubeconfig: kubeconfig, ScrapeInterval: promScrapeInterval,
		ServiceMonitor: smFile, Rules: "-"})
	if err != nil {
		return nil, err
	}
	return &judge{s: s, pods: pods, nodes: nodes, podNamespaceRex: podNamespaceRex}, nil
}

// managedBySelector is the line of the shipped ServiceMonitor's selector
// that limits it to the operator's pods.
const managedBySelector = "      app.kubernetes.io/managed-by: ksm-scale-operator\n"

// widenSelector drops managedBySelector from the ServiceMonitor, leaving
// app.kubernetes.io/name=kube-state-metrics, which the StatefulSets' pods
// carry as well.
func widenSelector(sm string) (string, error) {
	if strings.Count(sm, managedBySelector) != 1 {
		return "", fmt.Errorf("the shipped ServiceMonitor's selector has no single %q line", strings.TrimSpace(managedBySelector))
	}
	return strings.Replace(sm, managedBySelector, "", 1), nil
}

func (j *judge) stop() {
	if err := j.s.Stop(); err != nil {
		logf("stop Prometheus: %v", err)
	}
}

// coverage is what Prometheus saw of side's pods and nodes from from to to.
func (j *judge) coverage(ctx context.Context, side string, from, to time.Time) (PromCoverage, error) {
	// Let the last scrape of the window land.
	select {
	case <-ctx.Done():
		return PromCoverage{}, ctx.Err()
	case <-time.After(2 * promScrapeInterval):
	}
	var c PromCoverage
	for _, q := range []struct {
		out  *PromKind
		kind string
		expr string
		want int
	}{
		{&c.Pods, "pods", fmt.Sprintf(`count by (uid) (kube_pod_info{ksmscale=%q,namespace=~%q})`, side, j.podNamespaceRex), j.pods},
		{&c.Nodes, "nodes", fmt.Sprintf(`count by (node) (kube_node_info{ksmscale=%q})`, side), j.nodes},
	} {
		cov, err := j.s.Coverage(ctx, from, to, promjudge.CoverageQuery{Kind: q.kind, Expr: q.expr, Want: q.want})
		if err != nil {
			return c, err
		}
		*q.out = PromKind{Want: q.want, MissingObjectSeconds: cov.MissingObjectSeconds, Worst: cov.Worst,
			DuplicateInstants: cov.DuplicateInstants}
		if cov.Worst > 0 {
			q.out.WorstAt = Seconds(cov.WorstAt.Sub(from))
		}
	}
	return c, nil
}
