// Package workload fills a cluster with objects for kube-state-metrics to
// export: namespaces, ConfigMaps and pods. Pods get spec.nodeName preset
// (round-robin over the given nodes), which bypasses the scheduler; on the
// local cluster kwok then marks them Running and Ready. The returned Summary
// lists every object with its UID, so a test can predict each object's shard
// with test/e2e/shardcheck.ShardOf.
package workload

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	// Image is the pods' container image (never pulled on kwok nodes).
	Image = "registry.k8s.io/pause:3.10"
	// LabelKey marks every object Seed creates, with Options.Prefix as value.
	LabelKey = "workload.ksmscale.example.com/prefix"
	// workers is how many objects are created concurrently.
	workers = 16
)

// Options configures Seed.
type Options struct {
	// Namespaces is the number of namespaces, named <Prefix>-<i>.
	Namespaces int
	// PodsPerNamespace pods, named <Prefix>-pod-<j>, in every namespace.
	PodsPerNamespace int
	// ConfigMapsPerNamespace ConfigMaps, named <Prefix>-cm-<j>, in every
	// namespace (besides the kube-root-ca.crt the controller manager adds).
	ConfigMapsPerNamespace int
	// Nodes the pods are bound to round-robin via spec.nodeName. Empty
	// leaves the pods to the scheduler.
	Nodes []string
	// Prefix of every name; default "load".
	Prefix string
}

// Object is one created object.
type Object struct {
	Namespace string // empty for namespaces
	Name      string
	UID       types.UID
	NodeName  string // pods only
}

// Key is "namespace/name", or the name for cluster-scoped objects.
func (o Object) Key() string {
	if o.Namespace == "" {
		return o.Name
	}
	return o.Namespace + "/" + o.Name
}

// Summary lists what Seed created (or found already present), sorted by key.
type Summary struct {
	Namespaces []Object
	Pods       []Object
	ConfigMaps []Object
}

// UIDs returns the UIDs per kind: "namespaces", "pods", "configmaps".
func (s Summary) UIDs() map[string][]types.UID {
	uids := func(objs []Object) []types.UID {
		out := make([]types.UID, len(objs))
		for i, o := range objs {
			out[i] = o.UID
		}
		return out
	}
	return map[string][]types.UID{
		"namespaces": uids(s.Namespaces),
		"pods":       uids(s.Pods),
		"configmaps": uids(s.ConfigMaps),
	}
}

// Seed creates the namespaces, then (once each namespace's default
// ServiceAccount exists, which pod admission requires) its ConfigMaps and
// pods, with 16 concurrent workers. Objects that already exist are reused,
// so Seed can be called again with the same options. The caller's clientset
// should allow a high QPS. Seed does not wait for the pods to be Ready; see
// WaitPodsReady.
func Seed(ctx context.Context, cs kubernetes.Interface, o Options) (Summary, error) {
	if o.Prefix == "" {
		o.Prefix = "load"
	}
	if o.Namespaces < 0 || o.PodsPerNamespace < 0 || o.ConfigMapsPerNamespace < 0 {
		return Summary{}, errors.New("workload: negative count")
	}
	var (
		mu  sync.Mutex
		sum Summary
	)
	add := func(list *[]Object, obj Object) {
		mu.Lock()
		*list = append(*list, obj)
		mu.Unlock()
	}
	labels := map[string]string{LabelKey: o.Prefix}

	nsNames := make([]string, o.Namespaces)
	for i := range nsNames {
		nsNames[i] = fmt.Sprintf("%s-%d", o.Prefix, i)
	}

	// Phase 1: namespaces, and their default ServiceAccounts.
	err := parallel(ctx, len(nsNames), func(ctx context.Context, i int) error {
		name := nsNames[i]
		ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			ns, err = cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("namespace %s: %w", name, err)
		}
		add(&sum.Namespaces, Object{Name: ns.Name, UID: ns.UID})
		if o.PodsPerNamespace == 0 {
			return nil
		}
		return waitServiceAccount(ctx, cs, name)
	})
	if err != nil {
		return Summary{}, fmt.Errorf("workload: %w", err)
	}

	// Phase 2: ConfigMaps and pods.
	perNS := o.ConfigMapsPerNamespace + o.PodsPerNamespace
	err = parallel(ctx, len(nsNames)*perNS, func(ctx context.Context, k int) error {
		nsIndex, j := k/perNS, k%perNS
		ns := nsNames[nsIndex]
		if j < o.ConfigMapsPerNamespace {
			name := fmt.Sprintf("%s-cm-%d", o.Prefix, j)
			cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
				Data:       map[string]string{"index": fmt.Sprint(j)},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				cm, err = cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			}
			if err != nil {
				return fmt.Errorf("configmap %s/%s: %w", ns, name, err)
			}
			add(&sum.ConfigMaps, Object{Namespace: ns, Name: cm.Name, UID: cm.UID})
			return nil
		}
		j -= o.ConfigMapsPerNamespace
		name := fmt.Sprintf("%s-pod-%d", o.Prefix, j)
		node := ""
		if len(o.Nodes) > 0 {
			node = o.Nodes[(nsIndex*o.PodsPerNamespace+j)%len(o.Nodes)]
		}
		pod, err := cs.CoreV1().Pods(ns).Create(ctx, newPod(ns, name, node, labels), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			pod, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", ns, name, err)
		}
		add(&sum.Pods, Object{Namespace: ns, Name: pod.Name, UID: pod.UID, NodeName: pod.Spec.NodeName})
		return nil
	})
	if err != nil {
		return Summary{}, fmt.Errorf("workload: %w", err)
	}
	for _, l := range [][]Object{sum.Namespaces, sum.Pods, sum.ConfigMaps} {
		sort.Slice(l, func(i, j int) bool { return l[i].Key() < l[j].Key() })
	}
	return sum, nil
}

func newPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			// Nothing reads a token on a simulated node; skipping it spares
			// the API server the projected volume.
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{
				Name:  "pause",
				Image: Image,
			}},
		},
	}
}

// waitServiceAccount waits until the controller manager has created the
// namespace's default ServiceAccount; until then pod admission refuses pods.
func waitServiceAccount(ctx context.Context, cs kubernetes.Interface, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			return fmt.Errorf("serviceaccount %s/default: %w", ns, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("serviceaccount %s/default not created (is kube-controller-manager running?): %w", ns, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitPodsReady waits until every pod of s is Running and Ready, which on
// kwok nodes also means its IPs are set, so what KSM exports for it no
// longer changes.
func WaitPodsReady(ctx context.Context, cs kubernetes.Interface, s Summary, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := map[types.UID]bool{}
	namespaces := map[string]bool{}
	for _, p := range s.Pods {
		want[p.UID] = true
		namespaces[p.Namespace] = true
	}
	ready := 0
	var lastErr error
	for {
		ready = 0
		for ns := range namespaces {
			list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				lastErr = err
				break
			}
			for i := range list.Items {
				if want[list.Items[i].UID] && PodReady(&list.Items[i]) {
					ready++
				}
			}
		}
		if ready == len(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("workload: %d of %d pods Ready (last error %v): %w", ready, len(want), lastErr, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// PodReady reports whether pod is Running with condition Ready=True.
func PodReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// parallel runs f(ctx, 0..n-1) on up to 16 workers; the first error cancels
// the rest and is returned.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := range work {
				if err := f(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}
