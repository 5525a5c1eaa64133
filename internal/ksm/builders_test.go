package ksm

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files")

const (
	exampleImage = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.1"
	exampleRole  = "ksm-scale-operator-kube-state-metrics"
)

func exampleResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("150Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("200m"),
			corev1.ResourceMemory: resource.MustParse("300Mi"),
		},
	}
}

// shardedExample is the plan's "Basic Sharding Configuration", resolved by
// hand.
func shardedExample() Config {
	return Config{
		Name:                          "production-ksm-sharded",
		Namespace:                     "monitoring",
		Image:                         exampleImage,
		Resources:                     exampleResources(),
		Sharded:                       true,
		ShardCount:                    3,
		SpreadAcrossNodes:             true,
		EnablePDB:                     true,
		MinAvailable:                  2,
		MinReadySeconds:               30,
		MaxSurge:                      10,
		ScaleUpStabilizationSeconds:   60,
		ScaleDownStabilizationSeconds: 300,
		ProgressDeadline:              10 * time.Minute,
		VerifyHandover:                true,
	}
}

// unshardedExample is the plan's "Non-Sharded" example with extra arguments.
func unshardedExample() Config {
	return Config{
		Name:                          "development-ksm",
		Namespace:                     "monitoring",
		Image:                         exampleImage,
		NodesPerMonitor:               30,
		ExtraArgs:                     []string{"--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]"},
		SpreadAcrossNodes:             true,
		EnablePDB:                     true,
		MinAvailable:                  1,
		MinReadySeconds:               30,
		MaxSurge:                      10,
		ScaleUpStabilizationSeconds:   60,
		ScaleDownStabilizationSeconds: 300,
		ProgressDeadline:              10 * time.Minute,
		VerifyHandover:                true,
	}
}

func checkGolden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test ./internal/ksm -run Golden -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from %s (-want +got); if the change is intended, rerun with -update:\n%s", name, path, diff)
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		obj  any
	}{
		{name: "shardpod", obj: BuildShardPod(shardedExample(), 1, 3)},
		{name: "service", obj: BuildService(shardedExample())},
		{name: "pdb", obj: BuildPDB(shardedExample(), 2)},
		{name: "deployment", obj: BuildDeployment(unshardedExample(), 3)},
		{name: "serviceaccount", obj: BuildServiceAccount(shardedExample())},
		{name: "clusterrolebinding", obj: BuildClusterRoleBinding(shardedExample(), exampleRole)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkGolden(t, tc.name, tc.obj) })
	}
}

func TestBuildShardPod(t *testing.T) {
	c := shardedExample()
	pod := BuildShardPod(c, 1, 3)

	rev := pod.Labels[LabelRevision]
	if !regexp.MustCompile(`^[0-9a-f]{10}$`).MatchString(rev) {
		t.Fatalf("revision label %q is not 10 hex digits", rev)
	}
	if want := regexp.MustCompile(`^kube-state-metrics-production-ksm-sharded-shard-1-[0-9a-f]{10}$`); !want.MatchString(pod.Name) {
		t.Errorf("pod name %q does not match %s", pod.Name, want)
	}
	if want := "kube-state-metrics-production-ksm-sharded-shard-1-" + rev; pod.Name != want {
		t.Errorf("pod name %q, want %q (the revision label as suffix)", pod.Name, want)
	}
	if pod.Namespace != "monitoring" {
		t.Errorf("namespace %q, want monitoring", pod.Namespace)
	}

	wantLabels := map[string]string{
		"app.kubernetes.io/name":        "kube-state-metrics",
		"app.kubernetes.io/instance":    "production-ksm-sharded",
		"app.kubernetes.io/component":   "exporter",
		"app.kubernetes.io/managed-by":  "ksm-scale-operator",
		"ksmscale.example.com":          "production-ksm-sharded",
		"shard-id":                      "1",
		"total-shards":                  "3",
		"sharding-enabled":              "true",
		"ksmscale.example.com/revision": rev,
	}
	if diff := cmp.Diff(wantLabels, pod.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	ctr := pod.Spec.Containers[0]
	wantArgs := []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081", "--shard=1", "--total-shards=3"}
	if diff := cmp.Diff(wantArgs, ctr.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if ctr.Name != "kube-state-metrics" || ctr.Image != exampleImage {
		t.Errorf("container %q image %q", ctr.Name, ctr.Image)
	}
	if diff := cmp.Diff(exampleResources(), ctr.Resources); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if pod.Spec.ServiceAccountName != "kube-state-metrics-production-ksm-sharded" {
		t.Errorf("serviceAccountName %q", pod.Spec.ServiceAccountName)
	}

	// Probes: /livez on the metrics port 8080, /readyz on the telemetry port 8081.
	portOf := func(name string) int32 {
		for _, p := range ctr.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
		t.Fatalf("no container port named %q", name)
		return 0
	}
	probe := func(what string, p *corev1.Probe, path string, port int32) {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("%s probe missing or not HTTP", what)
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s probe path %q, want %q", what, p.HTTPGet.Path, path)
		}
		got := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			got = portOf(p.HTTPGet.Port.StrVal)
		}
		if got != port {
			t.Errorf("%s probe port %d, want %d", what, got, port)
		}
	}
	probe("liveness", ctr.LivenessProbe, "/livez", 8080)
	probe("readiness", ctr.ReadinessProbe, "/readyz", 8081)
	if portOf("http-metrics") != 8080 || portOf("telemetry") != 8081 {
		t.Errorf("ports %+v", ctr.Ports)
	}

	// Pod Security Standard "restricted".
	psc, sc := pod.Spec.SecurityContext, ctr.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("security contexts missing")
	}
	runAsNonRoot := ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsNonRoot, false)
	seccomp := (sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault) ||
		(psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault)
	switch {
	case !runAsNonRoot:
		t.Error("runAsNonRoot not set")
	case ptr.Deref(psc.RunAsUser, 0) == 0:
		t.Error("runAsUser is root or unset")
	case !seccomp:
		t.Error("seccomp profile is not RuntimeDefault")
	case !ptr.Deref(sc.ReadOnlyRootFilesystem, false):
		t.Error("root filesystem not read-only")
	case ptr.Deref(sc.AllowPrivilegeEscalation, true):
		t.Error("allowPrivilegeEscalation not false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("capabilities %+v, want drop [ALL]", sc.Capabilities)
	case ptr.Deref(sc.Privileged, false):
		t.Error("privileged")
	}
	if pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC {
		t.Error("host namespaces used")
	}
}

func TestBuildShardPodArgsWithExtraArgs(t *testing.T) {
	c := shardedExample()
	c.ExtraArgs = []string{"--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]"}
	got := BuildShardPod(c, 2, 5).Spec.Containers[0].Args
	want := []string{
		"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081",
		"--shard=2", "--total-shards=5",
		"--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	// The builder must not write into the caller's slice.
	if len(c.ExtraArgs) != 2 || c.ExtraArgs[0] != "--resources=pods,nodes" {
		t.Errorf("ExtraArgs changed: %v", c.ExtraArgs)
	}
}

func TestBuildShardPodEveryShard(t *testing.T) {
	c := shardedExample()
	const total = 4
	names := map[string]bool{}
	rev := Revision(c, total)
	for s := int32(0); s < total; s++ {
		pod := BuildShardPod(c, s, total)
		if got := pod.Labels[LabelShardID]; got != fmt.Sprint(s) {
			t.Errorf("shard %d: shard-id label %q", s, got)
		}
		if got := pod.Labels[LabelTotal]; got != "4" {
			t.Errorf("shard %d: total-shards label %q", s, got)
		}
		args := pod.Spec.Containers[0].Args
		if !slices.Contains(args, fmt.Sprintf("--shard=%d", s)) || !slices.Contains(args, "--total-shards=4") {
			t.Errorf("shard %d: args %v", s, args)
		}
		if got := pod.Labels[LabelRevision]; got != rev {
			t.Errorf("shard %d: revision %q, want the generation's %q", s, got, rev)
		}
		if names[pod.Name] {
			t.Errorf("shard %d: name %q repeated", s, pod.Name)
		}
		names[pod.Name] = true
	}
}

func TestBuildShardPodAffinity(t *testing.T) {
	for _, spread := range []bool{true, false} {
		t.Run(fmt.Sprintf("spreadAcrossNodes=%v", spread), func(t *testing.T) {
			c := shardedExample()
			c.SpreadAcrossNodes = spread
			pod := BuildShardPod(c, 0, 3)
			if !spread {
				if pod.Spec.Affinity != nil {
					t.Errorf("affinity %+v, want none", pod.Spec.Affinity)
				}
				return
			}
			a := pod.Spec.Affinity
			if a == nil || a.PodAntiAffinity == nil {
				t.Fatal("no pod anti-affinity")
			}
			if a.PodAffinity != nil || a.NodeAffinity != nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
				t.Errorf("want only a preferred anti-affinity, got %+v", a)
			}
			terms := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
			if len(terms) != 1 {
				t.Fatalf("%d preferred terms, want 1", len(terms))
			}
			term := terms[0].PodAffinityTerm
			if term.TopologyKey != "kubernetes.io/hostname" {
				t.Errorf("topologyKey %q", term.TopologyKey)
			}
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err != nil {
				t.Fatal(err)
			}
			// It repels the other shards of this KSMScale, of any generation,
			// and nothing of another KSMScale.
			other := BuildShardPod(c, 2, 5)
			foreign := c
			foreign.Name = "other"
			if !sel.Matches(labels.Set(pod.Labels)) || !sel.Matches(labels.Set(other.Labels)) {
				t.Errorf("anti-affinity selector %s does not select the instance's shard pods", sel)
			}
			if sel.Matches(labels.Set(BuildShardPod(foreign, 0, 3).Labels)) {
				t.Errorf("anti-affinity selector %s selects another KSMScale's pods", sel)
			}
		})
	}
}

func TestBuildService(t *testing.T) {
	c := shardedExample()
	svc := BuildService(c)
	if svc.Name != "kube-state-metrics-production-ksm-sharded" || svc.Namespace != "monitoring" {
		t.Errorf("service %s/%s", svc.Namespace, svc.Name)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP %q, want None (headless)", svc.Spec.ClusterIP)
	}
	ports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	if diff := cmp.Diff(map[string]int32{"http-metrics": 8080, "telemetry": 8081}, ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	// Both modes of this instance, so scraping goes on while switching.
	if !sel.Matches(labels.Set(BuildShardPod(c, 0, 3).Labels)) {
		t.Errorf("selector %s misses the shard pods", sel)
	}
	if !sel.Matches(labels.Set(BuildDeployment(c, 1).Spec.Template.Labels)) {
		t.Errorf("selector %s misses the Deployment's pods", sel)
	}
	foreign := c
	foreign.Name = "other"
	if sel.Matches(labels.Set(BuildShardPod(foreign, 0, 3).Labels)) || sel.Matches(labels.Set(BuildDeployment(foreign, 1).Spec.Template.Labels)) {
		t.Errorf("selector %s selects another KSMScale's pods", sel)
	}
}

func TestBuildPDB(t *testing.T) {
	c := shardedExample()
	pdb := BuildPDB(c, 2)
	if pdb.Name != "kube-state-metrics-production-ksm-sharded-pdb" || pdb.Namespace != "monitoring" {
		t.Errorf("pdb %s/%s", pdb.Namespace, pdb.Name)
	}
	if ma := pdb.Spec.MinAvailable; ma == nil || ma.StrVal != "" || ma.IntVal != 2 {
		t.Errorf("minAvailable %v, want integer 2", ma)
	}
	if pdb.Spec.MaxUnavailable != nil {
		t.Errorf("maxUnavailable %v, want unset", pdb.Spec.MaxUnavailable)
	}
	if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
		t.Errorf("unhealthyPodEvictionPolicy %v, want AlwaysAllow", p)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(BuildShardPod(c, 0, 3).Labels)) || !sel.Matches(labels.Set(BuildShardPod(c, 4, 5).Labels)) {
		t.Errorf("selector %s misses shard pods", sel)
	}
	if sel.Matches(labels.Set(BuildDeployment(c, 1).Spec.Template.Labels)) {
		t.Errorf("selector %s selects the Deployment's pods", sel)
	}
	foreign := c
	foreign.Name = "other"
	if sel.Matches(labels.Set(BuildShardPod(foreign, 0, 3).Labels)) {
		t.Errorf("selector %s selects another KSMScale's pods", sel)
	}
}

func TestBuildDeployment(t *testing.T) {
	c := unshardedExample()
	d := BuildDeployment(c, 3)
	if d.Name != "kube-state-metrics-development-ksm" || d.Namespace != "monitoring" {
		t.Errorf("deployment %s/%s", d.Namespace, d.Name)
	}
	if ptr.Deref(d.Spec.Replicas, 0) != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	want := []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081",
		"--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]"}
	if diff := cmp.Diff(want, args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %s does not select the template labels %v", sel, d.Spec.Template.Labels)
	}
	if sel.Matches(labels.Set(BuildShardPod(c, 0, 3).Labels)) {
		t.Errorf("selector %s selects shard pods", sel)
	}
	ru := d.Spec.Strategy.RollingUpdate
	if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v, want maxUnavailable 0", ru)
	}
	if d.Spec.Template.Labels[LabelSharded] != "false" {
		t.Errorf("template label sharding-enabled %q, want false", d.Spec.Template.Labels[LabelSharded])
	}
}

func TestBuildServiceAccountAndBinding(t *testing.T) {
	sa := BuildServiceAccount(shardedExample())
	if sa.Name != "kube-state-metrics-production-ksm-sharded" || sa.Namespace != "monitoring" {
		t.Errorf("service account %s/%s, want one of its own per KSMScale", sa.Namespace, sa.Name)
	}
	if sa.Labels[LabelInstance] != "production-ksm-sharded" || sa.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("service account labels %v", sa.Labels)
	}
	crb := BuildClusterRoleBinding(shardedExample(), exampleRole)
	if crb.Name != "kube-state-metrics-production-ksm-sharded" || crb.Namespace != "" {
		t.Errorf("binding %q in namespace %q", crb.Name, crb.Namespace)
	}
	wantRef := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: exampleRole}
	if crb.RoleRef != wantRef {
		t.Errorf("roleRef %+v, want %+v", crb.RoleRef, wantRef)
	}
	wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kube-state-metrics-production-ksm-sharded", Namespace: "monitoring"}}
	if diff := cmp.Diff(wantSubj, crb.Subjects); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
}

// TestNamesAndLabelsValid builds every object for the longest name the CRD
// admits (40 characters) and the largest shard ordinal, and checks that the
// API server would accept their names and label values.
func TestNamesAndLabelsValid(t *testing.T) {
	c := shardedExample()
	c.Name = strings.Repeat("a", 39) + "z"
	pod := BuildShardPod(c, 9, 10)
	suffixed := NextPodName(c.Name, 9, pod.Labels[LabelRevision], map[string]bool{pod.Name: true})
	check := func(what string, errs []string) {
		if len(errs) > 0 {
			t.Errorf("%s: %v", what, errs)
		}
	}
	check("pod name", validation.IsDNS1123Subdomain(pod.Name))
	check("suffixed pod name", validation.IsDNS1123Subdomain(suffixed))
	check("service name", validation.IsDNS1035Label(BuildService(c).Name))
	check("pdb name", validation.IsDNS1123Subdomain(BuildPDB(c, 1).Name))
	check("deployment name", validation.IsDNS1123Subdomain(BuildDeployment(c, 1).Name))
	check("binding name", validation.IsDNS1123Subdomain(BuildClusterRoleBinding(c, exampleRole).Name))
	for what, ls := range map[string]map[string]string{
		"pod":                 pod.Labels,
		"service":             BuildService(c).Labels,
		"pdb":                 BuildPDB(c, 1).Labels,
		"deployment template": BuildDeployment(c, 1).Spec.Template.Labels,
	} {
		for k, v := range ls {
			check(what+" label key "+k, validation.IsQualifiedName(k))
			check(what+" label "+k+" value", validation.IsValidLabelValue(v))
		}
	}
}

func TestRevision(t *testing.T) {
	base := shardedExample
	baseRev := Revision(base(), 3)
	if !regexp.MustCompile(`^[0-9a-f]{10}$`).MatchString(baseRev) {
		t.Fatalf("Revision() = %q, want 10 hex digits", baseRev)
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		total   int32
		changes bool
	}{
		{name: "equal config", mutate: func(*Config) {}, changes: false},
		{name: "image", mutate: func(c *Config) { c.Image = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.11.0" }, changes: true},
		{name: "memory limit", mutate: func(c *Config) { c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("400Mi") }, changes: true},
		{name: "cpu request", mutate: func(c *Config) { c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("150m") }, changes: true},
		{name: "extra args", mutate: func(c *Config) { c.ExtraArgs = []string{"--resources=pods"} }, changes: true},
		{name: "node selector", mutate: func(c *Config) { c.NodeSelector = map[string]string{"role": "monitoring"} }, changes: true},
		{name: "tolerations", mutate: func(c *Config) {
			c.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "monitoring", Effect: corev1.TaintEffectNoSchedule}}
		}, changes: true},
		{name: "priority class", mutate: func(c *Config) { c.PriorityClassName = "system-cluster-critical" }, changes: true},
		{name: "spread across nodes", mutate: func(c *Config) { c.SpreadAcrossNodes = false }, changes: true},
		{name: "total shards", mutate: func(*Config) {}, total: 4, changes: true},
		{name: "minReadySeconds", mutate: func(c *Config) { c.MinReadySeconds = 120 }, changes: false},
		{name: "maxSurge", mutate: func(c *Config) { c.MaxSurge = 3 }, changes: false},
		{name: "enablePDB", mutate: func(c *Config) { c.EnablePDB = false }, changes: false},
		{name: "minAvailable", mutate: func(c *Config) { c.MinAvailable = 1 }, changes: false},
		{name: "nodesPerMonitor", mutate: func(c *Config) { c.NodesPerMonitor = 50 }, changes: false},
		{name: "shardCount", mutate: func(c *Config) { c.ShardCount = 5 }, changes: false},
		{name: "stabilization windows", mutate: func(c *Config) {
			c.ScaleUpStabilizationSeconds, c.ScaleDownStabilizationSeconds = 1, 2
		}, changes: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			total := tc.total
			if total == 0 {
				total = 3
			}
			got := Revision(c, total)
			if changed := got != baseRev; changed != tc.changes {
				t.Errorf("Revision() = %q, base %q: changed = %v, want %v", got, baseRev, changed, tc.changes)
			}
			// BuildShardPod stamps the same revision on every shard.
			for s := int32(0); s < total; s++ {
				if l := BuildShardPod(c, s, total).Labels[LabelRevision]; l != got {
					t.Errorf("shard %d carries revision %q, want %q", s, l, got)
				}
			}
		})
	}
	t.Run("extra args order matters", func(t *testing.T) {
		a, b := base(), base()
		a.ExtraArgs = []string{"--resources=pods", "--namespaces=default"}
		b.ExtraArgs = []string{"--namespaces=default", "--resources=pods"}
		if Revision(a, 3) == Revision(b, 3) {
			t.Error("reordered arguments give the same revision")
		}
	})
	t.Run("stable over map order", func(t *testing.T) {
		c := base()
		c.NodeSelector = map[string]string{}
		for i := 0; i < 20; i++ {
			c.NodeSelector[fmt.Sprintf("key-%02d", i)] = "v"
		}
		first := Revision(c, 3)
		for i := 0; i < 50; i++ {
			if got := Revision(c, 3); got != first {
				t.Fatalf("Revision() = %q then %q for the same config", first, got)
			}
		}
	})
}

func TestResolve(t *testing.T) {
	defaults := func(name string) Config {
		return Config{
			Name: name, Namespace: "monitoring", Image: v1alpha1.DefaultMonitorImage,
			SpreadAcrossNodes: true, EnablePDB: true, MinAvailable: 1, MinReadySeconds: 30, MaxSurge: 10,
			ScaleUpStabilizationSeconds: 60, ScaleDownStabilizationSeconds: 300, ProgressDeadline: 10 * time.Minute,
		}
	}
	ksm := func(name string, spec v1alpha1.KSMScaleSpec) *v1alpha1.KSMScale {
		return &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	tests := []struct {
		name string
		in   *v1alpha1.KSMScale
		want Config
	}{
		{
			name: "empty spec: defaults",
			in:   ksm("a", v1alpha1.KSMScaleSpec{}),
			want: defaults("a"),
		},
		{
			name: "plan's non-sharded example",
			in:   ksm("development-ksm", v1alpha1.KSMScaleSpec{NodesPerMonitor: 30, MonitorImage: exampleImage, Namespace: "monitoring"}),
			want: func() Config {
				c := defaults("development-ksm")
				c.NodesPerMonitor = 30
				c.Image = exampleImage
				return c
			}(),
		},
		{
			name: "sharding enabled, nil advanced: defaults",
			in:   ksm("b", v1alpha1.KSMScaleSpec{Namespace: "kube-system", Sharding: &v1alpha1.ShardingConfig{Enabled: true}}),
			want: func() Config { c := defaults("b"); c.Namespace = "kube-system"; c.Sharded = true; return c }(),
		},
		{
			name: "empty advanced: defaults",
			in:   ksm("b", v1alpha1.KSMScaleSpec{Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: 4, Advanced: &v1alpha1.AdvancedShardingConfig{}}}),
			want: func() Config { c := defaults("b"); c.Sharded = true; c.ShardCount = 4; return c }(),
		},
		{
			name: "explicit false and zero kept",
			in: ksm("c", v1alpha1.KSMScaleSpec{Sharding: &v1alpha1.ShardingConfig{Enabled: true, Advanced: &v1alpha1.AdvancedShardingConfig{
				SpreadAcrossNodes:             ptr.To(false),
				EnablePDB:                     ptr.To(false),
				MinReadySeconds:               ptr.To[int32](0),
				ScaleUpStabilizationSeconds:   ptr.To[int32](0),
				ScaleDownStabilizationSeconds: ptr.To[int32](0),
			}}}),
			want: func() Config {
				c := defaults("c")
				c.Sharded, c.SpreadAcrossNodes, c.EnablePDB = true, false, false
				c.MinReadySeconds, c.ScaleUpStabilizationSeconds, c.ScaleDownStabilizationSeconds = 0, 0, 0
				return c
			}(),
		},
		{
			name: "explicit values",
			in: ksm("d", v1alpha1.KSMScaleSpec{
				ExtraArgs: []string{"--resources=pods"}, NodeSelector: map[string]string{"a": "b"},
				Tolerations:       []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}},
				PriorityClassName: "high",
				Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: 6, Advanced: &v1alpha1.AdvancedShardingConfig{
					SpreadAcrossNodes: ptr.To(true), EnablePDB: ptr.To(true), MinAvailable: 4,
					MinReadySeconds: ptr.To[int32](90), MaxSurge: ptr.To[int32](2),
					ScaleUpStabilizationSeconds: ptr.To[int32](10), ScaleDownStabilizationSeconds: ptr.To[int32](20),
				}},
			}),
			want: func() Config {
				c := defaults("d")
				c.ExtraArgs, c.NodeSelector, c.PriorityClassName = []string{"--resources=pods"}, map[string]string{"a": "b"}, "high"
				c.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
				c.Sharded, c.ShardCount, c.MinAvailable, c.MinReadySeconds, c.MaxSurge = true, 6, 4, 90, 2
				c.ScaleUpStabilizationSeconds, c.ScaleDownStabilizationSeconds = 10, 20
				return c
			}(),
		},
		{
			name: "sharding present but disabled",
			in:   ksm("e", v1alpha1.KSMScaleSpec{Sharding: &v1alpha1.ShardingConfig{Enabled: false}}),
			want: defaults("e"),
		},
		{
			name: "plan's sharded example",
			in: ksm("production-ksm-sharded", v1alpha1.KSMScaleSpec{
				MonitorImage: exampleImage, Namespace: "monitoring", Resources: exampleResources(),
				Sharding: &v1alpha1.ShardingConfig{Enabled: true, Strategy: "manual", ShardCount: 3,
					Advanced: &v1alpha1.AdvancedShardingConfig{SpreadAcrossNodes: ptr.To(true), EnablePDB: ptr.To(true), MinAvailable: 2}},
			}),
			want: shardedExample(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// VerifyHandover is the operator's flag, not the spec's.
			tc.want.VerifyHandover = false
			if diff := cmp.Diff(tc.want, Resolve(tc.in)); diff != "" {
				t.Errorf("Resolve() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnshardedReplicas(t *testing.T) {
	tests := []struct{ nodes, perMonitor, want int32 }{
		{nodes: 0, perMonitor: 0, want: 1},
		{nodes: 100, perMonitor: 0, want: 1},
		{nodes: 0, perMonitor: 30, want: 1},
		{nodes: 5, perMonitor: 2, want: 3},
		{nodes: 4, perMonitor: 2, want: 2},
		{nodes: 30, perMonitor: 30, want: 1},
		{nodes: 31, perMonitor: 30, want: 2},
		{nodes: 1000, perMonitor: 30, want: 34},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d nodes per %d", tc.nodes, tc.perMonitor), func(t *testing.T) {
			if got := UnshardedReplicas(tc.nodes, tc.perMonitor); got != tc.want {
				t.Errorf("UnshardedReplicas(%d, %d) = %d, want %d", tc.nodes, tc.perMonitor, got, tc.want)
			}
		})
	}
}

func BenchmarkRevision(b *testing.B) {
	c := shardedExample()
	c.ExtraArgs = []string{"--resources=pods,nodes"}
	b.ReportAllocs()
	for b.Loop() {
		_ = Revision(c, 3)
	}
}

func BenchmarkBuildShardPod(b *testing.B) {
	c := shardedExample()
	c.ExtraArgs = []string{"--resources=pods,nodes"}
	b.ReportAllocs()
	for b.Loop() {
		_ = BuildShardPod(c, 1, 3)
	}
}
