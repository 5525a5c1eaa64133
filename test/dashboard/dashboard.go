// Package dashboard reads the Grafana dashboard (config/grafana) the way its
// tests need it: every PromQL expression with where it is, and the metric
// names an expression selects. It is a non-test package so that two suites
// share one reading: test/manifests checks the expressions statically
// (promtool, the known exporters), the e2e suite checks the metric names
// against live scrapes of kube-state-metrics and the operator. Names
// extracted differently in the two would let a name slip between them.
package dashboard

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// File is the dashboard's path relative to the repository root.
const File = "config/grafana/ksm-scale-operator.json"

// Panel is one panel of the dashboard, rows (with their nested panels)
// included.
type Panel struct {
	ID      int              `json:"id"`
	Type    string           `json:"type"`
	Title   string           `json:"title"`
	Targets []map[string]any `json:"targets"`
	Panels  []Panel          `json:"panels"`
	Data    map[string]any   `json:"datasource"`
}

// Dashboard is the part of Grafana's dashboard JSON the tests read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []map[string]any `json:"list"`
	} `json:"templating"`
}

// Query is one PromQL expression of the dashboard and where it is (panel
// and target, or template variable), for error messages.
type Query struct{ Where, Expr string }

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// Read parses the dashboard at path and returns it with every PromQL
// expression it evaluates: each panel target's expr (nested panels
// included) and each query variable's selector. A query variable whose
// definition is not label_values(<selector>, <label>) is an error, since
// its metric names could not be checked.
func Read(path string) (Dashboard, []Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Dashboard{}, nil, err
	}
	var d Dashboard
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&d); err != nil {
		return Dashboard{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	var qs []Query
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				e, _ := tg["expr"].(string)
				qs = append(qs, Query{fmt.Sprintf("panel %d %q target %v", p.ID, p.Title, tg["refId"]), e})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v["type"] != "query" {
			continue
		}
		def, _ := v["definition"].(string)
		m := labelValues.FindStringSubmatch(def)
		if m == nil {
			return d, nil, fmt.Errorf("%s: variable %v: definition %q is not label_values(<selector>, <label>)", path, v["name"], def)
		}
		qs = append(qs, Query{fmt.Sprintf("variable %v", v["name"]), m[1]})
	}
	return d, qs, nil
}

// GrafanaVars replaces Grafana's variables with what they expand to, so that
// the text is PromQL.
var GrafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "6h",
	"$ksmscale", ".*",
)

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	matchers   = regexp.MustCompile(`\{[^}]*\}`)
	ranges     = regexp.MustCompile(`\[[^\]]*\]`)
	labelLists = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	calls      = regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(`)
	idents     = regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*\b`)
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	keywords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true, "Inf": true, "NaN": true}
)

// MetricNames returns the metric names an expression selects, sorted and
// without repeats. PromQL without string literals, label matchers and
// ranges leaves identifiers that are metric names, function names (followed
// by "("), keywords, and the label lists of by/without/on/ignoring/
// group_left/group_right.
func MetricNames(expr string) []string {
	s := stringLit.ReplaceAllString(expr, `""`)
	s = matchers.ReplaceAllString(s, " ")
	s = ranges.ReplaceAllString(s, " ")
	s = labelLists.ReplaceAllString(s, " ")
	s = calls.ReplaceAllString(s, "(")
	seen := map[string]bool{}
	var names []string
	for _, id := range idents.FindAllString(s, -1) {
		if keywords[id] || seen[id] {
			continue
		}
		seen[id] = true
		names = append(names, id)
	}
	sort.Strings(names)
	return names
}

// Used maps every metric name the queries select to the places that use it.
func Used(qs []Query) map[string][]string {
	used := map[string][]string{}
	for _, q := range qs {
		for _, n := range MetricNames(q.Expr) {
			used[n] = append(used[n], q.Where)
		}
	}
	return used
}

// Exposition is what one or more scrapes in the Prometheus text format
// (0.0.4) exposed: the names of the samples, and the families declared by
// # TYPE lines with their types.
type Exposition struct {
	Samples  map[string]bool
	Families map[string]string
}

// NewExposition returns an empty Exposition to Add scrapes to.
func NewExposition() *Exposition {
	return &Exposition{Samples: map[string]bool{}, Families: map[string]string{}}
}

// Add reads one scrape body. Only names are kept; a line that is neither a
// comment nor `name[{labels}] value...` is an error, so that a body in
// another format (OpenMetrics, protobuf, an HTML error page) is not taken
// for an empty scrape.
func (e *Exposition) Add(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 {
				return fmt.Errorf("line %d: malformed TYPE line %q", n, line)
			}
			e.Families[f[0]] = f[1]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ \t")
		if end <= 0 || !metricName.MatchString(line[:end]) {
			return fmt.Errorf("line %d: not a sample: %q", n, excerpt(line))
		}
		e.Samples[line[:end]] = true
	}
	return sc.Err()
}

func excerpt(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Has reports how a name a PromQL expression selects was exposed: "sample"
// when some sample has that name; "family" when no sample has it but a
// family that would hold it is declared (a vector with no children yet, a
// kube-state-metrics family with no objects of its kind); "" when it was
// not exposed at all. A histogram's or summary's _bucket, _sum and _count
// samples belong to the family without the suffix.
func (e *Exposition) Has(name string) string {
	if e.Samples[name] {
		return "sample"
	}
	if t, ok := e.Families[name]; ok && t != "histogram" && t != "summary" {
		return "family"
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch e.Families[base] {
		case "histogram":
			return "family"
		case "summary":
			if suffix != "_bucket" {
				return "family"
			}
		}
	}
	return ""
}
