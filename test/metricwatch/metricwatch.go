// Package metricwatch measures what kube-state-metrics shards actually
// export, object by object, against the truth from the API server.
//
// test/coverage judges pods: is some complete generation of shard pods
// Ready? That is necessary but not sufficient, because KSM turns Ready before
// its first list is stored (its /readyz does not wait for it, through
// v2.20.0), so a Ready generation may still export nothing. This watcher
// closes that gap: about once a second it scrapes every serving target,
// streams each body through internal/promtext, and compares the objects
// exported with the objects that exist. It accumulates, per change being
// measured (see Reset), missing object-seconds
// (objects nobody exported, times the tick length), the worst instant,
// duplicate object-seconds (objects exported by two or more targets) and
// extra object-seconds (objects exported that no longer exist).
//
// Each kind is identified the way KSM labels it: pods by UID (kube_pod_info's
// uid label), nodes by name (kube_node_info{node}), namespaces by name
// (kube_namespace_created{namespace}), configmaps by namespace/name
// (kube_configmap_info{namespace,configmap}).
//
// Only loopback addresses (127.0.0.0/8) are ever dialled; see Start and
// PodTargets.
package metricwatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/ksmscale/ksm-scale-operator/internal/promtext"
)

// Defaults for the zero fields of Options.
const (
	// DefaultInterval is how often the targets are scraped: often enough to
	// see a gap of a few seconds, rare enough for two shared cores.
	DefaultInterval = time.Second
	// DefaultGrace is how long a new object may go unexported, and a deleted
	// one may still be exported, without counting: KSM learns of a change by
	// its own watch, a moment after this watcher does or before it, and that
	// race is not what a test wants to measure.
	DefaultGrace = 5 * time.Second
	// DefaultScrapeTimeout bounds one scrape, so that a hung target makes a
	// tick longer but never stops the watcher.
	DefaultScrapeTimeout = 5 * time.Second
	// maxExamples is how many missing objects an Instant names, for logs.
	maxExamples = 5
	// confirmDelay is how long a tick waits before it counts an object
	// nobody exported as missing, to see whether its deletion was merely
	// on the way (at most half the interval). A tick with nothing missing
	// does not wait.
	confirmDelay = 300 * time.Millisecond
)

// Target is one endpoint serving kube-state-metrics' /metrics.
type Target struct {
	// Name identifies the target in reports and logs (a pod name, "shard-0");
	// it should be unique, since Instant.Exported is keyed by it.
	Name string
	// URL is the full metrics URL, e.g. http://127.0.0.1:8080/metrics. Its
	// host must be an IP address in 127.0.0.0/8.
	URL string
}

// Options configures Start.
type Options struct {
	// Metadata reads the truth (object identities only). If nil, one is made
	// from Config.
	Metadata metadata.Interface
	// Config is used when Metadata is nil.
	Config *rest.Config
	// Targets returns the endpoints to scrape at each tick; see PodTargets.
	// A tick whose Targets call fails is skipped and counted in
	// Report.TargetErrors, since nothing can be said about it.
	Targets func(ctx context.Context) ([]Target, error)
	// Interval between ticks; default DefaultInterval.
	Interval time.Duration
	// Grace is the window in which a new object is not yet required and a
	// deleted one is not yet extra or duplicate noise; default DefaultGrace.
	Grace time.Duration
	// ScrapeTimeout bounds each scrape; default DefaultScrapeTimeout.
	ScrapeTimeout time.Duration
	// Kinds limits the kinds compared; nil means AllKinds.
	Kinds []Kind
	// Limits bounds each scrape body; zero fields take promtext's defaults.
	Limits promtext.Limits
	// Logf receives changes worth knowing (a target starts or stops failing,
	// the number of missing objects changes); nil discards them.
	Logf func(format string, args ...any)
}

// Instant is what one tick saw. It is never modified after the tick.
type Instant struct {
	// At is when the tick's scrapes ended.
	At time.Time
	// Targets is the number of targets scraped; FailedTargets of them
	// failed and count as exporting nothing.
	Targets, FailedTargets int
	// Exported is the number of objects each target exported, by target
	// name; a failed target is absent.
	Exported map[string]int
	// Missing is the number of required objects (known for at least Grace)
	// that no target exported, in total and per kind.
	Missing       int
	MissingByKind map[Kind]int
	// MissingExamples names a few missing objects, for logs.
	MissingExamples []string
	// Duplicates is the number of objects exported by two or more targets,
	// in total and per kind; objects deleted less than Grace ago are left
	// out.
	Duplicates       int
	DuplicatesByKind map[Kind]int
	// Extra is the number of exported objects the API server has not had
	// for at least Grace (deleted, and not recently).
	Extra int
}

// Report is what the watcher measured since Start or the last Reset.
type Report struct {
	// Since is the start of the measurement (Start or Reset); Until is the
	// end of the last tick counted.
	Since, Until time.Time
	// Ticks is the number of ticks counted.
	Ticks int
	// ScrapeErrors counts failed scrapes (one per target and tick).
	ScrapeErrors int
	// TargetErrors counts ticks skipped because Targets failed.
	TargetErrors int
	// MissingObjectSeconds is the sum over ticks of missing objects times
	// the tick's duration; DuplicateObjectSeconds and ExtraObjectSeconds
	// likewise.
	MissingObjectSeconds, DuplicateObjectSeconds, ExtraObjectSeconds float64
	// Worst is the tick with the most objects missing (the first of equals);
	// zero when no tick was counted.
	Worst Instant
	// MostDuplicates is the tick with the most duplicate objects.
	MostDuplicates Instant
	// Last is the latest tick counted.
	Last Instant
	// Series is every tick counted, in order: the per-instant view behind
	// the sums (missing objects over time, each target's count), for
	// benchmarks that plot a change or time a shard's first full scrape.
	// Report returns a copy; the Instants are shared and never modified.
	Series []Instant
}

// String is a one-line summary for test logs.
func (r Report) String() string {
	s := fmt.Sprintf("missing %.1f object-s (worst %d%s), duplicates %.1f object-s (most %d), extra %.1f object-s, %d ticks, %d scrape errors",
		r.MissingObjectSeconds, r.Worst.Missing, byKind(r.Worst.MissingByKind), r.DuplicateObjectSeconds,
		r.MostDuplicates.Duplicates, r.ExtraObjectSeconds, r.Ticks, r.ScrapeErrors)
	if r.TargetErrors > 0 {
		s += fmt.Sprintf(", %d target errors", r.TargetErrors)
	}
	return s
}

func byKind(m map[Kind]int) string {
	var parts []string
	for _, k := range AllKinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// Watcher scrapes the targets at every tick and accumulates a Report. Its
// methods are safe for concurrent use.
type Watcher struct {
	opts   Options
	kinds  []Kind
	fams   map[string]bool
	truth  *truth
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	report   Report
	lastTick time.Time

	// Touched only by the tick loop.
	extraSince  map[Kind]map[string]time.Time
	failing     map[string]string
	lastMissing int
}

// Start lists and watches the truth (metadata only, cluster-wide, for the
// chosen kinds), waits until the initial lists are in, and starts ticking.
// The first measurement starts when Start returns. Objects found by the
// initial list count as known since their creationTimestamp (capped at now),
// so an object that existed long before the watcher is required at once;
// objects added later count from when this watcher saw them.
//
// Scrapes go through a transport that refuses to dial anything but an IP
// address in 127.0.0.0/8 and ignores proxy settings: whatever Targets
// returns, no traffic leaves the machine.
func Start(ctx context.Context, o Options) (*Watcher, error) {
	if o.Targets == nil {
		return nil, errors.New("metricwatch: Options.Targets is required")
	}
	if o.Metadata == nil {
		if o.Config == nil {
			return nil, errors.New("metricwatch: Options.Metadata or Options.Config is required")
		}
		mc, err := metadata.NewForConfig(o.Config)
		if err != nil {
			return nil, fmt.Errorf("metricwatch: %w", err)
		}
		o.Metadata = mc
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = DefaultScrapeTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	kinds := o.Kinds
	if kinds == nil {
		kinds = AllKinds
	}
	fams := map[string]bool{}
	for _, k := range kinds {
		info, ok := kindInfos[k]
		if !ok {
			return nil, fmt.Errorf("metricwatch: unknown kind %q (known: %v)", k, AllKinds)
		}
		fams[info.family] = true
	}

	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{
		opts:       o,
		kinds:      kinds,
		fams:       fams,
		client:     loopbackClient(),
		cancel:     cancel,
		done:       make(chan struct{}),
		extraSince: map[Kind]map[string]time.Time{},
		failing:    map[string]string{},
	}
	tr, err := startTruth(ctx, o.Metadata, kinds)
	if err != nil {
		cancel()
		return nil, err
	}
	w.truth = tr
	now := time.Now()
	w.report = Report{Since: now}
	w.lastTick = now
	go func() {
		defer close(w.done)
		defer tr.wait()
		w.loop(ctx)
	}()
	return w, nil
}

// Reset starts a new measurement: call it just before the change to be
// measured. A tick already under way is not counted in it (its scrapes show
// the state before the change); the first tick counted covers the time from
// Reset. The truth and the grace windows carry on.
func (w *Watcher) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.report = Report{Since: time.Now()}
}

// Report returns the measurement so far.
func (w *Watcher) Report() Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.report
	r.Series = slices.Clone(r.Series)
	return r
}

// Stop ends the ticks and the watches and waits for every goroutine the
// watcher started. It is safe to call more than once.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
	w.client.CloseIdleConnections()
}

func (w *Watcher) loop(ctx context.Context) {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.tick(ctx)
		}
	}
}

// tick scrapes every target and accounts what it saw.
func (w *Watcher) tick(ctx context.Context) {
	start := time.Now()
	targets, err := w.opts.Targets(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		w.mu.Lock()
		w.report.TargetErrors++
		w.mu.Unlock()
		w.opts.Logf("metricwatch: listing targets: %v", err)
		return
	}
	results := w.scrapeAll(ctx, targets)
	if ctx.Err() != nil {
		// Stopping: the scrapes were cut short, and that is no fault of
		// the targets.
		return
	}
	end := time.Now()
	inst, candidates := w.evaluate(start, end, targets, results)
	if len(candidates) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(confirmDelay, w.opts.Interval/2)):
		}
	}
	w.confirmMissing(&inst, candidates)
	w.logChanges(targets, results, inst)

	w.mu.Lock()
	defer w.mu.Unlock()
	if start.Before(w.report.Since) {
		// Its scrapes began before Reset, so it shows the state before
		// the change being measured; the next tick covers from Reset on.
		return
	}
	from := w.lastTick
	if w.report.Since.After(from) {
		from = w.report.Since
	}
	w.lastTick = end
	dt := end.Sub(from).Seconds()
	if dt < 0 {
		dt = 0
	}
	r := &w.report
	r.Ticks++
	r.Until = end
	r.ScrapeErrors += inst.FailedTargets
	r.MissingObjectSeconds += float64(inst.Missing) * dt
	r.DuplicateObjectSeconds += float64(inst.Duplicates) * dt
	r.ExtraObjectSeconds += float64(inst.Extra) * dt
	if r.Ticks == 1 || inst.Missing > r.Worst.Missing {
		r.Worst = inst
	}
	if r.Ticks == 1 || inst.Duplicates > r.MostDuplicates.Duplicates {
		r.MostDuplicates = inst
	}
	r.Last = inst
	r.Series = append(r.Series, inst)
}

// evaluate compares what the targets exported with the truth and returns
// the tick's Instant (without Missing, see confirmMissing) and the
// required objects nobody exported. Creation grace is measured from start
// (before any scrape began), so an object created during the scrapes is
// never required; deletion grace from end.
func (w *Watcher) evaluate(start, end time.Time, targets []Target, results []scrapeResult) (Instant, []candidate) {
	inst := Instant{
		At:               end,
		Targets:          len(targets),
		Exported:         map[string]int{},
		MissingByKind:    map[Kind]int{},
		DuplicatesByKind: map[Kind]int{},
	}
	exported := map[Kind]map[string]int{}
	for _, k := range w.kinds {
		exported[k] = map[string]int{}
	}
	for i, res := range results {
		if res.err != nil {
			inst.FailedTargets++
			continue
		}
		n := 0
		for k, keys := range res.keys {
			for key := range keys {
				exported[k][key]++
			}
			n += len(keys)
		}
		inst.Exported[targets[i].Name] = n
	}

	w.truth.mu.Lock()
	defer w.truth.mu.Unlock()
	w.truth.forget(end.Add(-w.opts.Grace))
	var missing []candidate
	for _, k := range w.kinds {
		objs, deleted := w.truth.objects[k], w.truth.deleted[k]
		for key, o := range objs {
			if start.Sub(o.since) < w.opts.Grace || exported[k][key] > 0 {
				continue
			}
			missing = append(missing, candidate{k, key, o.name})
		}
		if w.extraSince[k] == nil {
			w.extraSince[k] = map[string]time.Time{}
		}
		extra := w.extraSince[k]
		for key, n := range exported[k] {
			_, recentlyDeleted := deleted[key]
			if n >= 2 && !recentlyDeleted {
				inst.Duplicates++
				inst.DuplicatesByKind[k]++
			}
			if _, exists := objs[key]; exists || recentlyDeleted {
				delete(extra, key)
				continue
			}
			// Exported but unknown: either deleted before the grace
			// window, or so new that this watcher has not seen it yet.
			// Only what stays unknown for Grace counts.
			since, ok := extra[key]
			if !ok {
				extra[key] = end
			} else if end.Sub(since) >= w.opts.Grace {
				inst.Extra++
			}
		}
		for key := range extra {
			if exported[k][key] == 0 {
				delete(extra, key)
			}
		}
	}
	return inst, missing
}

// candidate is an object that no target exported at a tick.
type candidate struct {
	kind      Kind
	key, name string
}

// confirmMissing counts the candidates that the truth still holds. It is
// called a moment after evaluate: when an object is deleted, KSM may drop
// it before this watcher's informer delivers the deletion, and such an
// object is not missing, merely gone.
func (w *Watcher) confirmMissing(inst *Instant, candidates []candidate) {
	var examples []string
	w.truth.mu.Lock()
	for _, c := range candidates {
		if _, ok := w.truth.objects[c.kind][c.key]; !ok {
			continue
		}
		inst.Missing++
		inst.MissingByKind[c.kind]++
		examples = append(examples, string(c.kind)+" "+c.name)
	}
	w.truth.mu.Unlock()
	sort.Strings(examples)
	if len(examples) > maxExamples {
		examples = examples[:maxExamples]
	}
	inst.MissingExamples = examples
}

// logChanges logs when a target starts or stops failing and when the
// number of missing objects changes, not at every tick.
func (w *Watcher) logChanges(targets []Target, results []scrapeResult, inst Instant) {
	seen := map[string]bool{}
	for i, res := range results {
		name := targets[i].Name
		seen[name] = true
		prev, wasFailing := w.failing[name]
		switch {
		case res.err != nil && (!wasFailing || prev != res.err.Error()):
			w.opts.Logf("metricwatch: target %s: %v", name, res.err)
			w.failing[name] = res.err.Error()
		case res.err == nil && wasFailing:
			w.opts.Logf("metricwatch: target %s scrapes again (%d objects)", name, inst.Exported[name])
			delete(w.failing, name)
		}
	}
	for name := range w.failing {
		if !seen[name] {
			delete(w.failing, name)
		}
	}
	if inst.Missing != w.lastMissing {
		eg := ""
		if len(inst.MissingExamples) > 0 {
			eg = " (e.g. " + strings.Join(inst.MissingExamples, ", ") + ")"
		}
		w.opts.Logf("metricwatch: %d objects missing%s%s", inst.Missing, byKind(inst.MissingByKind), eg)
		w.lastMissing = inst.Missing
	}
}
