package localcluster

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// podReady is the shape of kwok's pod/fast/pod-ready.yaml (abridged).
const podReady = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
`

const nodeStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values:
      - 'True'
  next:
    statusTemplate: "x"
`

func TestExcludePods(t *testing.T) {
	data := podReady + "---\n" + nodeStage + "---\n" + `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: no-selector
spec:
  resourceRef:
    kind: Pod
  next:
    delete: true
`
	for _, tc := range []struct {
		label string
		want  map[string]any
	}{
		{"example.com/kubelet=external", map[string]any{
			"key": `.metadata.labels["example.com/kubelet"]`, "operator": "NotIn", "values": []any{"external"}}},
		{"kubelet", map[string]any{"key": `.metadata.labels["kubelet"]`, "operator": "DoesNotExist"}},
	} {
		t.Run(tc.label, func(t *testing.T) {
			out, err := excludePods([]byte(data), tc.label)
			if err != nil {
				t.Fatal(err)
			}
			docs := strings.Split(string(out), "---\n")
			if len(docs) != 3 {
				t.Fatalf("got %d documents, want 3:\n%s", len(docs), out)
			}
			get := func(i int) map[string]any {
				t.Helper()
				var m map[string]any
				if err := yaml.Unmarshal([]byte(docs[i]), &m); err != nil {
					t.Fatal(err)
				}
				return m
			}
			orig := func(s string) map[string]any {
				var m map[string]any
				if err := utilyaml.Unmarshal([]byte(s), &m); err != nil {
					t.Fatal(err)
				}
				return m
			}

			pod := get(0)
			exprs := pod["spec"].(map[string]any)["selector"].(map[string]any)["matchExpressions"].([]any)
			if len(exprs) != 2 {
				t.Fatalf("pod stage has %d requirements, want 2: %v", len(exprs), exprs)
			}
			if d := cmp.Diff(tc.want, exprs[1]); d != "" {
				t.Errorf("added requirement (-want +got):\n%s", d)
			}
			// Everything else is as it was, the status template included.
			exprs = exprs[:1]
			pod["spec"].(map[string]any)["selector"].(map[string]any)["matchExpressions"] = exprs
			if d := cmp.Diff(orig(podReady), pod); d != "" {
				t.Errorf("pod stage changed beyond the selector (-want +got):\n%s", d)
			}
			if d := cmp.Diff(orig(nodeStage), get(1)); d != "" {
				t.Errorf("node stage changed (-want +got):\n%s", d)
			}
			if _, ok := get(2)["spec"].(map[string]any)["selector"]; ok {
				t.Error("a selector was added to a stage that had none (kwok would start matching it)")
			}
		})
	}
	for _, bad := range []string{"", "=x", "a b=c", "k=", "k=a b"} {
		if _, err := excludePods([]byte(podReady), bad); err == nil {
			t.Errorf("label %q accepted", bad)
		}
	}
}
