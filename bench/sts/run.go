package sts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/ksmscale/ksm-scale-operator/test/coverage"
	"github.com/ksmscale/ksm-scale-operator/test/follow"
)

// The phases of Run, in order, as passed to Options.Phase.
const (
	PhaseCreate    = "create"
	PhaseRollout   = "rollout"
	PhaseScaleDown = "scale-down"
	PhaseScaleUp   = "scale-up"
)

// Options configures Run.
type Options struct {
	// Namespace is created if needed; Policy names the StatefulSet (Name).
	Namespace string
	Policy    appsv1.PodManagementPolicyType
	// Shards replicas are created, rolled out from Image to NewImage,
	// scaled to ScaleTo and back to Shards.
	Shards, ScaleTo int32
	Image, NewImage string
	// PodLabels are added to the pod template: the label test/kubelet
	// selects, so that real kube-state-metrics runs behind every pod.
	PodLabels map[string]string
	// ClusterRole, if set, is bound to the pods' ServiceAccount for the
	// objects KSM reads.
	ClusterRole string
	// Phase, if set, is called just before each phase's change (PhaseCreate,
	// ...) and returns a function that Run calls with the time the change
	// was finished, by pod readiness; Run waits for it before the next
	// phase, so a caller can wait there until the metrics are complete.
	Phase func(phase string) (done func(end time.Time) error)
	Logf  func(format string, args ...any)
}

// Result is one create / rollout / scale-down / scale-up cycle of an
// autosharded StatefulSet.
type Result struct {
	Policy string
	// Ready is from creating the StatefulSet to all shards' pods Ready.
	Ready time.Duration
	// Rollout is from patching the image to the rollout being finished
	// (every pod updated and Ready, currentRevision == updateRevision).
	Rollout time.Duration
	// ScaleDown is from patching replicas to ScaleTo to readyReplicas ==
	// ScaleTo with the removed ordinals' pods gone; ScaleUp likewise back
	// to Shards.
	ScaleDown, ScaleUp time.Duration
	// RolloutUncovered, ScaleDownUncovered and ScaleUpUncovered are the
	// per-shard coverage of each phase, from pod readiness.
	RolloutUncovered, ScaleDownUncovered, ScaleUpUncovered Report
}

func (r Result) String() string {
	return fmt.Sprintf("%s: ready %s, rollout %s (%s), scale down %s (%s), scale up %s (%s)", r.Policy,
		r.Ready.Round(time.Millisecond), r.Rollout.Round(time.Millisecond), r.RolloutUncovered,
		r.ScaleDown.Round(time.Millisecond), r.ScaleDownUncovered, r.ScaleUp.Round(time.Millisecond), r.ScaleUpUncovered)
}

// Name is the StatefulSet (and Service) name Run uses for policy:
// ksm-<lowercase policy>.
func Name(policy appsv1.PodManagementPolicyType) string {
	return "ksm-" + strings.ToLower(string(policy))
}

// phaseTimeout bounds each wait: generous, and growing with the number of
// pods because OrderedReady handles one pod at a time.
func phaseTimeout(pods int32) time.Duration {
	return 10*time.Minute + time.Duration(pods)*time.Minute
}

// recheck re-evaluates a condition even without events, as a safety net.
const recheck = 2 * time.Second

// Run creates the ServiceAccount, its RBAC, the headless Service and the
// StatefulSet Name(o.Policy) (creating the namespace if needed, and deleting
// a leftover StatefulSet of that name first), and measures: the time to all
// pods Ready; an image rollout; a scale to ScaleTo and back to Shards, each
// with per-shard coverage by readiness. Finally it deletes the StatefulSet
// and Service and waits until the pods are gone, so that the next run starts
// clean (on error too, as far as ctx allows).
func Run(ctx context.Context, cs kubernetes.Interface, o Options) (res Result, err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	phase := o.Phase
	if phase == nil {
		phase = func(string) func(time.Time) error { return func(time.Time) error { return nil } }
	}
	shards, scaleTo, namespace := o.Shards, o.ScaleTo, o.Namespace
	if shards < 1 || scaleTo < 1 {
		return res, fmt.Errorf("sts: shards (%d) and scaleTo (%d) must be positive", shards, scaleTo)
	}
	if o.Image == o.NewImage {
		return res, errors.New("sts: image and newImage must differ, or there is no rollout")
	}
	name := Name(o.Policy)
	res.Policy = string(o.Policy)
	if err := ensure(ctx, cs, namespace, name, o.ClusterRole); err != nil {
		return res, err
	}

	pw, err := Watch(ctx, cs, namespace, Selector(name), name)
	if err != nil {
		return res, fmt.Errorf("sts: watching pods: %w", err)
	}
	defer pw.Stop()
	sw, err := watchStatefulSet(ctx, cs, namespace, name)
	if err != nil {
		return res, fmt.Errorf("sts: watching StatefulSet: %w", err)
	}
	defer sw.stop()
	w := &waiter{pods: pw, sts: sw, logf: logf}

	if sw.get() != nil {
		logf("%s/%s: deleting leftover StatefulSet", namespace, name)
		if err := deleteAndWait(ctx, cs, w, namespace, name, phaseTimeout(int32(len(pw.Pods())))); err != nil {
			return res, err
		}
	}
	defer func() {
		if err == nil {
			return
		}
		// Best effort: leave nothing behind for the next run.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if ctx.Err() != nil {
			_ = cs.AppsV1().StatefulSets(namespace).Delete(cctx, name, metav1.DeleteOptions{})
			return
		}
		if derr := deleteAndWait(cctx, cs, w, namespace, name, 2*time.Minute); derr != nil {
			logf("%s/%s: cleanup after error: %v", namespace, name, derr)
		}
	}()

	// Phase 1: create until every shard is Ready.
	done := phase(PhaseCreate)
	pw.SetReplicas(time.Now(), int(shards))
	start := time.Now()
	sts := StatefulSet(namespace, name, o.Image, shards, o.Policy)
	for k, v := range o.PodLabels {
		sts.Spec.Template.Labels[k] = v
	}
	created, err := cs.AppsV1().StatefulSets(namespace).Create(ctx, sts, metav1.CreateOptions{})
	if err != nil {
		return res, fmt.Errorf("sts: creating %s/%s: %w", namespace, name, err)
	}
	end, err := w.until(ctx, "all pods Ready", phaseTimeout(shards), settled(created.Generation, shards))
	if err != nil {
		return res, err
	}
	res.Ready = end.Sub(start)
	logf("%s/%s: %d pods Ready after %s", namespace, name, shards, res.Ready.Round(time.Millisecond))
	if err := done(end); err != nil {
		return res, err
	}

	// Phase 2: image rollout.
	done = phase(PhaseRollout)
	start = time.Now()
	pw.Reset(start)
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":%q,"image":%q}]}}}}`, ContainerName, o.NewImage)
	patched, err := cs.AppsV1().StatefulSets(namespace).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return res, fmt.Errorf("sts: patching image of %s/%s: %w", namespace, name, err)
	}
	end, err = w.until(ctx, "rollout finished", phaseTimeout(shards), rolledOut(patched.Generation, shards, o.NewImage))
	if err != nil {
		return res, err
	}
	res.Rollout, res.RolloutUncovered = end.Sub(start), pw.Report(end)
	logf("%s/%s: rollout to %s after %s: %s", namespace, name, o.NewImage, res.Rollout.Round(time.Millisecond), res.RolloutUncovered)
	if err := done(end); err != nil {
		return res, err
	}

	// Phases 3 and 4: scale to scaleTo and back.
	scale := func(label string, from, to int32, took *time.Duration, rep *Report) error {
		done := phase(label)
		start := time.Now()
		pw.Reset(start)
		pw.SetReplicas(start, int(to))
		patched, err := cs.AppsV1().StatefulSets(namespace).Patch(ctx, name, types.MergePatchType,
			[]byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, to)), metav1.PatchOptions{})
		if err != nil {
			return fmt.Errorf("sts: scaling %s/%s: %w", namespace, name, err)
		}
		end, err := w.until(ctx, fmt.Sprintf("scaled to %d", to), phaseTimeout(max(from, to)), settled(patched.Generation, to))
		if err != nil {
			return err
		}
		*took, *rep = end.Sub(start), pw.Report(end)
		logf("%s/%s: scaled %d -> %d after %s: %s", namespace, name, from, to, took.Round(time.Millisecond), *rep)
		return done(end)
	}
	if err := scale(PhaseScaleDown, shards, scaleTo, &res.ScaleDown, &res.ScaleDownUncovered); err != nil {
		return res, err
	}
	if err := scale(PhaseScaleUp, scaleTo, shards, &res.ScaleUp, &res.ScaleUpUncovered); err != nil {
		return res, err
	}

	// Clean up for the next run.
	start = time.Now()
	if err := deleteAndWait(ctx, cs, w, namespace, name, phaseTimeout(shards)); err != nil {
		return res, err
	}
	logf("%s/%s: deleted after %s", namespace, name, time.Since(start).Round(time.Millisecond))
	return res, nil
}

// ensure creates the namespace, ServiceAccount, its RBAC and the headless
// Service unless they exist.
func ensure(ctx context.Context, cs kubernetes.Interface, namespace, name, clusterRole string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("sts: creating namespace %s: %w", namespace, err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, ServiceAccount(namespace), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("sts: creating ServiceAccount: %w", err)
	}
	if _, err := cs.RbacV1().Roles(namespace).Create(ctx, Role(namespace, name), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("sts: creating Role: %w", err)
	}
	if _, err := cs.RbacV1().RoleBindings(namespace).Create(ctx, RoleBinding(namespace, name), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("sts: creating RoleBinding: %w", err)
	}
	if clusterRole != "" {
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, ClusterRoleBinding(namespace, clusterRole), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("sts: creating ClusterRoleBinding: %w", err)
		}
	}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, HeadlessService(namespace, name), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("sts: creating Service: %w", err)
	}
	return nil
}

// deleteAndWait deletes the StatefulSet and its Service and waits until the
// StatefulSet and every pod are gone.
func deleteAndWait(ctx context.Context, cs kubernetes.Interface, w *waiter, namespace, name string, timeout time.Duration) error {
	bg := metav1.DeletePropagationBackground
	if err := cs.AppsV1().StatefulSets(namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("sts: deleting %s/%s: %w", namespace, name, err)
	}
	if err := cs.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("sts: deleting Service %s/%s: %w", namespace, name, err)
	}
	_, err := w.until(ctx, "StatefulSet and pods gone", timeout, func(s *appsv1.StatefulSet, pods []*corev1.Pod) (bool, string) {
		if s != nil {
			return false, "StatefulSet still exists"
		}
		return len(pods) == 0, fmt.Sprintf("%d pods left", len(pods))
	})
	return err
}

// condition reports whether the state is the awaited one, and if not, why.
type condition func(s *appsv1.StatefulSet, pods []*corev1.Pod) (bool, string)

// settled: the controller has seen generation, and exactly ordinals
// 0..replicas-1 have pods, all Serving, with status agreeing.
func settled(generation int64, replicas int32) condition {
	return func(s *appsv1.StatefulSet, pods []*corev1.Pod) (bool, string) {
		if ok, why := statusSettled(s, generation, replicas); !ok {
			return false, why
		}
		return podsServing(s.Name, pods, replicas, nil)
	}
}

// rolledOut: settled, and the rollout is complete.
func rolledOut(generation int64, replicas int32, image string) condition {
	return func(s *appsv1.StatefulSet, pods []*corev1.Pod) (bool, string) {
		if ok, why := statusSettled(s, generation, replicas); !ok {
			return false, why
		}
		st := s.Status
		if st.UpdatedReplicas != replicas || st.CurrentRevision != st.UpdateRevision {
			return false, fmt.Sprintf("updatedReplicas %d/%d, currentRevision %s, updateRevision %s",
				st.UpdatedReplicas, replicas, st.CurrentRevision, st.UpdateRevision)
		}
		return podsServing(s.Name, pods, replicas, func(p *corev1.Pod) bool {
			return p.Labels[appsv1.ControllerRevisionHashLabelKey] == st.UpdateRevision && imageOf(p) == image
		})
	}
}

func statusSettled(s *appsv1.StatefulSet, generation int64, replicas int32) (bool, string) {
	if s == nil {
		return false, "StatefulSet missing"
	}
	st := s.Status
	if st.ObservedGeneration < generation {
		return false, fmt.Sprintf("observedGeneration %d < %d", st.ObservedGeneration, generation)
	}
	if st.ReadyReplicas != replicas || st.Replicas != replicas {
		return false, fmt.Sprintf("status.replicas %d, readyReplicas %d, want %d", st.Replicas, st.ReadyReplicas, replicas)
	}
	return true, ""
}

// podsServing checks that the pods are exactly ordinals 0..replicas-1, each
// Serving and (if current is set) current.
func podsServing(name string, pods []*corev1.Pod, replicas int32, current func(*corev1.Pod) bool) (bool, string) {
	ok := 0
	for _, p := range pods {
		i := Ordinal(name, p.Name)
		switch {
		case i < 0 || i >= int(replicas):
			return false, fmt.Sprintf("pod %s still exists", p.Name)
		case !coverage.Serving(p):
			return false, fmt.Sprintf("pod %s not Ready", p.Name)
		case current != nil && !current(p):
			return false, fmt.Sprintf("pod %s not updated", p.Name)
		}
		ok++
	}
	if ok != int(replicas) {
		return false, fmt.Sprintf("%d of %d pods", ok, replicas)
	}
	return true, ""
}

func imageOf(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == ContainerName {
			return c.Image
		}
	}
	return ""
}

// waiter evaluates conditions on every pod or StatefulSet event.
type waiter struct {
	pods *Watcher
	sts  *stsWatcher
	logf func(string, ...any)
}

// until returns the time at which cond first held.
func (w *waiter) until(ctx context.Context, what string, timeout time.Duration, cond condition) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	for {
		podsChanged, stsChanged := w.pods.Changed(), w.sts.changed()
		ok, why := cond(w.sts.get(), w.pods.Pods())
		if ok {
			return time.Now(), nil
		}
		if err := w.pods.Err(); err != nil {
			return time.Time{}, fmt.Errorf("sts: waiting for %s: %w", what, err)
		}
		if err := w.sts.err(); err != nil {
			return time.Time{}, fmt.Errorf("sts: waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("sts: waiting for %s (%s): %w", what, why, ctx.Err())
		case <-podsChanged:
		case <-stsChanged:
		case <-tick.C:
		}
	}
}

// stsWatcher keeps the current state of one StatefulSet from a watch.
type stsWatcher struct {
	cancel context.CancelFunc
	done   chan struct{}
	note   notifier

	mu      sync.Mutex
	current *appsv1.StatefulSet
	failure error
}

func watchStatefulSet(ctx context.Context, cs kubernetes.Interface, namespace, name string) (*stsWatcher, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return cs.AppsV1().StatefulSets(namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return cs.AppsV1().StatefulSets(namespace).Watch(ctx, o)
		},
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &stsWatcher{cancel: cancel, done: make(chan struct{})}
	initial, err := cs.AppsV1().StatefulSets(namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		cancel()
		return nil, err
	}
	if len(initial.Items) > 0 {
		w.current = &initial.Items[0]
	}
	go func() {
		defer close(w.done)
		defer w.note.notify()
		w.fail(follow.Watch(ctx, lw, initial.ResourceVersion, fmt.Sprintf("StatefulSet watch of %s/%s", namespace, name),
			func(t watch.EventType, s *appsv1.StatefulSet) {
				w.mu.Lock()
				if t == watch.Deleted {
					w.current = nil
				} else {
					w.current = s
				}
				w.mu.Unlock()
				w.note.notify()
			}))
	}()
	return w, nil
}

func (w *stsWatcher) get() *appsv1.StatefulSet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

func (w *stsWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failure == nil {
		w.failure = err
	}
}

func (w *stsWatcher) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}

func (w *stsWatcher) changed() <-chan struct{} { return w.note.changed() }

func (w *stsWatcher) stop() {
	w.cancel()
	<-w.done
}
