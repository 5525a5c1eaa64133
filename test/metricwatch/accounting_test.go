package metricwatch

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"

	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

// These tests drive the watcher with a fake metadata client for the truth
// and httptest servers (on 127.0.0.1) playing kube-state-metrics, so the
// accounting rules are checked in seconds without a cluster.

func objMeta(kind, ns, name, uid string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid),
			CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))},
	}
}

// fakeKSM serves a settable body, or a settable status.
type fakeKSM struct {
	mu     sync.Mutex
	lines  []string
	status int
	// onServe, if set, runs (once) when a body is served.
	onServe func()
	srv     *httptest.Server
}

func newFakeKSM(t *testing.T, lines ...string) *fakeKSM {
	f := &fakeKSM{lines: lines, status: http.StatusOK}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.status != http.StatusOK {
			w.WriteHeader(f.status)
			return
		}
		fmt.Fprintln(w, "# HELP kube_pod_info Information about pod.\n# TYPE kube_pod_info gauge")
		for _, l := range f.lines {
			fmt.Fprintln(w, l)
		}
		if f.onServe != nil {
			f.onServe()
			f.onServe = nil
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKSM) set(status int, lines ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.lines = status, lines
}

func (f *fakeKSM) target(name string) Target { return Target{Name: name, URL: f.srv.URL + "/metrics"} }

func pod(uid string) string {
	return fmt.Sprintf(`kube_pod_info{namespace="ns-a",pod="p-%s",uid="%s",node="n1"} 1`, uid, uid)
}

// targetList is a Targets function whose answer a test can change.
type targetList struct {
	mu  sync.Mutex
	ts  []Target
	err error
}

func (l *targetList) set(err error, ts ...Target) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ts, l.err = ts, err
}

func (l *targetList) get(context.Context) ([]Target, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ts), l.err
}

// ticksAfterReset resets w and waits until n more ticks were counted.
func ticksAfterReset(t *testing.T, w *Watcher, n int) Report {
	t.Helper()
	w.Reset()
	return ticks(t, w, n)
}

// ticks waits until the measurement has n ticks.
func ticks(t *testing.T, w *Watcher, n int) Report {
	t.Helper()
	var r Report
	wait.Eventually(t, 20*time.Millisecond, 30*time.Second, fmt.Sprintf("%d ticks", n), func() error {
		if r = w.Report(); r.Ticks < n {
			return fmt.Errorf("%d ticks", r.Ticks)
		}
		return nil
	})
	t.Logf("%s", r)
	return r
}

func TestAccounting(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	scheme := metadatafake.NewTestScheme()
	metav1.AddMetaToScheme(scheme)
	mc := metadatafake.NewSimpleMetadataClient(scheme,
		objMeta("Node", "", "n1", "node-uid-1"), objMeta("Node", "", "n2", "node-uid-2"),
		objMeta("Namespace", "", "ns-a", "ns-uid-a"), objMeta("Namespace", "", "ns-b", "ns-uid-b"),
		objMeta("Pod", "ns-a", "p-u1", "u1"), objMeta("Pod", "ns-a", "p-u2", "u2"), objMeta("Pod", "ns-a", "p-u3", "u3"),
		objMeta("ConfigMap", "ns-a", "c1", "cm-uid-1"), objMeta("ConfigMap", "ns-b", "c2", "cm-uid-2"),
	)
	// Shard A: n1, ns-a, u1, c1. Shard B: n2, ns-b, u2, u3, c2 (5 objects).
	linesA := []string{`kube_node_info{node="n1"} 1`, `kube_namespace_created{namespace="ns-a"} 1.7e+09`, pod("u1"),
		`kube_configmap_info{namespace="ns-a",configmap="c1"} 1`}
	linesB := []string{`kube_node_info{node="n2",kernel_version="x"} 1`, `kube_namespace_created{namespace="ns-b"} 1.7e+09`,
		pod("u2"), pod("u3"), `kube_configmap_info{configmap="c2",namespace="ns-b"} 1`,
		`kube_pod_status_phase{namespace="ns-a",pod="p-u9",uid="u9",phase="Running"} 1`} // not a kube_pod_info: ignored
	a, b := newFakeKSM(t, linesA...), newFakeKSM(t, linesB...)
	targets := &targetList{}
	targets.set(nil, a.target("a"), b.target("b"))

	const grace = 500 * time.Millisecond
	w, err := Start(t.Context(), Options{Metadata: mc, Targets: targets.get, Interval: 40 * time.Millisecond,
		Grace: grace, ScrapeTimeout: 2 * time.Second, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			w.Stop()
		}
	})

	t.Run("complete and disjoint", func(t *testing.T) {
		r := ticksAfterReset(t, w, 5)
		if r.MissingObjectSeconds != 0 || r.DuplicateObjectSeconds != 0 || r.ExtraObjectSeconds != 0 || r.ScrapeErrors != 0 {
			t.Errorf("want nothing missing, duplicate, extra or failed: %s", r)
		}
		if want := map[string]int{"a": 4, "b": 5}; !mapsEqual(r.Last.Exported, want) {
			t.Errorf("exported %v, want %v", r.Last.Exported, want)
		}
	})

	t.Run("failed scrape exports nothing", func(t *testing.T) {
		b.set(http.StatusInternalServerError)
		defer b.set(http.StatusOK, linesB...)
		r := ticksAfterReset(t, w, 5)
		if r.MissingObjectSeconds <= 0 || r.Worst.Missing != 5 || r.ScrapeErrors < 4 {
			t.Errorf("want shard B's 5 objects missing and scrape errors: %s", r)
		}
		want := map[Kind]int{Nodes: 1, Namespaces: 1, Pods: 2, ConfigMaps: 1}
		if !mapsEqual(r.Worst.MissingByKind, want) {
			t.Errorf("worst by kind %v, want %v", r.Worst.MissingByKind, want)
		}
		if !slices.Contains(r.Worst.MissingExamples, "pods ns-a/p-u2") {
			t.Errorf("examples %v do not name pod ns-a/p-u2", r.Worst.MissingExamples)
		}
		// The series holds every tick counted, in order, and sums to the
		// report: missing object-seconds are its missing counts times
		// each tick's length.
		if len(r.Series) != r.Ticks || !r.Series[len(r.Series)-1].At.Equal(r.Last.At) {
			t.Errorf("series of %d instants for %d ticks", len(r.Series), r.Ticks)
		}
		sum, from := 0.0, r.Since
		for _, in := range r.Series {
			if in.At.Before(from) {
				t.Errorf("series out of order at %s", in.At)
			}
			sum += float64(in.Missing) * in.At.Sub(from).Seconds()
			from = in.At
		}
		if diff := sum - r.MissingObjectSeconds; diff > 1e-6 || diff < -1e-6 {
			t.Errorf("series sums to %.6f object-s, report %.6f", sum, r.MissingObjectSeconds)
		}
		// Object-seconds are missing objects times elapsed time.
		if span := r.Until.Sub(r.Since).Seconds(); r.MissingObjectSeconds > 5*span+1e-9 {
			t.Errorf("%.3f object-s in %.3f s with 5 objects missing", r.MissingObjectSeconds, span)
		}
	})

	t.Run("a target that answers but has listed nothing", func(t *testing.T) {
		b.set(http.StatusOK) // headers only, like KSM before its first list
		defer b.set(http.StatusOK, linesB...)
		r := ticksAfterReset(t, w, 5)
		if r.Worst.Missing != 5 || r.ScrapeErrors != 0 {
			t.Errorf("want 5 missing without scrape errors: %s", r)
		}
	})

	t.Run("duplicates", func(t *testing.T) {
		b.set(http.StatusOK, append(slices.Clone(linesB), pod("u1"), `kube_node_info{node="n1"} 1`)...)
		defer b.set(http.StatusOK, linesB...)
		r := ticksAfterReset(t, w, 5)
		if r.DuplicateObjectSeconds <= 0 || r.MostDuplicates.Duplicates != 2 || r.Worst.Missing != 0 {
			t.Errorf("want 2 duplicates and nothing missing: %s", r)
		}
		if want := map[Kind]int{Pods: 1, Nodes: 1}; !mapsEqual(r.MostDuplicates.DuplicatesByKind, want) {
			t.Errorf("duplicates by kind %v, want %v", r.MostDuplicates.DuplicatesByKind, want)
		}
	})

	t.Run("grace for new and deleted objects", func(t *testing.T) {
		// A new pod nobody exports is not required within the grace window.
		if err := mc.Tracker().Add(objMeta("Pod", "ns-a", "p-new", "u-new")); err != nil {
			t.Fatal(err)
		}
		added := time.Now()
		// Delete u3 while B keeps exporting it: not extra within grace.
		if err := mc.Tracker().Delete(kindInfos[Pods].gvr, "ns-a", "p-u3"); err != nil {
			t.Fatal(err)
		}
		w.Reset()
		time.Sleep(grace / 3)
		if r := w.Report(); time.Since(added) < grace && (r.Worst.Missing != 0 || r.ExtraObjectSeconds != 0) {
			t.Errorf("within grace: %s", r)
		}
		// After the grace window the new pod is missing; u3, exported for
		// longer than grace after its deletion, is extra.
		wait.Eventually(t, 20*time.Millisecond, 30*time.Second, "new pod missing and deleted pod extra", func() error {
			if l := w.Report().Last; l.Missing != 1 || l.Extra != 1 {
				return fmt.Errorf("last tick: %d missing %v, %d extra", l.Missing, l.MissingExamples, l.Extra)
			}
			return nil
		})
		if err := mc.Tracker().Delete(kindInfos[Pods].gvr, "ns-a", "p-new"); err != nil {
			t.Fatal(err)
		}
		b.set(http.StatusOK, slices.DeleteFunc(slices.Clone(linesB), func(l string) bool { return strings.Contains(l, `"u3"`) })...)
		wait.Eventually(t, 20*time.Millisecond, 30*time.Second, "back to clean", func() error {
			if l := w.Report().Last; l.Missing != 0 || l.Extra != 0 || l.Duplicates != 0 {
				return fmt.Errorf("last tick: %+v", l)
			}
			return nil
		})
	})

	t.Run("a deletion KSM saw first is not missing", func(t *testing.T) {
		if err := mc.Tracker().Add(objMeta("Pod", "ns-a", "p-u4", "u4")); err != nil {
			t.Fatal(err)
		}
		b.set(http.StatusOK, append(slices.Clone(linesB), pod("u4"))...)
		time.Sleep(grace) // so that u4 is required
		wait.Eventually(t, 20*time.Millisecond, 30*time.Second, "u4 exported", func() error {
			if l := w.Report().Last; l.Missing != 0 || l.Exported["b"] != 6 {
				return fmt.Errorf("last tick: %+v", l)
			}
			return nil
		})
		// B stops exporting u4 and, a moment after serving, the API
		// server deletes it: KSM learnt of the deletion before this
		// watcher did. The tick that scraped B must not count u4.
		// The serve must belong to a counted tick: reset, and wait for one
		// tick, so the tick in progress began after the Reset.
		ticksAfterReset(t, w, 1)
		deleted := make(chan struct{})
		b.mu.Lock()
		b.lines = linesB
		b.onServe = func() {
			go func() {
				defer close(deleted)
				time.Sleep(5 * time.Millisecond)
				if err := mc.Tracker().Delete(kindInfos[Pods].gvr, "ns-a", "p-u4"); err != nil {
					t.Error(err)
				}
			}()
		}
		b.mu.Unlock()
		<-deleted
		r := ticks(t, w, 4)
		if r.Worst.Missing != 0 {
			t.Errorf("u4 counted missing: %s", r)
		}
	})

	t.Run("targets error skips the tick", func(t *testing.T) {
		targets.set(fmt.Errorf("no pods"))
		defer targets.set(nil, a.target("a"), b.target("b"))
		w.Reset()
		wait.Eventually(t, 20*time.Millisecond, 30*time.Second, "target errors", func() error {
			if r := w.Report(); r.TargetErrors < 3 || r.Ticks != 0 {
				return fmt.Errorf("%s", r)
			}
			return nil
		})
	})

	t.Run("only loopback is scraped", func(t *testing.T) {
		port := a.srv.Listener.Addr().(interface{ String() string }).String()
		_, p, _ := strings.Cut(port, ":")
		targets.set(nil, a.target("a"), b.target("b"),
			Target{Name: "remote", URL: "http://192.0.2.1:" + p + "/metrics"},
			Target{Name: "by-name", URL: "http://localhost:" + p + "/metrics"})
		defer targets.set(nil, a.target("a"), b.target("b"))
		r := ticksAfterReset(t, w, 3)
		if r.Last.FailedTargets != 2 || r.Worst.Missing != 0 {
			t.Errorf("want the two non-loopback targets refused and nothing missing: %s, last %+v", r, r.Last)
		}
	})

	w.Stop()
	w.Stop() // idempotent
	stopped = true
	a.srv.Close()
	b.srv.Close()
	wait.Eventually(t, 50*time.Millisecond, 10*time.Second, "goroutines back to the start", func() error {
		if n := runtime.NumGoroutine(); n > goroutines {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, %d before Start:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func mapsEqual[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "127.255.255.254": true,
		"10.0.0.1": false, "128.0.0.1": false, "::1": false, "localhost": false, "": false,
		"::ffff:127.0.0.1": true, // the same IPv4 address
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestPodTargets(t *testing.T) {
	mk := func(name, ip string, ready bool, mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: name, Labels: map[string]string{"app": "ksm"}}}
		p.Status.PodIP = ip
		p.Status.Phase = corev1.PodRunning
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	now := metav1.Now()
	cs := fake.NewClientset(
		mk("serving", "127.0.0.5", true, nil),
		mk("not-ready", "127.0.0.6", false, nil),
		mk("terminating", "127.0.0.7", true, func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		mk("failed", "127.0.0.8", true, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		mk("remote", "10.244.0.9", true, nil),
		mk("ipv6", "fd00::1", true, nil),
		mk("no-ip", "", true, nil),
		mk("other-app", "127.0.0.10", true, func(p *corev1.Pod) { p.Labels["app"] = "other" }),
	)
	got, err := PodTargets(cs, "monitoring", "app=ksm", 8080)(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{{Name: "monitoring/serving", URL: "http://127.0.0.5:8080/metrics"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
