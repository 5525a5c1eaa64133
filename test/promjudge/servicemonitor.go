package promjudge

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// The ServiceMonitor subset the translation understands. The file is read
// strictly: a field that is not declared here (metricRelabelings, tlsConfig,
// params, path, jobLabel, selector.matchExpressions, ...) is an error naming
// the field, never silently dropped, so the test's Prometheus cannot drift
// from what users' Prometheus Operator generates from the same file.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Metadata is free-form: labels and annotations do not change scraping.
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Spec struct {
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []smEndpoint `json:"endpoints"`
	} `json:"spec"`
}

type smEndpoint struct {
	Port          string      `json:"port"`
	Scheme        string      `json:"scheme,omitempty"`
	Interval      string      `json:"interval,omitempty"`
	ScrapeTimeout string      `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool        `json:"honorLabels,omitempty"`
	Relabelings   []smRelabel `json:"relabelings,omitempty"`
}

type smRelabel struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// relabelConfig is one entry of a Prometheus relabel_configs list.
// Separator and Replacement are pointers: "" is a valid value for both and
// differs from Prometheus' defaults (";" and "$1").
type relabelConfig struct {
	SourceLabels []string `json:"source_labels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"target_label,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// scrapeConfig is one entry of prometheus.yml's scrape_configs.
type scrapeConfig struct {
	JobName        string          `json:"job_name"`
	HonorLabels    bool            `json:"honor_labels,omitempty"`
	ScrapeInterval string          `json:"scrape_interval,omitempty"`
	ScrapeTimeout  string          `json:"scrape_timeout,omitempty"`
	MetricsPath    string          `json:"metrics_path,omitempty"`
	Scheme         string          `json:"scheme,omitempty"`
	FileSDConfigs  []fileSD        `json:"file_sd_configs,omitempty"`
	RelabelConfigs []relabelConfig `json:"relabel_configs,omitempty"`
}

type fileSD struct {
	Files []string `json:"files"`
}

// relabelActions are the actions Prometheus 2.42 knows, lower case as the
// Prometheus Operator writes them.
var relabelActions = []string{"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal"}

// readServiceMonitor parses path strictly and rejects what the translation
// cannot reproduce.
func readServiceMonitor(path string) (*serviceMonitor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseServiceMonitor(data)
}

func parseServiceMonitor(data []byte) (*serviceMonitor, error) {
	sm := &serviceMonitor{}
	if err := yaml.UnmarshalStrict(data, sm); err != nil {
		return nil, fmt.Errorf("servicemonitor: %w", err)
	}
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
		return nil, fmt.Errorf("servicemonitor: %s %s is not a monitoring.coreos.com/v1 ServiceMonitor", sm.APIVersion, sm.Kind)
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 {
		return nil, fmt.Errorf("servicemonitor: spec.selector.matchLabels is empty")
	}
	if len(sm.Spec.Endpoints) == 0 {
		return nil, fmt.Errorf("servicemonitor: no spec.endpoints")
	}
	for i, ep := range sm.Spec.Endpoints {
		where := fmt.Sprintf("servicemonitor: spec.endpoints[%d]", i)
		if ep.Port == "" {
			return nil, fmt.Errorf("%s: only named ports (port) are supported", where)
		}
		if ep.Scheme != "" && ep.Scheme != "http" {
			return nil, fmt.Errorf("%s.scheme: %q is not supported, only http", where, ep.Scheme)
		}
		for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
			if _, err := model.ParseDuration(d); d != "" && err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		}
		for j, r := range ep.Relabelings {
			if a := strings.ToLower(r.Action); a != "" && !slices.Contains(relabelActions, a) {
				return nil, fmt.Errorf("%s.relabelings[%d].action: unknown action %q", where, j, r.Action)
			}
			if _, err := regexp.Compile(r.Regex); err != nil {
				return nil, fmt.Errorf("%s.relabelings[%d].regex: %w", where, j, err)
			}
		}
	}
	return sm, nil
}

// namespaces are the namespaces the ServiceMonitor looks in; nil means
// every namespace.
func (sm *serviceMonitor) namespaces() []string {
	ns := sm.Spec.NamespaceSelector
	switch {
	case ns.Any:
		return nil
	case len(ns.MatchNames) > 0:
		return ns.MatchNames
	}
	// The Prometheus Operator's default: the ServiceMonitor's own namespace.
	return []string{sm.Metadata.Namespace}
}

// selector is spec.selector as a label selector.
func (sm *serviceMonitor) selector() labels.Selector {
	return labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
}

// scrapeConfigs translates the ServiceMonitor into the scrape configs the
// Prometheus Operator would generate, with one substitution: targets are
// discovered like Kubernetes service discovery's role pod does, not role
// endpoints/endpointslice.
//
// Why: the test clusters' pods have loopback IPs (127.64.0.0/16 for kwok's,
// 127.65.x.y for the real kube-state-metrics test/kubelet runs), and the API
// server refuses loopback addresses in Endpoints and EndpointSlices, so the
// endpoints roles would find no target. Role pod sees the same pods: the
// operator's pods carry the labels of the headless Service the
// ServiceMonitor selects (internal/ksm CommonLabels), so matchLabels are
// matched on pod labels, the endpoint's port by the container port's name,
// and the target labels the Prometheus Operator derives from the Endpoints
// (namespace, pod, container, service, endpoint, job) come from the pod; the
// Service name is the operator's, kube-state-metrics-<ksmscale>. What
// differs: a terminating pod stays a target until it is gone (Endpoints drop
// it at once), as does a not-Ready pod (Endpoints list it as not ready,
// which the Prometheus Operator scrapes too).
//
// The pod role's targets reach Prometheus through targetsFile
// (file_sd_configs, written by podDiscovery): Debian's Prometheus has no
// Kubernetes discovery compiled in. Namespaces are podDiscovery's concern.
//
// interval overrides every endpoint's interval and scrapeTimeout, so tests
// see changes within seconds.
func (sm *serviceMonitor) scrapeConfigs(targetsFile string, interval time.Duration) []scrapeConfig {
	var out []scrapeConfig
	for i, ep := range sm.Spec.Endpoints {
		out = append(out, scrapeConfig{
			JobName:        fmt.Sprintf("serviceMonitor/%s/%s/%d", sm.Metadata.Namespace, sm.Metadata.Name, i),
			HonorLabels:    ep.HonorLabels,
			ScrapeInterval: model.Duration(interval).String(),
			ScrapeTimeout:  model.Duration(interval).String(),
			MetricsPath:    "/metrics",
			Scheme:         "http",
			FileSDConfigs:  []fileSD{{Files: []string{targetsFile}}},
			RelabelConfigs: sm.relabelConfigs(ep),
		})
	}
	return out
}

// relabelConfigs are the Prometheus Operator's relabelings for one endpoint,
// on pod meta labels, followed by the endpoint's own in order.
func (sm *serviceMonitor) relabelConfigs(ep smEndpoint) []relabelConfig {
	var rc []relabelConfig
	keys := make([]string, 0, len(sm.Spec.Selector.MatchLabels))
	for k := range sm.Spec.Selector.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		l := sanitize(k)
		rc = append(rc, relabelConfig{
			Action:       "keep",
			SourceLabels: []string{"__meta_kubernetes_pod_label_" + l, "__meta_kubernetes_pod_labelpresent_" + l},
			Regex:        "(" + sm.Spec.Selector.MatchLabels[k] + ");true",
		})
	}
	service := str(ksm.ServiceName("$1"))
	rc = append(rc,
		relabelConfig{Action: "keep", SourceLabels: []string{"__meta_kubernetes_pod_container_port_name"}, Regex: ep.Port},
		// The Prometheus Operator leaves out pods that have finished.
		relabelConfig{Action: "drop", SourceLabels: []string{"__meta_kubernetes_pod_phase"}, Regex: "(Failed|Succeeded)"},
		relabelConfig{SourceLabels: []string{"__meta_kubernetes_namespace"}, TargetLabel: "namespace"},
		relabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_container_name"}, TargetLabel: "container"},
		relabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_name"}, TargetLabel: "pod"},
		relabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_label_" + sanitize(ksm.LabelKSMScale)}, TargetLabel: "service", Replacement: service},
		relabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_label_" + sanitize(ksm.LabelKSMScale)}, TargetLabel: "job", Replacement: service},
		relabelConfig{TargetLabel: "endpoint", Replacement: str(ep.Port)},
	)
	for _, r := range ep.Relabelings {
		rc = append(rc, relabelConfig{
			SourceLabels: r.SourceLabels,
			Separator:    r.Separator,
			TargetLabel:  r.TargetLabel,
			Regex:        r.Regex,
			Modulus:      r.Modulus,
			Replacement:  r.Replacement,
			Action:       strings.ToLower(r.Action),
		})
	}
	return rc
}

var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitize turns a Kubernetes label key into the suffix of its meta label,
// as Prometheus' service discovery does.
func sanitize(k string) string { return invalidLabelChars.ReplaceAllString(k, "_") }

func str(s string) *string { return &s }
