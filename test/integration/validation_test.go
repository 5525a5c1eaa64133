package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
)

// fromYAML parses a manifest the way kubectl would send it.
func fromYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("parse manifest: %v\n%s", err, doc)
	}
	return u
}

// dryRunCreate submits obj to the API server without storing it, so that
// every validation and defaulting step runs.
func dryRunCreate(t *testing.T, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	t.Helper()
	err := k8s.Create(testCtx, obj, &clientDryRun)
	return obj, err
}

func TestValidationRefusesBadInput(t *testing.T) {
	cases := []struct {
		name string
		spec string
		// want are substrings the API server's message must contain: the
		// field path and what is wrong with it.
		want []string
	}{
		{"shardCount below 2", "sharding: {enabled: true, shardCount: 1}", []string{"spec.sharding.shardCount", "greater than or equal to 2"}},
		{"shardCount above 10", "sharding: {enabled: true, shardCount: 11}", []string{"spec.sharding.shardCount", "less than or equal to 10"}},
		{"unknown strategy", "sharding: {enabled: true, strategy: auto}", []string{"spec.sharding.strategy", `supported values: "manual"`}},
		{"minAvailable equal to shardCount", "sharding: {enabled: true, shardCount: 3, advanced: {minAvailable: 3}}", []string{"spec.sharding.advanced.minAvailable", "must be less than spec.sharding.shardCount"}},
		{"minAvailable above shardCount", "sharding: {enabled: true, shardCount: 2, advanced: {minAvailable: 5}}", []string{"spec.sharding.advanced.minAvailable", "must be less than spec.sharding.shardCount"}},
		{"minAvailable below 1", "sharding: {enabled: true, advanced: {minAvailable: 0}}", []string{"spec.sharding.advanced.minAvailable", "greater than or equal to 1"}},
		{"nodesPerMonitor below 1", "nodesPerMonitor: 0", []string{"spec.nodesPerMonitor", "greater than or equal to 1"}},
		{"negative nodesPerMonitor", "nodesPerMonitor: -5", []string{"spec.nodesPerMonitor", "greater than or equal to 1"}},
		{"empty image", `monitorImage: ""`, []string{"spec.monitorImage", "at least 1 chars long"}},
		{"blank image", `monitorImage: " "`, []string{"spec.monitorImage", "white space"}},
		{"namespace not a DNS label", "namespace: Monitoring_NS", []string{"spec.namespace", "should match"}},
		{"minReadySeconds negative", "sharding: {enabled: true, advanced: {minReadySeconds: -1}}", []string{"spec.sharding.advanced.minReadySeconds"}},
		{"maxSurge zero", "sharding: {enabled: true, advanced: {maxSurge: 0}}", []string{"spec.sharding.advanced.maxSurge"}},
	}
	for _, flag := range []string{"--shard=1", "--total-shards=4", "--port=9090", "--telemetry-port=9091", "--host=127.0.0.1", "--telemetry-host=127.0.0.1", "--shard", "-port=1", "--pod=x", "--pod-namespace=y"} {
		cases = append(cases, struct {
			name string
			spec string
			want []string
		}{"extraArgs sets " + flag, `extraArgs: ["--resources=pods", "` + flag + `"]`, []string{"spec.extraArgs", "must not set --shard, --total-shards, --port, --telemetry-port, --host, --telemetry-host"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := "apiVersion: monitor.example.com/v1alpha1\nkind: KSMScale\nmetadata: {name: bad}\nspec:\n  " + tc.spec + "\n"
			_, err := dryRunCreate(t, fromYAML(t, doc))
			if err == nil {
				t.Fatalf("the API server accepted\n%s", doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}

	t.Run("name too long for the Service name", func(t *testing.T) {
		doc := "apiVersion: monitor.example.com/v1alpha1\nkind: KSMScale\nmetadata: {name: " + strings.Repeat("a", 41) + "}\nspec: {}\n"
		_, err := dryRunCreate(t, fromYAML(t, doc))
		if err == nil || !strings.Contains(err.Error(), "metadata.name must be a DNS label of at most 40 characters") {
			t.Fatalf("want a refusal naming metadata.name, got %v", err)
		}
	})
}

func TestValidationAcceptsGoodInput(t *testing.T) {
	for _, spec := range []string{
		"{}",
		"nodesPerMonitor: 1",
		"sharding: {enabled: true}",
		"sharding: {enabled: false, shardCount: 10}",
		"sharding: {enabled: true, shardCount: 2, advanced: {minAvailable: 1}}",
		"sharding: {enabled: true, advanced: {minAvailable: 9}}",
		`extraArgs: ["--resources=pods,nodes", "--metric-labels-allowlist=pods=[app]", "--shard-label=x", "--portal=1"]`,
		"tolerations: [{key: dedicated, operator: Equal, value: monitoring, effect: NoSchedule}]",
		"nodeSelector: {kubernetes.io/os: linux}\npriorityClassName: system-cluster-critical",
	} {
		t.Run(spec, func(t *testing.T) {
			doc := "apiVersion: monitor.example.com/v1alpha1\nkind: KSMScale\nmetadata: {name: good}\nspec:\n  " + spec + "\n"
			if _, err := dryRunCreate(t, fromYAML(t, doc)); err != nil {
				t.Fatalf("refused %s: %v", spec, err)
			}
		})
	}
}

func TestSamplesAcceptedUnchanged(t *testing.T) {
	files, err := filepath.Glob("../../config/samples/monitor_v1alpha1_*.yaml")
	if err != nil || len(files) != 2 {
		t.Fatalf("want the plan's two samples, found %v (%v)", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dryRunCreate(t, fromYAML(t, string(b))); err != nil {
				t.Fatalf("sample refused: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Run("schema defaults", func(t *testing.T) {
		doc := "apiVersion: monitor.example.com/v1alpha1\nkind: KSMScale\nmetadata: {name: defaults}\nspec:\n  sharding: {enabled: true}\n"
		u, err := dryRunCreate(t, fromYAML(t, doc))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"spec.namespace":                                       "monitoring",
			"spec.monitorImage":                                    v1alpha1.DefaultMonitorImage,
			"spec.sharding.strategy":                               "manual",
			"spec.sharding.advanced.spreadAcrossNodes":             true,
			"spec.sharding.advanced.enablePDB":                     true,
			"spec.sharding.advanced.minAvailable":                  int64(1),
			"spec.sharding.advanced.minReadySeconds":               int64(30),
			"spec.sharding.advanced.maxSurge":                      int64(10),
			"spec.sharding.advanced.scaleUpStabilizationSeconds":   int64(60),
			"spec.sharding.advanced.scaleDownStabilizationSeconds": int64(300),
		}
		for path, v := range want {
			got, found, _ := unstructured.NestedFieldNoCopy(u.Object, strings.Split(path, ".")...)
			if !found || got != v {
				t.Errorf("%s = %v (found %v), want %v", path, got, found, v)
			}
		}
	})

	t.Run("false survives YAML", func(t *testing.T) {
		doc := "apiVersion: monitor.example.com/v1alpha1\nkind: KSMScale\nmetadata: {name: falses}\nspec:\n  sharding: {enabled: true, advanced: {spreadAcrossNodes: false, enablePDB: false}}\n"
		u, err := dryRunCreate(t, fromYAML(t, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"spreadAcrossNodes", "enablePDB"} {
			got, _, _ := unstructured.NestedBool(u.Object, "spec", "sharding", "advanced", f)
			if got {
				t.Errorf("%s: explicit false became true", f)
			}
		}
	})

	t.Run("false survives a typed client", func(t *testing.T) {
		k := &v1alpha1.KSMScale{}
		k.Name = "typed-falses"
		k.Spec.Sharding = &v1alpha1.ShardingConfig{Enabled: true, Advanced: &v1alpha1.AdvancedShardingConfig{
			SpreadAcrossNodes: ptr.To(false), EnablePDB: ptr.To(false), MinReadySeconds: ptr.To[int32](0),
		}}
		if err := k8s.Create(testCtx, k, &clientDryRun); err != nil {
			t.Fatal(err)
		}
		a := k.Spec.Sharding.Advanced
		if a.SpreadAcrossNodes == nil || *a.SpreadAcrossNodes || a.EnablePDB == nil || *a.EnablePDB {
			t.Errorf("explicit false lost: spreadAcrossNodes=%v enablePDB=%v", a.SpreadAcrossNodes, a.EnablePDB)
		}
		if a.MinReadySeconds == nil || *a.MinReadySeconds != 0 {
			t.Errorf("explicit minReadySeconds 0 lost: %v", a.MinReadySeconds)
		}
		if a.MinAvailable != 1 {
			t.Errorf("minAvailable default not applied: %d", a.MinAvailable)
		}
	})
}
