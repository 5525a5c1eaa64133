package promjudge

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// ScaleFor returns a ForScale that divides each rule's `for:` by div, but
// never below floor: 5m with ScaleFor(30, 10*time.Second) becomes 10s, so a
// test sees an alert fire within seconds while the rule still needs several
// evaluations (and scrapes) in a row.
func ScaleFor(div float64, floor time.Duration) func(time.Duration) time.Duration {
	return func(d time.Duration) time.Duration {
		return max(time.Duration(float64(d)/div).Round(time.Second), floor)
	}
}

// rulesFile turns a PrometheusRule manifest into a Prometheus rule file:
// its spec.groups as they are, each rule's `for:` rewritten by forScale
// when it is set. Groups and rules are kept as generic maps so that every
// field (labels, annotations, keep_firing_for, ...) reaches Prometheus,
// which validates them when it loads the file.
func rulesFile(path string, forScale func(time.Duration) time.Duration) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []map[string]any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &pr); err != nil {
		return nil, fmt.Errorf("prometheusrule %s: %w", path, err)
	}
	if pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) == 0 {
		return nil, fmt.Errorf("prometheusrule %s: kind %q with %d groups, want a PrometheusRule with groups", path, pr.Kind, len(pr.Spec.Groups))
	}
	if forScale != nil {
		for _, g := range pr.Spec.Groups {
			rules, _ := g["rules"].([]any)
			for _, r := range rules {
				rule, ok := r.(map[string]any)
				if !ok {
					continue
				}
				s, ok := rule["for"].(string)
				if !ok {
					continue
				}
				d, err := model.ParseDuration(s)
				if err != nil {
					return nil, fmt.Errorf("prometheusrule %s: rule %v: %w", path, rule["alert"], err)
				}
				rule["for"] = model.Duration(forScale(time.Duration(d))).String()
			}
		}
	}
	return yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
}
