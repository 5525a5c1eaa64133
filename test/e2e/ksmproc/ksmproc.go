// Package ksmproc runs real kube-state-metrics (KSM) binaries as local
// processes with the very arguments the operator put in its shard pods, and
// reads what they export.
//
// The local cluster (test/localcluster) simulates nodes with kwok, so the
// operator's shard containers never run. To prove that the shards the
// operator configures really split the objects between them, a test or the
// demo (hack/shardtable) takes each shard pod's container arguments, swaps
// only the listen addresses for free loopback ports, adds --kubeconfig, and
// starts the real KSM binary with them against the same API server.
//
// Every process is started in its own process group, from an OS thread that
// never exits and with Pdeathsig set (as test/localcluster does), and is
// stopped by its PID, so a crashed or timed-out caller leaves nothing behind
// and nothing that this package did not start is ever signalled.
package ksmproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

// ContainerName is the name of the KSM container in the operator's pods.
const ContainerName = "kube-state-metrics"

const (
	// startTimeout bounds how long Start waits for /healthz; generous
	// because the CPU may be shared with a control plane and other tests.
	startTimeout = 2 * time.Minute
	// stopGrace is how long Stop waits between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
	// pollInterval is how often Start probes /healthz.
	pollInterval = 200 * time.Millisecond
	// stableGap is how long the series set must stay unchanged for
	// WaitStable to call it stable.
	stableGap = 2 * time.Second
	// scrapeInterval is how often WaitStable scrapes.
	scrapeInterval = 500 * time.Millisecond
	// emptyStableGap is how long an empty series set must stay empty before
	// WaitStable accepts it: KSM serves nothing at all until its first list
	// has been stored, so "empty twice" is usually "not listed yet".
	emptyStableGap = 10 * time.Second
)

// The listen flags the operator sets and ArgsFromPod rewrites.
const (
	flagHost          = "--host"
	flagPort          = "--port"
	flagTelemetryHost = "--telemetry-host"
	flagTelemetryPort = "--telemetry-port"
	flagKubeconfig    = "--kubeconfig"
	flagShard         = "--shard"
	flagTotalShards   = "--total-shards"
)

// ArgsFromPod returns the arguments of pod's kube-state-metrics container
// with only the listen addresses changed: --host and --telemetry-host become
// 127.0.0.1, --port and --telemetry-port the given ports; --kubeconfig is
// appended (or replaced, if the pod had one). Everything else, including
// --shard, --total-shards and the user's extra arguments, is kept as is and
// in order. Both "--flag=value" and "--flag value" are understood. It fails
// when the container or any of the four listen flags is missing.
func ArgsFromPod(pod *corev1.Pod, kubeconfig string, port, telemetryPort int) ([]string, error) {
	c, err := ksmContainer(pod)
	if err != nil {
		return nil, err
	}
	return rewriteArgs(pod, c.Args, kubeconfig, map[string]string{
		flagHost:          "127.0.0.1",
		flagPort:          strconv.Itoa(port),
		flagTelemetryHost: "127.0.0.1",
		flagTelemetryPort: strconv.Itoa(telemetryPort),
	}, nil)
}

// KSM's defaults for the flags ArgsOnHost adds when the pod leaves them out.
const (
	defaultPort          = "8080"
	defaultTelemetryPort = "8081"
)

// ArgsOnHost returns args (a kube-state-metrics container's arguments, with
// any $(VAR) references already expanded) for a process that stands in for
// the container of a pod whose IP is host: --host and --telemetry-host
// become host, so the process listens on exactly the pod's address, and
// --kubeconfig is appended (or replaced). The ports are kept as the pod has
// them; a listen flag the pod leaves out (KSM's StatefulSet autosharding
// manifests set none) is appended with KSM's default value, so that the
// result names every address the process listens on. pod only labels errors.
func ArgsOnHost(pod *corev1.Pod, args []string, kubeconfig, host string) ([]string, error) {
	if pod == nil {
		return nil, errors.New("ksmproc: nil pod")
	}
	if host == "" {
		return nil, fmt.Errorf("ksmproc: pod %s/%s: empty host", pod.Namespace, pod.Name)
	}
	return rewriteArgs(pod, args, kubeconfig, map[string]string{
		flagHost:          host,
		flagTelemetryHost: host,
	}, map[string]string{
		flagHost:          host,
		flagPort:          defaultPort,
		flagTelemetryHost: host,
		flagTelemetryPort: defaultTelemetryPort,
	})
}

// ksmContainer returns pod's kube-state-metrics container.
func ksmContainer(pod *corev1.Pod) (*corev1.Container, error) {
	if pod == nil {
		return nil, errors.New("ksmproc: nil pod")
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == ContainerName {
			return &pod.Spec.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("ksmproc: pod %s/%s has no %q container", pod.Namespace, pod.Name, ContainerName)
}

// rewriteArgs replaces the value of each flag in replace, drops --kubeconfig
// and appends kubeconfig's. A listen flag that args lack is appended from
// missing when it has an entry there, and is an error otherwise.
func rewriteArgs(pod *corev1.Pod, args []string, kubeconfig string, replace, missing map[string]string) ([]string, error) {
	if kubeconfig == "" {
		return nil, errors.New("ksmproc: empty kubeconfig path")
	}
	seen := map[string]bool{}
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		if name == flagKubeconfig {
			// Replaced by ours below.
			if !hasValue {
				i++
			}
			continue
		}
		switch name {
		case flagHost, flagPort, flagTelemetryHost, flagTelemetryPort:
			seen[name] = true
		}
		v, ok := replace[name]
		if !ok {
			out = append(out, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("ksmproc: pod %s/%s: %s without a value", pod.Namespace, pod.Name, name)
			}
			i++ // drop the old value
		}
		out = append(out, name+"="+v)
	}
	var lacking []string
	for _, f := range []string{flagHost, flagPort, flagTelemetryHost, flagTelemetryPort} {
		if seen[f] {
			continue
		}
		if v, ok := missing[f]; ok {
			out = append(out, f+"="+v)
			continue
		}
		lacking = append(lacking, f)
	}
	if len(lacking) > 0 {
		return nil, fmt.Errorf("ksmproc: pod %s/%s: container %q lacks %s", pod.Namespace, pod.Name, ContainerName, strings.Join(lacking, ", "))
	}
	return append(out, flagKubeconfig+"="+kubeconfig), nil
}

// UnshardedArgs returns a copy of args without --shard and --total-shards,
// the command line of an instance that exports every object.
func UnshardedArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		name, _, hasValue := strings.Cut(args[i], "=")
		if name == flagShard || name == flagTotalShards {
			if !hasValue && i+1 < len(args) {
				i++
			}
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// FlagValue returns the value of --name in args ("--name=v" or "--name v").
func FlagValue(args []string, name string) (string, bool) {
	name = "--" + strings.TrimLeft(name, "-")
	for i, a := range args {
		n, v, hasValue := strings.Cut(a, "=")
		if n != name {
			continue
		}
		if hasValue {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// Options configures Start.
type Options struct {
	// Bin is the kube-state-metrics binary.
	Bin string
	// Args is its full command line, typically from ArgsFromPod. It must
	// contain --port (and --host unless KSM's default 0.0.0.0 is wanted).
	Args []string
	// LogFile receives the process's stdout and stderr (appended); empty
	// discards them.
	LogFile string
	// Name labels the process in errors, e.g. "shard-0".
	Name string
	// NoWait makes Start return as soon as the process runs, without
	// waiting for /healthz: for a caller that probes the process itself and
	// must not block on it (test/kubelet, which plays kubelet and reports
	// what its probes see, including a process that never gets healthy).
	NoWait bool
	// Env is added to the process's environment (this process's own),
	// e.g. a pod container's env.
	Env []string
}

// Process is one running kube-state-metrics. Its methods are safe for
// concurrent use.
type Process struct {
	name       string
	logFile    string
	metricsURL string
	teleURL    string
	proc       *proc.Process
	client     *http.Client

	stopOnce sync.Once
	stopErr  error
}

// Start starts KSM and waits (up to 2 minutes, or less if ctx ends sooner)
// until its metrics port answers /healthz with 200. On failure the process
// is stopped and the error carries the end of its log.
func Start(ctx context.Context, o Options) (_ *Process, err error) {
	if o.Bin == "" {
		return nil, errors.New("ksmproc: Options.Bin is required")
	}
	if o.Name == "" {
		o.Name = "kube-state-metrics"
	}
	port, ok := FlagValue(o.Args, flagPort)
	if !ok {
		return nil, fmt.Errorf("ksmproc: %s: no %s in args", o.Name, flagPort)
	}
	host, ok := FlagValue(o.Args, flagHost)
	if !ok || host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	p := &Process{
		name:       o.Name,
		logFile:    o.LogFile,
		metricsURL: "http://" + net.JoinHostPort(host, port) + "/metrics",
		client: &http.Client{
			Timeout: 60 * time.Second,
			// A fresh transport per process: no connection sharing between
			// processes, and DisableCompression would only cost bandwidth.
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2},
		},
	}
	if tp, ok := FlagValue(o.Args, flagTelemetryPort); ok {
		th, ok := FlagValue(o.Args, flagTelemetryHost)
		if !ok || th == "" || th == "0.0.0.0" || th == "::" {
			th = "127.0.0.1"
		}
		p.teleURL = "http://" + net.JoinHostPort(th, tp) + "/metrics"
	}

	logFile := o.LogFile
	if logFile == "" {
		logFile = os.DevNull
	} else if f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "\n==== ksmproc %s %s: %s %s\n", o.Name, time.Now().Format(time.RFC3339), o.Bin, strings.Join(o.Args, " "))
		f.Close()
	}
	// test/proc puts it in its own process group, so Stop reaches any child
	// too, and kills it when the caller dies, even by SIGKILL or a test
	// timeout.
	if p.proc, err = proc.Start(o.Name, o.Bin, o.Args, logFile, o.Env...); err != nil {
		return nil, fmt.Errorf("ksmproc: %w", err)
	}
	if o.NoWait {
		return p, nil
	}
	defer func() {
		if err != nil {
			_ = p.Stop()
		}
	}()

	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	healthz := strings.TrimSuffix(p.metricsURL, "/metrics") + "/healthz"
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		if last = p.probe(wctx, healthz); last == nil {
			return p, nil
		}
		select {
		case <-p.proc.Exited():
			return nil, fmt.Errorf("ksmproc: %s (pid %d) exited before /healthz answered%s",
				o.Name, p.proc.PID(), p.logTail())
		case <-wctx.Done():
			return nil, fmt.Errorf("ksmproc: %s (pid %d): /healthz not 200 (%w; last: %v)%s",
				o.Name, p.proc.PID(), wctx.Err(), last, p.logTail())
		case <-tick.C:
		}
	}
}

func (p *Process) probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// logTail returns the end of the log file for error messages.
func (p *Process) logTail() string {
	if p.logFile == "" {
		return ""
	}
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "; end of " + p.logFile + ":\n" + strings.Join(lines, "\n")
}

// Name returns the name given in Options.
func (p *Process) Name() string { return p.name }

// PID returns the process ID (also its process group ID).
func (p *Process) PID() int { return p.proc.PID() }

// MetricsURL returns the URL of KSM's /metrics on the metrics port.
func (p *Process) MetricsURL() string { return p.metricsURL }

// TelemetryURL returns the URL of KSM's own metrics, or "" when the args
// had no --telemetry-port.
func (p *Process) TelemetryURL() string { return p.teleURL }

// LogFile returns Options.LogFile.
func (p *Process) LogFile() string { return p.logFile }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool { return !p.proc.Running() }

// Done is closed when the process has ended, for callers that supervise it.
func (p *Process) Done() <-chan struct{} { return p.proc.Exited() }

// ExitState is how the process ended; nil while it runs.
func (p *Process) ExitState() *os.ProcessState { return p.proc.ExitState() }

// Scrape GETs /metrics on the metrics port and returns the body (Prometheus
// text format; KSM only serves OpenMetrics when asked for it).
func (p *Process) Scrape(ctx context.Context) (string, error) {
	return p.get(ctx, p.metricsURL)
}

// ScrapeTelemetry GETs KSM's own metrics from the telemetry port.
func (p *Process) ScrapeTelemetry(ctx context.Context) (string, error) {
	if p.teleURL == "" {
		return "", fmt.Errorf("ksmproc: %s has no telemetry port", p.name)
	}
	return p.get(ctx, p.teleURL)
}

func (p *Process) get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("ksmproc: scrape %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("ksmproc: scrape %s: %w", p.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("ksmproc: scrape %s: GET %s: %s", p.name, url, resp.Status)
	}
	return string(body), nil
}

// Stop sends SIGTERM to the process group, SIGKILL after 10 s, and waits
// until the process is reaped. It is safe to call more than once.
func (p *Process) Stop() error { return p.StopGrace(stopGrace) }

// StopGrace is Stop with grace between SIGTERM and SIGKILL, e.g. a pod's
// termination grace period. Only the first Stop or StopGrace acts.
func (p *Process) StopGrace(grace time.Duration) error {
	p.stopOnce.Do(func() { p.stopErr = p.stop(grace) })
	return p.stopErr
}

func (p *Process) stop(grace time.Duration) error {
	if p.proc == nil {
		return nil
	}
	if err := p.proc.Stop(grace); err != nil {
		return fmt.Errorf("ksmproc: stop %s: %w", p.name, err)
	}
	return nil
}

// WaitStable scrapes p until its export of families has settled, and returns
// the series of each family (see ParseSeries; empty families means all).
//
// KSM's /readyz turns ready before its first list is stored, so a started
// process may still serve nothing or part of the objects. WaitStable returns
// as soon as want (when not nil) accepts the number of series per family, or
// when scrapes spanning at least 2 s all returned the identical series set
// (an empty set must hold for 10 s, since "nothing yet" looks stable too).
// On timeout it returns the last series read and an error.
func WaitStable(ctx context.Context, p *Process, families []string, want func(counts map[string]int) bool, timeout time.Duration) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		ref      map[string][]string
		refSince time.Time
		last     map[string][]string
		lastErr  error
	)
	tick := time.NewTicker(scrapeInterval)
	defer tick.Stop()
	for {
		text, err := p.Scrape(ctx)
		if err == nil {
			now := time.Now()
			cur := ParseSeries(text, families...)
			last = cur
			if want != nil && want(Counts(cur)) {
				return cur, nil
			}
			if ref == nil || !reflect.DeepEqual(ref, cur) {
				ref, refSince = cur, now
			} else {
				gap := stableGap
				if total(cur) == 0 {
					gap = emptyStableGap
				}
				if now.Sub(refSince) >= gap {
					return cur, nil
				}
			}
		} else {
			lastErr = err
		}
		select {
		case <-p.proc.Exited():
			return last, fmt.Errorf("ksmproc: %s exited while waiting for stable metrics%s", p.name, p.logTail())
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return last, fmt.Errorf("ksmproc: %s: waiting for stable metrics: %w", p.name, ctx.Err())
			}
			return last, fmt.Errorf("ksmproc: %s: metrics not stable within %s (last counts %v, last scrape error %v)", p.name, timeout, Counts(last), lastErr)
		case <-tick.C:
		}
	}
}

// Counts returns the number of series per family.
func Counts(series map[string][]string) map[string]int {
	out := make(map[string]int, len(series))
	for f, s := range series {
		out[f] = len(s)
	}
	return out
}

func total(series map[string][]string) int {
	n := 0
	for _, s := range series {
		n += len(s)
	}
	return n
}

// ParseSeries reads Prometheus text exposition (or OpenMetrics) and returns,
// for each requested family, the sorted identities of its series:
// `name{a="x",b="y"}` with labels sorted by name and the value, timestamp
// and any exemplar dropped. Every requested family is present in the result,
// with an empty slice when it has no series. Without families it returns
// every metric name found. A sample belongs to family F when its name is F,
// or when it is F_bucket, F_count, F_sum, F_total, F_created or F_info and
// F was declared by # TYPE. Comment lines (# HELP, # TYPE, # UNIT, # EOF)
// and malformed lines are skipped.
func ParseSeries(text string, families ...string) map[string][]string {
	want := map[string]bool{}
	out := map[string][]string{}
	for _, f := range families {
		want[f] = true
		out[f] = []string{}
	}
	typed := map[string]bool{} // families declared by # TYPE
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			fields := strings.Fields(line)
			if len(fields) >= 3 && fields[1] == "TYPE" {
				typed[fields[2]] = true
			}
			continue
		}
		name, labels, ok := parseSample(line)
		if !ok {
			continue
		}
		family := name
		if len(want) > 0 {
			family = familyOf(name, want, typed)
			if family == "" {
				continue
			}
		}
		out[family] = append(out[family], identity(name, labels))
	}
	for f := range out {
		sort.Strings(out[f])
	}
	return out
}

// familyOf maps a sample name to the requested family it belongs to, or "".
func familyOf(name string, want, typed map[string]bool) string {
	if want[name] {
		return name
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum", "_total", "_created", "_info"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && want[base] && typed[base] {
			return base
		}
	}
	return ""
}

type label struct{ name, value string }

// parseSample parses `name{l="v",...} value ...`, `name value ...` and the
// quoted-name form `{"name",l="v"} value`. Label values are unescaped.
func parseSample(line string) (string, []label, bool) {
	i := strings.IndexAny(line, "{ \t")
	if i < 0 {
		return "", nil, false
	}
	name := line[:i]
	rest := strings.TrimLeft(line[i:], " \t")
	if rest == "" || rest[0] != '{' {
		return name, nil, name != "" && validValue(rest)
	}
	var labels []label
	rest = rest[1:]
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return "", nil, false
		}
		if rest[0] == '}' {
			break
		}
		var key string
		if rest[0] == '"' {
			s, n, ok := unquote(rest)
			if !ok {
				return "", nil, false
			}
			rest = strings.TrimLeft(rest[n:], " \t")
			if rest == "" || rest[0] != '=' {
				// A quoted metric name.
				name = s
				continue
			}
			key = s
		} else {
			j := strings.IndexAny(rest, "= \t")
			if j <= 0 {
				return "", nil, false
			}
			key = rest[:j]
			rest = strings.TrimLeft(rest[j:], " \t")
			if rest == "" || rest[0] != '=' {
				return "", nil, false
			}
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		v, n, ok := unquote(rest)
		if !ok {
			return "", nil, false
		}
		labels = append(labels, label{key, v})
		rest = rest[n:]
	}
	if name == "" || !validValue(rest[1:]) {
		return "", nil, false
	}
	return name, labels, true
}

// validValue reports whether s (what follows the name and labels) starts
// with a sample value.
func validValue(s string) bool {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return false
	}
	_, err := strconv.ParseFloat(fields[0], 64)
	return err == nil
}

// unquote reads a double-quoted, backslash-escaped string at the start of s
// and returns it and the number of bytes consumed.
func unquote(s string) (string, int, bool) {
	if s == "" || s[0] != '"' {
		return "", 0, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, true
		case '\\':
			if i+1 >= len(s) {
				return "", 0, false
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			default: // \\ and \"
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

var escaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// identity renders name and labels (sorted) canonically.
func identity(name string, labels []label) string {
	if len(labels) == 0 {
		return name
	}
	sort.Slice(labels, func(i, j int) bool { return labels[i].name < labels[j].name })
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, l := range labels {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.name)
		b.WriteString(`="`)
		escaper.WriteString(&b, l.value)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Labels parses a series identity as produced by ParseSeries back into its
// name and label map.
func Labels(series string) (string, map[string]string) {
	name, labels, ok := parseSample(series + " 0")
	if !ok {
		return series, nil
	}
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		m[l.name] = l.value
	}
	return name, m
}
