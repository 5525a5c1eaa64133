package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// excludePods rewrites every kwok Stage about pods in data (one or more YAML
// documents) so that it skips pods labelled as label says ("key=value", or
// "key" for any value). kwok ANDs a selector's matchExpressions, so one more
// requirement narrows each stage without touching what it does; its keys are
// jq paths, and a NotIn or DoesNotExist on a missing label matches (see
// sigs.k8s.io/kwok pkg/utils/expression, Requirement.Matches), so unlabelled
// pods go on exactly as before. A stage without a selector matches nothing in
// kwok and is left alone. Other documents pass through unchanged in meaning
// (they are re-encoded).
func excludePods(data []byte, label string) ([]byte, error) {
	req, err := exclusionRequirement(label)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out bytes.Buffer
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		if doc == nil {
			continue
		}
		if err := excludeFromStage(doc, req); err != nil {
			return nil, err
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return nil, err
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// exclusionRequirement is the kwok selector requirement that a pod does not
// carry label.
func exclusionRequirement(label string) (map[string]any, error) {
	key, value, hasValue := strings.Cut(label, "=")
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return nil, fmt.Errorf("ExternalKubeletLabel %q: key: %s", label, strings.Join(errs, "; "))
	}
	// Label keys cannot contain quotes, so this is a valid jq string.
	path := fmt.Sprintf(".metadata.labels[%q]", key)
	if !hasValue {
		return map[string]any{"key": path, "operator": "DoesNotExist"}, nil
	}
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 || value == "" {
		return nil, fmt.Errorf("ExternalKubeletLabel %q: value: %s", label, strings.Join(append(errs, "must not be empty after ="), "; "))
	}
	return map[string]any{"key": path, "operator": "NotIn", "values": []any{value}}, nil
}

// excludeFromStage adds req to doc's selector when doc is a kwok Stage for
// core/v1 Pods.
func excludeFromStage(doc map[string]any, req map[string]any) error {
	if doc["kind"] != "Stage" || !strings.HasPrefix(fmt.Sprint(doc["apiVersion"]), "kwok.x-k8s.io/") {
		return nil
	}
	spec, _ := doc["spec"].(map[string]any)
	ref, _ := spec["resourceRef"].(map[string]any)
	if ref["kind"] != "Pod" || (ref["apiGroup"] != nil && ref["apiGroup"] != "v1") {
		return nil
	}
	selector, ok := spec["selector"].(map[string]any)
	if !ok {
		return nil
	}
	exprs, _ := selector["matchExpressions"].([]any)
	selector["matchExpressions"] = append(exprs, req)
	return nil
}
