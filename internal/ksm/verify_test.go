package ksm

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestCompareCounts(t *testing.T) {
	want := Counts{FamilyPods: 1000, FamilyNodes: 30, FamilyNamespaces: 3}
	tests := []struct {
		name string
		got  Counts
		why  string // "" or a substring of the reason
	}{
		{name: "equal", got: Counts{FamilyPods: 1000, FamilyNodes: 30, FamilyNamespaces: 3}},
		{name: "churn within tolerance", got: Counts{FamilyPods: 1011, FamilyNodes: 29, FamilyNamespaces: 4}},
		{name: "more families than the reference", got: Counts{FamilyPods: 1000, FamilyNodes: 30, FamilyNamespaces: 3, "kube_lease_owner": 5}},
		{name: "a kind not listed yet", got: Counts{FamilyPods: 1000, FamilyNodes: 30}, why: "exports no kube_namespace_created series, expected 3"},
		{name: "nothing listed", got: Counts{}, why: "exports no kube_namespace_created series"},
		{name: "too few", got: Counts{FamilyPods: 980, FamilyNodes: 30, FamilyNamespaces: 3}, why: "exports 980 kube_pod_info series, expected 1000"},
		{name: "too many", got: Counts{FamilyPods: 1020, FamilyNodes: 30, FamilyNamespaces: 3}, why: "exports 1020 kube_pod_info series"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			why := CompareCounts(tc.got, want)
			if (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
				t.Errorf("CompareCounts = %q, want %q", why, tc.why)
			}
		})
	}
	// Tolerance never excuses a missing kind, however small.
	if why := CompareCounts(Counts{}, Counts{FamilyNamespaces: 1}); why == "" {
		t.Error("a reference with 1 namespace accepted a pod with none")
	}
}

func TestShareOfSplitsExactly(t *testing.T) {
	var uids []types.UID
	for i := range 500 {
		uids = append(uids, types.UID(fmt.Sprintf("uid-%d", i)))
	}
	for _, total := range []int32{1, 2, 3, 7} {
		sum := 0
		for s := range max(total, 1) {
			n := ShareOf(uids, s, total)
			if total > 1 && (n == 0 || n == len(uids)) {
				t.Errorf("shard %d of %d owns %d of %d objects", s, total, n, len(uids))
			}
			sum += n
		}
		if sum != len(uids) {
			t.Errorf("%d shards own %d objects together, want %d", total, sum, len(uids))
		}
	}
}

func TestObjectScope(t *testing.T) {
	a := ObjectScope([]string{"--host=0.0.0.0", "--resources=pods,nodes", "--shard=1", "--namespaces", "a,b"})
	b := ObjectScope([]string{"--namespaces=a,b", "--port=8080", "--resources=pods,nodes", "--total-shards=3"})
	if a != b || a == "" {
		t.Errorf("equal scopes differ: %q vs %q", a, b)
	}
	if c := ObjectScope([]string{"--resources=pods"}); c == a {
		t.Errorf("different scopes are equal: %q", c)
	}
	if s := ObjectScope([]string{"--shard=1", "--total-shards=3", "--metric-labels-allowlist=pods=[app]"}); s != "" {
		t.Errorf("no scope: got %q", s)
	}
}

func TestRestrictsObjects(t *testing.T) {
	for args, want := range map[string]bool{
		"":                                     false,
		"--metric-labels-allowlist=pods=[app]": false,
		"--resources=pods,nodes":               true,
		"--namespaces=a,b":                     true,
		"--metric-denylist=kube_pod_.*":        true,
	} {
		if got := RestrictsObjects(strings.Fields(args)); got != want {
			t.Errorf("RestrictsObjects(%q) = %v, want %v", args, got, want)
		}
	}
}

func TestReadinessGateOnlyWhenVerifying(t *testing.T) {
	c := shardedExample()
	if g := BuildShardPod(c, 0, 3).Spec.ReadinessGates; len(g) != 1 || g[0].ConditionType != MetricsVerifiedGate {
		t.Errorf("shard pod readiness gates %v, want %s", g, MetricsVerifiedGate)
	}
	if g := BuildDeployment(c, 2).Spec.Template.Spec.ReadinessGates; len(g) != 1 {
		t.Errorf("Deployment template readiness gates %v, want %s", g, MetricsVerifiedGate)
	}
	on := Revision(c, 3)
	c.VerifyHandover = false
	if g := BuildShardPod(c, 0, 3).Spec.ReadinessGates; len(g) != 0 {
		t.Errorf("with verification off the pod has readiness gates %v", g)
	}
	if Revision(c, 3) == on {
		t.Error("turning verification off keeps the revision: pods would keep a gate nobody sets")
	}
}
