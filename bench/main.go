// Command bench measures ksm-scale-operator on a local kwok cluster of 1,000
// and 5,000 nodes, and the same work done by kube-state-metrics' own
// StatefulSet autosharding on the same cluster, and prints the two side by
// side (and as JSON, and a plot of the reshards).
//
// Real kube-state-metrics runs behind every KSM pod of both sides
// (test/kubelet), and every change is measured in the metrics themselves
// (test/metricwatch): how many objects no pod exported, and for how long.
// Readiness alone cannot see that gap: KSM is Ready before its first list,
// and an autosharded KSM relists from empty when its StatefulSet is scaled.
//
// Usage: go run ./bench [--sizes 1000,5000] [--scenarios-at 1000] [--steady 10m] [--out bench-results.json] [--plot FILE]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

const (
	imageA = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.19.0"
	imageB = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"
	ksmNS  = "monitoring"
	name   = "bench"
)

type options struct {
	sizes, scenariosAt   []int
	podsPerNode, maxPods int
	shards, reshardTo    int
	// settle and maxSurge are nil unless given: the KSMScale then takes
	// the CRD's defaults.
	settle             *time.Duration
	maxSurge           *int32
	steady             time.Duration
	churnPods          int
	heartbeatEvery     time.Duration
	watchInterval      time.Duration
	out, plot          string
	bin, root, workDir string
	profileDir         string
}

func main() {
	var o options
	var sizes, scenariosAt string
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `Usage: go run ./bench [flags]

Builds a local kwok cluster per size, with real kube-state-metrics behind
every KSM pod (test/kubelet), and measures on it: the operator (a KSMScale
with the CRD's default minReadySeconds and maxSurge) creating --shards shards,
an image rollout, a reshard down and back up, a steady period (writes,
reconciles, RSS); then kube-state-metrics' StatefulSet autosharding
(OrderedReady, then Parallel) doing the same. Every change is measured in the
metrics: objects missing from every pod's /metrics (object-seconds, worst
instant, per second), objects exported twice, and the time until nothing is
missing; and the time a KSM process needs to list. At the sizes of
--scenarios-at a real Prometheus (test/promjudge; prometheus on PATH) scrapes
both sides with the shipped ServiceMonitor and judges every change as well,
and the change scenarios and the StatefulSets run; other sizes run the
operator's create, steady period and RSS.

Flags:
`)
		flag.PrintDefaults()
	}
	flag.StringVar(&sizes, "sizes", "1000,5000", "cluster sizes (simulated nodes), comma-separated")
	flag.StringVar(&scenariosAt, "scenarios-at", "", "sizes at which the change scenarios (rollout, reshards) and the StatefulSets run, comma-separated; default the first of --sizes")
	flag.IntVar(&o.podsPerNode, "pods-per-node", 10, "unrelated workload pods per node")
	flag.IntVar(&o.maxPods, "max-pods", 10000, "cap on workload pods: at 5,000 nodes this 2-core machine kept up with 10,000 pods, not 20,000 (node leases lapsed); the output says what ran")
	flag.IntVar(&o.shards, "shards", 10, "shards of the KSMScale and replicas of the StatefulSet")
	flag.IntVar(&o.reshardTo, "reshard-to", 6, "shard count of the reshard down (and back up to --shards)")
	flag.Func("settle", "override the KSMScale's minReadySeconds (a duration); default: the CRD's default", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("bad duration %q", v)
		}
		o.settle = &d
		return nil
	})
	flag.Func("max-surge", "override the KSMScale's maxSurge; default: the CRD's default", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("bad maxSurge %q", v)
		}
		o.maxSurge = ptrInt32(int32(n))
		return nil
	})
	flag.DurationVar(&o.steady, "steady", 10*time.Minute, "length of the steady period")
	flag.IntVar(&o.churnPods, "churn-pods", 300, "unrelated pods created and deleted during the steady period")
	flag.DurationVar(&o.heartbeatEvery, "heartbeat-every", 5*time.Minute, "how often every node posts a status heartbeat during the steady period (the kubelet's default nodeStatusReportFrequency)")
	flag.DurationVar(&o.watchInterval, "watch-interval", time.Second, "how often every KSM pod's /metrics is scraped and compared with the API server")
	flag.StringVar(&o.out, "out", "bench-results.json", "JSON output")
	flag.StringVar(&o.plot, "plot", "", "if set, write a PNG of the objects missing over time during the reshards (ours vs both StatefulSets) there")
	flag.StringVar(&o.bin, "bin", "bin", "directory with the control plane binaries and kube-state-metrics")
	flag.StringVar(&o.profileDir, "profile-dir", "", "if set, run the operator with pprof on and save its heap profile there after convergence and after the steady period (go tool pprof -sample_index=inuse_space)")
	var replot string
	flag.StringVar(&replot, "replot", "", "only draw --plot from this bench-results.json of an earlier run (e.g. one whose later size failed), run nothing")
	flag.Parse()
	// Only the controller-runtime client is used; its log has nothing to say here.
	ctrllog.SetLogger(logr.Discard())
	var err error
	if replot != "" {
		if err := replotFrom(replot, o.plot); err != nil {
			fatal(err)
		}
		return
	}
	if o.sizes, err = parseSizes(sizes); err != nil {
		fmt.Fprintf(os.Stderr, "bench: --sizes: %v\n", err)
		os.Exit(2)
	}
	o.scenariosAt = o.sizes[:1]
	if scenariosAt != "" {
		if o.scenariosAt, err = parseSizes(scenariosAt); err != nil {
			fmt.Fprintf(os.Stderr, "bench: --scenarios-at: %v\n", err)
			os.Exit(2)
		}
	}
	if o.root, err = os.Getwd(); err != nil {
		fatal(err)
	}
	o.bin, _ = filepath.Abs(o.bin)
	if o.profileDir != "" {
		if o.profileDir, err = filepath.Abs(o.profileDir); err == nil {
			err = os.MkdirAll(o.profileDir, 0o755)
		}
		if err != nil {
			fatal(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatal(err)
	}
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func ptrInt32(v int32) *int32 { return &v }

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Results is the JSON output.
type Results struct {
	Machine string `json:"machine"`
	// Shards and ReshardTo are the shard counts of the changes.
	Shards    int `json:"shards"`
	ReshardTo int `json:"reshardTo"`
	// Settle and MaxSurge are the KSMScale's minReadySeconds and maxSurge:
	// "CRD default" unless overridden.
	Settle        string        `json:"settle"`
	MaxSurge      string        `json:"maxSurge"`
	Steady        string        `json:"steady"`
	WatchInterval string        `json:"watchInterval"`
	Sizes         []SizeResults `json:"sizes"`
}

// SizeResults are one cluster size's figures.
type SizeResults struct {
	Nodes        int `json:"nodes"`
	WorkloadPods int `json:"workloadPods"`
	// Ran lists what was measured at this size.
	Ran          []string        `json:"ran"`
	Operator     OperatorResults `json:"operator"`
	StatefulSets []STSResults    `json:"statefulSets,omitempty"`
}

// OperatorResults are the operator's figures.
type OperatorResults struct {
	// Available is from creating the KSMScale to Available=True; the
	// create Change's Duration is to converged.
	Available         Seconds           `json:"timeToAvailable"`
	Changes           map[string]Change `json:"changes"`
	ListTime          ListTimes         `json:"listTime"`
	Requests          map[string]Counts `json:"requests"`
	SteadyReconciles  float64           `json:"steadyReconciles"`
	NodeHeartbeats    int               `json:"steadyNodeHeartbeats"`
	ChurnPods         int               `json:"steadyChurnPods"`
	PeakRSSMiB        float64           `json:"peakRSSMiB"`
	SteadyRSSMiB      float64           `json:"steadyRSSMiB"`
	SteadyAnonMiB     float64           `json:"steadyRSSAnonMiB"`
	SteadyHeapLiveMiB float64           `json:"steadyHeapLiveMiB"`
	CPUSeconds        float64           `json:"cpuSeconds"`
	PodsInCluster     int               `json:"podsInCluster"`
	PodsCached        int               `json:"podsSelectedByCache"`
}

// STSResults are one StatefulSet policy's figures.
type STSResults struct {
	Policy   string            `json:"policy"`
	Changes  map[string]Change `json:"changes"`
	ListTime ListTimes         `json:"listTime"`
	// ReadinessUncovered is the old, readiness-only view of each change:
	// shard-seconds without a Ready pod of that ordinal.
	ReadinessUncovered map[string]Seconds `json:"readinessUncoveredShardSeconds"`
}

// Counts are API requests by kind.
type Counts struct {
	Reads  float64 `json:"reads"`
	Writes float64 `json:"writes"`
}

// Seconds marshals a duration as seconds.
type Seconds time.Duration

// MarshalJSON writes seconds with millisecond precision.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(s).Seconds(), 'f', 3, 64)), nil
}

// UnmarshalJSON reads what MarshalJSON wrote (for --replot).
func (s *Seconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return err
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

func (s Seconds) String() string { return fmt.Sprintf("%.1fs", time.Duration(s).Seconds()) }

func run(ctx context.Context, o options) error {
	work, err := os.MkdirTemp("", "ksmscale-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.workDir = work
	manager := filepath.Join(work, "manager")
	// Built as the Dockerfile builds it, so the RSS measured is the image's.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", manager, "./cmd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the manager: %w", err)
	}
	res := Results{
		Machine:       machine(),
		Shards:        o.shards,
		ReshardTo:     o.reshardTo,
		Settle:        "CRD default",
		MaxSurge:      "CRD default",
		Steady:        o.steady.String(),
		WatchInterval: o.watchInterval.String(),
	}
	if o.settle != nil {
		res.Settle = o.settle.String()
	}
	if o.maxSurge != nil {
		res.MaxSurge = strconv.Itoa(int(*o.maxSurge))
	}
	for _, n := range o.sizes {
		sr, err := runSize(ctx, o, n, manager, slices.Contains(o.scenariosAt, n))
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		res.Sizes = append(res.Sizes, sr)
		printTable(os.Stdout, res)
		// Written after every size, so a later failure keeps what ran.
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	if o.plot != "" {
		if err := writePlot(o.plot, res); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		logf("wrote %s", o.plot)
	}
	return nil
}

func machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/1024/1024)
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1]) + ", "
				break
			}
		}
	}
	return fmt.Sprintf("%s%d cores%s, %s/%s, %s", model, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// replotFrom draws the reshard plot from a bench-results.json.
func replotFrom(results, plot string) error {
	if plot == "" {
		return fmt.Errorf("--replot needs --plot")
	}
	b, err := os.ReadFile(results)
	if err != nil {
		return err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", results, err)
	}
	return writePlot(plot, r)
}
