// Command bench measures ksm-scale-operator on a local kwok cluster of 1,000
// and 5,000 nodes, and the same work done by kube-state-metrics' own
// StatefulSet autosharding on the same cluster, and prints the two side by
// side (and as JSON).
//
// Every pod, the operator's and the StatefulSet's, pays the same simulated
// container start time (--startup-delay, a kwok Stage delay): kwok only
// simulates pods, so readiness is all either side can be measured by.
//
// Usage: go run ./bench [--sizes 1000,5000] [--steady 10m] [--out bench-results.json] [--profile-dir DIR]
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
	sizes                   []int
	podsPerNode, maxPods    int
	shards, reshardTo       int
	startupDelay, settle    time.Duration
	maxSurge                int
	steady                  time.Duration
	churnPods               int
	heartbeatEvery          time.Duration
	out, bin, root, workDir string
	profileDir              string
}

func main() {
	var o options
	var sizes string
	flag.StringVar(&sizes, "sizes", "1000,5000", "cluster sizes (simulated nodes), comma-separated")
	flag.IntVar(&o.podsPerNode, "pods-per-node", 10, "unrelated workload pods per node")
	flag.IntVar(&o.maxPods, "max-pods", 10000, "cap on workload pods: at 5,000 nodes this 2-core machine kept up with 10,000 pods, not 20,000 (node leases lapsed); the output says what ran")
	flag.IntVar(&o.shards, "shards", 10, "shards of the KSMScale and replicas of the StatefulSet")
	flag.IntVar(&o.reshardTo, "reshard-to", 6, "shard count after the reshard / StatefulSet scale-down")
	flag.DurationVar(&o.startupDelay, "startup-delay", 5*time.Second, "simulated container start time of every pod (kwok Stage delay)")
	flag.DurationVar(&o.settle, "settle", 10*time.Second, "the KSMScale's minReadySeconds")
	flag.IntVar(&o.maxSurge, "max-surge", 1, "the KSMScale's maxSurge")
	flag.DurationVar(&o.steady, "steady", 10*time.Minute, "length of the steady period")
	flag.IntVar(&o.churnPods, "churn-pods", 300, "unrelated pods created and deleted during the steady period")
	flag.DurationVar(&o.heartbeatEvery, "heartbeat-every", 5*time.Minute, "how often every node posts a status heartbeat during the steady period (the kubelet's default nodeStatusReportFrequency)")
	flag.StringVar(&o.out, "out", "bench-results.json", "JSON output")
	flag.StringVar(&o.bin, "bin", "bin", "directory with the control plane binaries")
	flag.StringVar(&o.profileDir, "profile-dir", "", "if set, run the operator with pprof on and save its heap profile there after convergence and after the steady period (go tool pprof -sample_index=inuse_space)")
	flag.Parse()
	// Only the controller-runtime client is used; its log has nothing to say here.
	ctrllog.SetLogger(logr.Discard())
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad --sizes %q\n", sizes)
			os.Exit(2)
		}
		o.sizes = append(o.sizes, n)
	}
	var err error
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

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Results is the JSON output.
type Results struct {
	Machine      string        `json:"machine"`
	StartupDelay string        `json:"startupDelay"`
	Settle       string        `json:"settle"`
	MaxSurge     int           `json:"maxSurge"`
	Steady       string        `json:"steady"`
	Sizes        []SizeResults `json:"sizes"`
}

// SizeResults are one cluster size's figures.
type SizeResults struct {
	Nodes        int             `json:"nodes"`
	WorkloadPods int             `json:"workloadPods"`
	Operator     OperatorResults `json:"operator"`
	StatefulSets []STSResults    `json:"statefulSets"`
}

// OperatorResults are the operator's figures.
type OperatorResults struct {
	Available         Seconds           `json:"timeToAvailable"`
	Converged         Seconds           `json:"timeToConverged"`
	Rollout           Seconds           `json:"rollout"`
	Reshard           Seconds           `json:"reshard"`
	RolloutCov        Coverage          `json:"rolloutCoverage"`
	ReshardCov        Coverage          `json:"reshardCoverage"`
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
	Policy             string  `json:"policy"`
	Ready              Seconds `json:"timeToReady"`
	Rollout            Seconds `json:"rollout"`
	ScaleDown          Seconds `json:"scaleDown"`
	RolloutUncovered   Seconds `json:"rolloutUncoveredSum"`
	RolloutMaxShard    Seconds `json:"rolloutUncoveredMaxShard"`
	RolloutAnyShard    Seconds `json:"rolloutAnyShardUncovered"`
	ScaleDownUncovered Seconds `json:"scaleDownUncoveredSum"`
}

// Counts are API requests by kind.
type Counts struct {
	Reads  float64 `json:"reads"`
	Writes float64 `json:"writes"`
}

// Coverage is a coverage watcher's summary.
type Coverage struct {
	Uncovered Seconds `json:"uncovered"`
	Overlap   Seconds `json:"overlap"`
}

// Seconds marshals a duration as seconds.
type Seconds time.Duration

// MarshalJSON writes seconds with millisecond precision.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(s).Seconds(), 'f', 3, 64)), nil
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
		Machine:      machine(),
		StartupDelay: o.startupDelay.String(),
		Settle:       o.settle.String(),
		MaxSurge:     o.maxSurge,
		Steady:       o.steady.String(),
	}
	for _, n := range o.sizes {
		sr, err := runSize(ctx, o, n, manager)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		res.Sizes = append(res.Sizes, sr)
		printTable(os.Stdout, res)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	logf("wrote %s", o.out)
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
