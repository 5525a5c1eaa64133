// Package promjudge runs a real Prometheus server as the judge of a test: it
// discovers the kube-state-metrics pods of the local cluster the way the
// shipped ServiceMonitor (config/prometheus/servicemonitor-shards.yaml) has
// users' Prometheus do it, evaluates the shipped alerts
// (config/prometheus/prometheusrule.yaml), and answers what a user's
// Prometheus would have seen: which objects had series at each scrape, which
// had two, which alerts fired.
//
// The process is Debian's prometheus (2.42, what .ci/run installs), started
// by PID on 127.0.0.1 and stopped by PID.
package promjudge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

const (
	defaultScrapeInterval = 2 * time.Second
	evaluationInterval    = time.Second
	// readyTimeout bounds the start: two shared cores also run the control
	// plane and kube-state-metrics.
	readyTimeout = 2 * time.Minute
	// podTargetsFile is the file_sd file of the pod targets, in Dir;
	// Prometheus resolves it relative to prometheus.yml.
	podTargetsFile = "pods.json"
	// stopGrace is how long Prometheus gets to write its head block.
	stopGrace = 15 * time.Second
	pollEvery = 250 * time.Millisecond
)

// Options configures Start.
type Options struct {
	// Dir receives prometheus.yml, rules.yml, the TSDB and prometheus.log.
	// Required.
	Dir string
	// Kubeconfig is the local cluster's kubeconfig, for the discovery of
	// the pods (see podDiscovery). Required.
	Kubeconfig string
	// ServiceMonitor is the ServiceMonitor manifest translated into scrape
	// configs; empty means the repository's servicemonitor-shards.yaml.
	ServiceMonitor string
	// Rules is the PrometheusRule manifest loaded as rule file; empty means
	// the repository's prometheusrule.yaml, "-" none.
	Rules string
	// ScrapeInterval replaces every endpoint's interval and scrapeTimeout;
	// default 2s. Rules are evaluated every second.
	ScrapeInterval time.Duration
	// ForScale rewrites each rule's `for:`; nil keeps them (see ScaleFor).
	ForScale func(time.Duration) time.Duration
	// StaticTargets are extra jobs scraped over plain HTTP, job name to
	// host:port list, e.g. "ksm-scale-operator": {"127.0.0.1:8080"}. A job
	// may start with no target; SetTargets changes a job's targets later.
	StaticTargets map[string][]string
	// Binary is the prometheus executable; empty means "prometheus" on PATH.
	Binary string
	// Log receives progress messages; nil discards them. Prometheus' own
	// output goes to Dir/prometheus.log.
	Log io.Writer
}

// Server is a running Prometheus.
type Server struct {
	o       Options
	dir     string
	url     string
	proc    *proc.Process
	disc    *podDiscovery
	api     promv1.API
	logPath string

	stopOnce sync.Once
	stopErr  error
}

// repoFile is a file of the repository, located from this source file so
// that callers in any package find it.
func repoFile(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(rel))
}

// Config renders prometheus.yml and the rule file for o without starting
// anything; Start writes them to o.Dir. The rule file is nil when o.Rules
// is "-".
func Config(o Options) (config, rules []byte, err error) {
	if o.ServiceMonitor == "" {
		o.ServiceMonitor = repoFile("config/prometheus/servicemonitor-shards.yaml")
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = defaultScrapeInterval
	}
	sm, err := readServiceMonitor(o.ServiceMonitor)
	if err != nil {
		return nil, nil, err
	}
	scrapes := sm.scrapeConfigs(podTargetsFile, o.ScrapeInterval)
	jobs := make([]string, 0, len(o.StaticTargets))
	for j := range o.StaticTargets {
		jobs = append(jobs, j)
	}
	slices.Sort(jobs)
	for _, j := range jobs {
		scrapes = append(scrapes, scrapeConfig{
			JobName:        j,
			ScrapeInterval: model.Duration(o.ScrapeInterval).String(),
			ScrapeTimeout:  model.Duration(o.ScrapeInterval).String(),
			FileSDConfigs:  []fileSD{{Files: []string{staticTargetsFile(j)}}},
		})
	}
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval":     model.Duration(o.ScrapeInterval).String(),
			"scrape_timeout":      model.Duration(o.ScrapeInterval).String(),
			"evaluation_interval": model.Duration(evaluationInterval).String(),
		},
		"scrape_configs": scrapes,
	}
	if o.Rules != "-" {
		if o.Rules == "" {
			o.Rules = repoFile("config/prometheus/prometheusrule.yaml")
		}
		if rules, err = rulesFile(o.Rules, o.ForScale); err != nil {
			return nil, nil, err
		}
		cfg["rule_files"] = []string{"rules.yml"}
	}
	config, err = yaml.Marshal(cfg)
	return config, rules, err
}

// Start writes the configuration to o.Dir, starts Prometheus on a free port
// of 127.0.0.1 and returns once /-/ready answers. The caller must Stop it
// (t.Cleanup), also when the test fails.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" || o.Kubeconfig == "" {
		return nil, errors.New("promjudge: Options.Dir and Kubeconfig are required")
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = defaultScrapeInterval
	}
	if o.Binary == "" {
		p, err := exec.LookPath("prometheus")
		if err != nil {
			return nil, fmt.Errorf("promjudge: %w (install Debian's prometheus package)", err)
		}
		o.Binary = p
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.ServiceMonitor == "" {
		o.ServiceMonitor = repoFile("config/prometheus/servicemonitor-shards.yaml")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(ports[0])
	config, rules, err := Config(o)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), config, 0o644); err != nil {
		return nil, err
	}
	if rules != nil {
		if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
			return nil, err
		}
	}
	s := &Server{o: o, dir: dir, url: "http://" + listen, logPath: filepath.Join(dir, "prometheus.log")}
	for job, targets := range o.StaticTargets {
		if err := s.SetTargets(job, targets); err != nil {
			return nil, err
		}
	}
	sm, err := readServiceMonitor(o.ServiceMonitor)
	if err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, format+"\n", args...) }
	if s.disc, err = startPodDiscovery(ctx, o.Kubeconfig, filepath.Join(dir, podTargetsFile), sm.selector(), sm.namespaces(), logf); err != nil {
		return nil, err
	}
	s.proc, err = proc.StartWith("prometheus", o.Binary, []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen,
		"--web.enable-lifecycle",
		"--log.level=info",
	}, s.logPath, proc.Options{Dir: dir})
	if err != nil {
		s.disc.stop()
		return nil, err
	}
	fmt.Fprintf(o.Log, "promjudge: prometheus (pid %d) on %s, config %s\n", s.proc.PID(), s.url, filepath.Join(dir, "prometheus.yml"))
	client, err := promapi.NewClient(promapi.Config{Address: s.url})
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	s.api = promv1.NewAPI(client)
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("promjudge: %w; log %s:\n%s", err, s.logPath, tail(s.logPath, 20))
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready: %s", resp.Status)
		}
		last = err
		select {
		case <-s.proc.Exited():
			return fmt.Errorf("prometheus exited: %v", s.proc.ExitState())
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(pollEvery):
		}
	}
}

// Stop sends SIGTERM to Prometheus by PID and SIGKILL after a bound. It is
// safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.proc.Stop(stopGrace)
		s.disc.stop()
	})
	return s.stopErr
}

// staticTargetsFile is the file_sd file of a static job, in Dir: file
// discovery lets SetTargets change the targets without a reload.
func staticTargetsFile(job string) string { return "static-" + sanitize(job) + ".json" }

// SetTargets replaces the targets of job, one of Options.StaticTargets (an
// operator process a test restarts on another port). Prometheus picks the
// change up within seconds (file discovery, then its 5 s update throttle).
func (s *Server) SetTargets(job string, targets []string) error {
	if _, ok := s.o.StaticTargets[job]; !ok {
		return fmt.Errorf("promjudge: job %q is not one of Options.StaticTargets", job)
	}
	groups := []targetGroup{}
	if len(targets) > 0 {
		groups = append(groups, targetGroup{Targets: targets, Labels: map[string]string{}})
	}
	data, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, staticTargetsFile(job))
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// API is a client of the server's HTTP API.
func (s *Server) API() promv1.API { return s.api }

// LogPath is Prometheus' own log file.
func (s *Server) LogPath() string { return s.logPath }

// WaitTargets waits until at least n active targets whose job label is job
// are up (last scrape succeeded). The shard ServiceMonitor gives both of a
// pod's endpoints job="kube-state-metrics": two targets per pod.
func (s *Server) WaitTargets(ctx context.Context, job string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		r, err := s.api.Targets(ctx)
		if err == nil {
			up, all := 0, 0
			var bad []string
			for _, t := range r.Active {
				if string(t.Labels["job"]) != job {
					continue
				}
				all++
				if t.Health == promv1.HealthGood {
					up++
				} else {
					bad = append(bad, fmt.Sprintf("%s %s %s", t.ScrapeURL, t.Health, t.LastError))
				}
			}
			if up >= n {
				return nil
			}
			last = fmt.Sprintf("%d of %d targets of job %q up, want %d; not up: %v", up, all, job, n, bad)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promjudge: waiting for %d targets of job %q: %w; %s", n, job, ctx.Err(), last)
		case <-time.After(pollEvery):
		}
	}
}

// CoverageQuery names the objects whose presence Coverage checks.
type CoverageQuery struct {
	// Kind names the objects in reports: "pods", "nodes", ...
	Kind string
	// Expr gives one series per object, with its number of exporters as
	// value, e.g. `count by (uid) (kube_pod_info{namespace=~"bench-.*"})`.
	Expr string
	// Want is how many objects exist throughout the window (truth from the
	// API server).
	Want int
	// Step is the resolution; default the scrape interval, one evaluation
	// per scrape.
	Step time.Duration
}

// Point is one evaluation instant: how many objects had series, and how
// many had more than one exporter.
type Point struct {
	T                   time.Time
	Present, Duplicated int
}

// Coverage is what Prometheus saw of one kind of object over a window.
type Coverage struct {
	Kind     string
	Instants int
	// MissingObjectScrapes sums, over the instants, the objects missing
	// (Want - Present, when positive).
	MissingObjectScrapes float64
	// MissingObjectSeconds is MissingObjectScrapes times the step.
	MissingObjectSeconds float64
	// Worst is the most objects missing at one instant, first at WorstAt.
	Worst   int
	WorstAt time.Time
	// DuplicateInstants counts the instants at which some object had two
	// exporters, between FirstDuplicate and LastDuplicate.
	DuplicateInstants             int
	FirstDuplicate, LastDuplicate time.Time
	Points                        []Point
}

func (c Coverage) String() string {
	s := fmt.Sprintf("%s: %d instants, %.0f missing object-scrapes (%.0f object-seconds), worst %d",
		c.Kind, c.Instants, c.MissingObjectScrapes, c.MissingObjectSeconds, c.Worst)
	if c.Worst > 0 {
		s += " at " + c.WorstAt.UTC().Format("15:04:05")
	}
	s += fmt.Sprintf(", %d instants with duplicates", c.DuplicateInstants)
	if c.DuplicateInstants > 0 {
		s += fmt.Sprintf(" (%s..%s)", c.FirstDuplicate.UTC().Format("15:04:05"), c.LastDuplicate.UTC().Format("15:04:05"))
	}
	return s
}

// Coverage evaluates count(Expr) and count(Expr > 1) at every step of
// [from, to] (query_range) and compares them with q.Want. An instant with no
// result counts as no object present: Prometheus marks the series of a
// failed or vanished target stale at once, so a gap shows at the next
// scrape.
func (s *Server) Coverage(ctx context.Context, from, to time.Time, q CoverageQuery) (Coverage, error) {
	if q.Step == 0 {
		q.Step = s.o.ScrapeInterval
	}
	c := Coverage{Kind: q.Kind}
	r := promv1.Range{Start: from, End: to, Step: q.Step}
	present, err := s.rangeByStep(ctx, "count("+q.Expr+")", r)
	if err != nil {
		return c, err
	}
	dup, err := s.rangeByStep(ctx, "count(("+q.Expr+") > 1)", r)
	if err != nil {
		return c, err
	}
	for i, t := 0, from; !t.After(to); i, t = i+1, t.Add(q.Step) {
		p := Point{T: t, Present: present[i], Duplicated: dup[i]}
		c.Points = append(c.Points, p)
		c.Instants++
		if miss := q.Want - p.Present; miss > 0 {
			c.MissingObjectScrapes += float64(miss)
			if miss > c.Worst {
				c.Worst, c.WorstAt = miss, t
			}
		}
		if p.Duplicated > 0 {
			if c.DuplicateInstants == 0 {
				c.FirstDuplicate = t
			}
			c.DuplicateInstants++
			c.LastDuplicate = t
		}
	}
	c.MissingObjectSeconds = c.MissingObjectScrapes * q.Step.Seconds()
	return c, nil
}

// rangeByStep runs a range query that yields at most one series and returns
// its values by step index from r.Start. The index is rounded, not matched
// by timestamp: Prometheus rounds the start to milliseconds after a trip
// through a float, so its timestamps may differ from ours by a millisecond.
func (s *Server) rangeByStep(ctx context.Context, expr string, r promv1.Range) (map[int]int, error) {
	v, _, err := s.api.QueryRange(ctx, expr, r)
	if err != nil {
		return nil, fmt.Errorf("promjudge: %s: %w", expr, err)
	}
	m, ok := v.(model.Matrix)
	if !ok || len(m) > 1 {
		return nil, fmt.Errorf("promjudge: %s: want at most one series, got %s", expr, v)
	}
	out := map[int]int{}
	for _, ss := range m {
		for _, p := range ss.Values {
			i := int(math.Round(float64(p.Timestamp.Time().Sub(r.Start)) / float64(r.Step)))
			out[i] = int(p.Value)
		}
	}
	return out, nil
}

// Firing is one stretch during which an alert was in a state.
type Firing struct {
	Alert    string
	Labels   map[string]string
	From, To time.Time
}

// Alerts returns the stretches of [from, to] in which ALERTS{alertstate=state}
// ("firing" or "pending") had a series, one per alert and label set and
// contiguous run, ordered by start. The resolution is the evaluation
// interval (coarser for windows of hours).
func (s *Server) Alerts(ctx context.Context, from, to time.Time, state string) ([]Firing, error) {
	step := max(evaluationInterval, to.Sub(from)/10000).Round(time.Second)
	expr := fmt.Sprintf("ALERTS{alertstate=%q}", state)
	v, _, err := s.api.QueryRange(ctx, expr, promv1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return nil, fmt.Errorf("promjudge: %s: %w", expr, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("promjudge: %s: not a matrix: %s", expr, v)
	}
	var out []Firing
	for _, ss := range m {
		labels := map[string]string{}
		for k, v := range ss.Metric {
			if k != model.MetricNameLabel && k != "alertstate" && k != model.AlertNameLabel {
				labels[string(k)] = string(v)
			}
		}
		cur := -1 // index in out of this series' current run
		for _, p := range ss.Values {
			t := p.Timestamp.Time()
			if cur >= 0 && t.Sub(out[cur].To) <= step {
				out[cur].To = t
				continue
			}
			out = append(out, Firing{Alert: string(ss.Metric[model.AlertNameLabel]), Labels: labels, From: t, To: t})
			cur = len(out) - 1
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out, nil
}

func (f Firing) String() string {
	return fmt.Sprintf("%s %v %s..%s", f.Alert, f.Labels, f.From.UTC().Format("15:04:05"), f.To.UTC().Format("15:04:05"))
}

// tail is the last n lines of a log file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
