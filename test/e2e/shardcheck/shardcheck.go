// Package shardcheck proves, with real kube-state-metrics processes, that
// the shards a KSMScale runs split the cluster's objects exactly: every
// object is exported by one shard, none by two, and the shards together
// export what a single unsharded kube-state-metrics exports. The shardtable
// command (make demo) and the e2e suite both use it.
//
// On the local cluster the shard pods run on kwok nodes, so their containers
// never run. shardtable therefore starts, for each Ready shard pod, the real
// kube-state-metrics binary with that pod's container arguments (only the
// listen addresses swapped for free loopback ports, and --kubeconfig added),
// plus one unsharded instance with shard 0's arguments minus --shard and
// --total-shards, all against the same API server. It waits until each has
// exported a settled set of series, scrapes them all once more, and prints
// per shard its timings (from start: /healthz up, the four families complete
// as ShardOf predicts, the whole export unchanged for 2 s), its total series
// and the series of four object families, a TOTAL row, the
// unsharded row, and the checks:
//
//   - the union of the shards equals the unsharded output, series for series;
//   - no series is exported by two shards;
//   - how evenly the pods fell on the shards (share per shard, max/min);
//   - how many objects landed on the shard ksm.ShardOf (internal/ksm/shardof.go) predicts.
//
// Every process it starts is stopped by PID before Run returns, also on
// failure and when its context is cancelled.
package shardcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
	"github.com/ksmscale/ksm-scale-operator/test/e2e/ksmproc"
	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

// The object families compared, one series per object each.
const (
	famPod       = "kube_pod_info"
	famNode      = "kube_node_info"
	famNamespace = "kube_namespace_created"
	famConfigMap = "kube_configmap_info"
)

var families = []string{famPod, famNode, famNamespace, famConfigMap}

// Exit codes of Run, also the CLI's.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitError  = 2
)

// Options say which KSMScale to check and how.
type Options struct {
	// Kubeconfig of the cluster.
	Kubeconfig string
	// Name of the KSMScale.
	Name string
	// Bin is the directory holding kube-state-metrics, or the binary itself.
	Bin string
	// Timeout bounds the wait for every kube-state-metrics to settle.
	Timeout time.Duration
	// LogDir receives the processes' logs (default: a temporary directory,
	// removed when every check passes).
	LogDir string
	// Verbose prints command lines and differing series.
	Verbose bool
}

// shardPod is a Ready shard pod and the shard its arguments name.
type shardPod struct {
	pod          *corev1.Pod
	shard, total int32
}

// instance is one started kube-state-metrics.
type instance struct {
	label   string // "0", "1", ..., or "unsharded"
	shard   int32  // -1 for the unsharded one
	podName string
	args    []string
	proc    *ksmproc.Process
	// From start: /healthz answered; the four families matched the
	// ShardOf prediction (or, when the pod's arguments restrict what KSM
	// exports, stopped changing for 2 s); the whole export stayed
	// unchanged for 2 s.
	healthy, complete, stable time.Duration
	all                       map[string][]string
}

// Run starts a real kube-state-metrics per Ready shard pod of the KSMScale
// and one unsharded, compares their exports, writes the table to out and
// returns ExitOK when every check passes, ExitFailed when one fails and
// ExitError (with err) when it could not run. Every process it starts is
// stopped before it returns.
func Run(ctx context.Context, o Options, out io.Writer) (code int, err error) {
	bin := o.Bin
	if fi, err := os.Stat(bin); err == nil && fi.IsDir() {
		bin = filepath.Join(bin, "kube-state-metrics")
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return ExitError, err
	}
	if _, err := os.Stat(bin); err != nil {
		return ExitError, fmt.Errorf("kube-state-metrics binary: %w (build it with hack/build-tools.sh)", err)
	}
	kubeconfig, err := filepath.Abs(o.Kubeconfig)
	if err != nil {
		return ExitError, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return ExitError, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return ExitError, err
	}

	// The KSMScale and its Ready shard pods.
	ns, err := ksmscaleNamespace(ctx, cfg, o.Name)
	if err != nil {
		return ExitError, err
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=%s,%s=true", ksm.LabelKSMScale, o.Name, ksm.LabelSharded),
	})
	if err != nil {
		return ExitError, err
	}
	shards, notes := pickShards(pods.Items)
	for _, n := range notes {
		fmt.Fprintln(out, "note:", n)
	}
	if len(shards) == 0 {
		return ExitError, fmt.Errorf("KSMScale %s has no Ready shard pods in namespace %s", o.Name, ns)
	}
	total := shards[0].total

	// Logs.
	logDir := o.LogDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "shardtable-"); err != nil {
			return ExitError, err
		}
		defer func() {
			if code == ExitOK {
				_ = os.RemoveAll(logDir)
			} else {
				fmt.Fprintln(out, "kube-state-metrics logs kept in", logDir)
			}
		}()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return ExitError, err
	}

	// Command lines: one per shard pod, and the unsharded one.
	ports, err := proc.FreePorts(2 * (len(shards) + 1))
	if err != nil {
		return ExitError, err
	}
	var insts []*instance
	for i, s := range shards {
		args, err := ksmproc.ArgsFromPod(s.pod, kubeconfig, ports[2*i], ports[2*i+1])
		if err != nil {
			return ExitError, err
		}
		insts = append(insts, &instance{label: strconv.Itoa(int(s.shard)), shard: s.shard, podName: s.pod.Name, args: args})
	}
	n := len(shards)
	unshardedArgs, err := ksmproc.ArgsFromPod(shards[0].pod, kubeconfig, ports[2*n], ports[2*n+1])
	if err != nil {
		return ExitError, err
	}
	insts = append(insts, &instance{label: "unsharded", shard: -1, args: ksmproc.UnshardedArgs(unshardedArgs)})

	// What the API server holds, to know when each process has caught up.
	objs, err := listObjects(ctx, cs)
	if err != nil {
		return ExitError, err
	}
	expected := objs.expectedCounts(total)

	fmt.Fprintf(out, "KSMScale %s: %d Ready shard pods in namespace %s, --total-shards=%d; starting %d kube-state-metrics (%s)\n",
		o.Name, len(shards), ns, total, len(insts), bin)

	// Start everything, and stop everything on the way out whatever happens.
	defer func() {
		var wg sync.WaitGroup
		for _, in := range insts {
			if in.proc != nil {
				wg.Go(func() {
					if err := in.proc.Stop(); err != nil {
						fmt.Fprintln(os.Stderr, "shardtable:", err)
					}
				})
			}
		}
		wg.Wait()
	}()
	runCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, in := range insts {
		wg.Go(func() {
			err := in.startAndSettle(runCtx, bin, logDir, expected)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ExitError, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	if first != nil {
		return ExitError, first
	}
	if o.Verbose {
		for _, in := range insts {
			fmt.Fprintf(out, "  %-9s pid %-7d %s %s\n", in.label, in.proc.PID(), bin, strings.Join(in.args, " "))
		}
	}

	// One final scrape of every process, as close together as possible.
	if err := scrapeAll(runCtx, insts); err != nil {
		return ExitError, err
	}
	// Objects again: whatever a process exported existed by now.
	if objs, err = listObjects(ctx, cs); err != nil {
		return ExitError, err
	}
	ok := report(out, insts, objs, total, o.Verbose)
	if !ok {
		return ExitFailed, errors.New("the shards do not split the objects exactly (see above)")
	}
	return ExitOK, nil
}

// ksmscaleNamespace reads the KSMScale and returns spec.namespace (default monitoring).
func ksmscaleNamespace(ctx context.Context, cfg *rest.Config, name string) (string, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return "", err
	}
	k := &v1alpha1.KSMScale{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, k); err != nil {
		return "", fmt.Errorf("KSMScale %s: %w", name, err)
	}
	if k.Spec.Namespace == "" {
		return v1alpha1.DefaultNamespace, nil
	}
	return k.Spec.Namespace, nil
}

// pickShards keeps the Ready shard pods of one generation, one per shard.
// During a reshard two generations (different --total-shards) run side by
// side, and during a rollout a shard may have two pods; the most complete
// generation and the newest pod per shard are taken, and notes say so.
func pickShards(pods []corev1.Pod) ([]shardPod, []string) {
	var notes []string
	groups := map[int32]map[int32]shardPod{}
	for i := range pods {
		p := &pods[i]
		if !podReady(p) {
			notes = append(notes, fmt.Sprintf("skipping pod %s: not Ready", p.Name))
			continue
		}
		var args []string
		for _, c := range p.Spec.Containers {
			if c.Name == ksmproc.ContainerName {
				args = c.Args
			}
		}
		sv, ok1 := ksmproc.FlagValue(args, "shard")
		tv, ok2 := ksmproc.FlagValue(args, "total-shards")
		shard, err1 := strconv.ParseInt(sv, 10, 32)
		total, err2 := strconv.ParseInt(tv, 10, 32)
		if !ok1 || !ok2 || err1 != nil || err2 != nil || total < 1 || shard < 0 || shard >= total {
			notes = append(notes, fmt.Sprintf("skipping pod %s: no valid --shard/--total-shards in its arguments", p.Name))
			continue
		}
		g := groups[int32(total)]
		if g == nil {
			g = map[int32]shardPod{}
			groups[int32(total)] = g
		}
		if prev, dup := g[int32(shard)]; dup {
			older, newer := prev, shardPod{p, int32(shard), int32(total)}
			if older.pod.CreationTimestamp.After(newer.pod.CreationTimestamp.Time) {
				older, newer = newer, older
			}
			notes = append(notes, fmt.Sprintf("shard %d/%d has two Ready pods (rollout?): using %s, skipping %s", shard, total, newer.pod.Name, older.pod.Name))
			g[int32(shard)] = newer
			continue
		}
		g[int32(shard)] = shardPod{p, int32(shard), int32(total)}
	}
	var best int32 = -1
	for total, g := range groups {
		if best < 0 || len(g) > len(groups[best]) || (len(g) == len(groups[best]) && total > best) {
			best = total
		}
	}
	if best < 0 {
		return nil, notes
	}
	for total, g := range groups {
		if total != best {
			notes = append(notes, fmt.Sprintf("skipping %d pods of the other generation --total-shards=%d (reshard in progress?)", len(g), total))
		}
	}
	var out []shardPod
	for _, s := range groups[best] {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].shard < out[j].shard })
	if len(out) != int(best) {
		notes = append(notes, fmt.Sprintf("only %d of %d shards have a Ready pod: the union cannot be complete", len(out), best))
	}
	return out, notes
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// startAndSettle starts the process and waits until its export settled.
func (in *instance) startAndSettle(ctx context.Context, bin, logDir string, expected map[int32]map[string]int) error {
	began := time.Now()
	p, err := ksmproc.Start(ctx, ksmproc.Options{
		Bin:     bin,
		Args:    in.args,
		LogFile: filepath.Join(logDir, "ksm-"+in.label+".log"),
		Name:    "kube-state-metrics " + in.label,
	})
	if err != nil {
		return err
	}
	in.proc = p
	in.healthy = time.Since(began)
	want := expected[in.shard]
	deadline, _ := ctx.Deadline()
	_, err = ksmproc.WaitStable(ctx, p, families, func(counts map[string]int) bool {
		for _, f := range families {
			if counts[f] != want[f] {
				return false
			}
		}
		return true
	}, time.Until(deadline))
	if err != nil {
		return err
	}
	in.complete = time.Since(began)
	// The four families are complete; the other resources' lists run
	// concurrently, so let the whole export settle too before the SERIES
	// column is read.
	_, err = ksmproc.WaitStable(ctx, p, nil, nil, time.Until(deadline))
	in.stable = time.Since(began)
	return err
}

func scrapeAll(ctx context.Context, insts []*instance) error {
	var wg sync.WaitGroup
	errs := make([]error, len(insts))
	for i, in := range insts {
		wg.Go(func() {
			text, err := in.proc.Scrape(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			in.all = ksmproc.ParseSeries(text)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// objects is what the API server holds for the four families, keyed as the
// families' labels identify them.
type objects struct {
	pods       map[string]types.UID // by UID string (kube_pod_info has a uid label)
	nodes      map[string]types.UID // by name
	namespaces map[string]types.UID // by name
	configMaps map[string]types.UID // by namespace/name
}

func listObjects(ctx context.Context, cs kubernetes.Interface) (objects, error) {
	o := objects{map[string]types.UID{}, map[string]types.UID{}, map[string]types.UID{}, map[string]types.UID{}}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, err
	}
	for _, p := range pods.Items {
		o.pods[string(p.UID)] = p.UID
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, err
	}
	for _, n := range nodes.Items {
		o.nodes[n.Name] = n.UID
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, err
	}
	for _, n := range nss.Items {
		o.namespaces[n.Name] = n.UID
	}
	cms, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return o, err
	}
	for _, c := range cms.Items {
		o.configMaps[c.Namespace+"/"+c.Name] = c.UID
	}
	return o, nil
}

func (o objects) byFamily() map[string]map[string]types.UID {
	return map[string]map[string]types.UID{famPod: o.pods, famNode: o.nodes, famNamespace: o.namespaces, famConfigMap: o.configMaps}
}

// expectedCounts predicts the series per family for each shard (-1: unsharded).
func (o objects) expectedCounts(total int32) map[int32]map[string]int {
	out := map[int32]map[string]int{-1: {}}
	for s := range total {
		out[s] = map[string]int{}
	}
	for f, m := range o.byFamily() {
		for _, uid := range m {
			out[ksm.ShardOf(uid, total)][f]++
			out[-1][f]++
		}
	}
	return out
}

// objectKey returns the key an exported series names its object by, in
// the maps of objects.
func objectKey(family, series string) string {
	_, l := ksmproc.Labels(series)
	switch family {
	case famPod:
		return l["uid"]
	case famNode:
		return l["node"]
	case famNamespace:
		return l["namespace"]
	case famConfigMap:
		return l["namespace"] + "/" + l["configmap"]
	}
	return ""
}

// report prints the table and the checks and says whether all passed.
func report(out io.Writer, insts []*instance, objs objects, total int32, verbose bool) bool {
	shards, unsharded := insts[:len(insts)-1], insts[len(insts)-1]
	count := func(in *instance) int {
		n := 0
		for _, s := range in.all {
			n += len(s)
		}
		return n
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "SHARD\tPOD\tUP/COMPLETE/SETTLED\tSERIES\t%s\t\n", strings.Join(families, "\t"))
	sums := make([]int, len(families))
	sumSeries := 0
	for _, in := range shards {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t", in.label, in.podName, in.timings(), count(in))
		sumSeries += count(in)
		for i, f := range families {
			fmt.Fprintf(tw, "%d\t", len(in.all[f]))
			sums[i] += len(in.all[f])
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "TOTAL\t\t\t%d\t", sumSeries)
	for _, s := range sums {
		fmt.Fprintf(tw, "%d\t", s)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "UNSHARDED\t(shard %s's args, no --shard/--total-shards)\t%s\t%d\t", shards[0].label, unsharded.timings(), count(unsharded))
	for _, f := range families {
		fmt.Fprintf(tw, "%d\t", len(unsharded.all[f]))
	}
	fmt.Fprintln(tw)
	_ = tw.Flush()
	fmt.Fprintln(out)

	ok := true
	if len(shards) != int(total) {
		fmt.Fprintf(out, "only %d of %d shards ran: FAIL\n", len(shards), total)
		ok = false
	}

	// Union and duplicates, per family.
	fmt.Fprintln(out, "union of the shards == unsharded, series for series:")
	dupTotal := 0
	for _, f := range families {
		seen := map[string]int{}
		for _, in := range shards {
			for _, s := range in.all[f] {
				seen[s]++
			}
		}
		dups := 0
		for _, c := range seen {
			if c > 1 {
				dups += c - 1
			}
		}
		dupTotal += dups
		var missing, extra []string
		want := map[string]bool{}
		for _, s := range unsharded.all[f] {
			want[s] = true
			if seen[s] == 0 {
				missing = append(missing, s)
			}
		}
		for s := range seen {
			if !want[s] {
				extra = append(extra, s)
			}
		}
		verdict := "yes"
		if len(missing) > 0 || len(extra) > 0 {
			verdict = "NO"
			ok = false
		}
		fmt.Fprintf(out, "  %-24s %-3s  (%d series; %d missing from the shards, %d only in the shards, %d duplicates)\n",
			f, verdict, len(unsharded.all[f]), len(missing), len(extra), dups)
		if verbose || verdict == "NO" {
			sort.Strings(missing)
			sort.Strings(extra)
			for _, s := range head(missing, 5) {
				fmt.Fprintln(out, "      missing:", s)
			}
			for _, s := range head(extra, 5) {
				fmt.Fprintln(out, "      extra:  ", s)
			}
		}
	}
	fmt.Fprintf(out, "series exported by more than one shard: %d\n", dupTotal)
	if dupTotal > 0 {
		ok = false
	}
	if count(unsharded) != sumSeries {
		// Informational: all KSM families are sharded, so the totals
		// should agree too, but only the four families above are checked.
		fmt.Fprintf(out, "note: all series: shards sum to %d, unsharded has %d\n", sumSeries, count(unsharded))
	}

	// Balance.
	pods := make([]int, len(shards))
	objsPer := make([]int, len(shards))
	podSum, objSum := 0, 0
	for i, in := range shards {
		pods[i] = len(in.all[famPod])
		podSum += pods[i]
		for _, f := range families {
			objsPer[i] += len(in.all[f])
		}
		objSum += objsPer[i]
	}
	fmt.Fprintf(out, "how evenly the objects fell: pods per shard %s, max/min %s\n", shares(pods, podSum), ratio(pods))
	fmt.Fprintf(out, "                             all four kinds %s, max/min %s\n", shares(objsPer, objSum), ratio(objsPer))

	// Prediction.
	byFam := objs.byFamily()
	hit, miss, unknown := 0, 0, 0
	for _, in := range shards {
		for _, f := range families {
			for _, s := range in.all[f] {
				uid, found := byFam[f][objectKey(f, s)]
				switch {
				case !found:
					unknown++
				case ksm.ShardOf(uid, total) == in.shard:
					hit++
				default:
					miss++
					if miss <= 5 {
						fmt.Fprintf(out, "      shard %d exports %s, ShardOf says shard %d\n", in.shard, s, ksm.ShardOf(uid, total))
					}
				}
			}
		}
	}
	fmt.Fprintf(out, "objects on the shard ShardOf predicted: %d of %d", hit, hit+miss+unknown)
	if unknown > 0 {
		fmt.Fprintf(out, " (%d no longer in the API server)", unknown)
	}
	fmt.Fprintln(out)
	if miss > 0 {
		ok = false
	}
	if ok {
		fmt.Fprintln(out, "RESULT: OK, every object is exported by exactly one shard")
	} else {
		fmt.Fprintln(out, "RESULT: FAIL")
	}
	return ok
}

// timings renders the three durations from start, in seconds.
func (in *instance) timings() string {
	return fmt.Sprintf("%.1f/%.1f/%.1fs", in.healthy.Seconds(), in.complete.Seconds(), in.stable.Seconds())
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func shares(counts []int, sum int) string {
	parts := make([]string, len(counts))
	for i, c := range counts {
		pct := 0.0
		if sum > 0 {
			pct = 100 * float64(c) / float64(sum)
		}
		parts[i] = fmt.Sprintf("%.1f%%", pct)
	}
	return strings.Join(parts, " / ")
}

func ratio(counts []int) string {
	if len(counts) == 0 {
		return "-"
	}
	lo, hi := math.MaxInt, 0
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	if lo == 0 {
		return "inf"
	}
	return fmt.Sprintf("%.2f", float64(hi)/float64(lo))
}
