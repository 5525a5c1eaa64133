package sts

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/ksmscale/ksm-scale-operator/test/follow"
)

// notifier wakes every waiter on each change: take Changed() before checking
// a condition, then wait on it.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// Watcher feeds a Tracker from a watch on the pods of one StatefulSet and
// keeps the current pod set for conditions.
type Watcher struct {
	*Tracker
	cancel context.CancelFunc
	done   chan struct{}
	note   notifier

	mu   sync.Mutex
	pods map[string]*corev1.Pod
	err  error
}

// Watch starts watching the pods matching selector in namespace, tracking
// the shards of StatefulSet stsName; Stop ends it. The watch starts from a
// list, so the tracker's first state is the state at the call. The counted
// replicas start at the StatefulSet's spec.replicas if it exists, else 0;
// the caller keeps them up to date with SetReplicas.
func Watch(ctx context.Context, cs kubernetes.Interface, namespace, selector, stsName string) (*Watcher, error) {
	replicas := 0
	switch s, err := cs.AppsV1().StatefulSets(namespace).Get(ctx, stsName, metav1.GetOptions{}); {
	case err == nil:
		if s.Spec.Replicas != nil {
			replicas = int(*s.Spec.Replicas)
		} else {
			replicas = 1
		}
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{Tracker: NewTracker(stsName, replicas), cancel: cancel, done: make(chan struct{}), pods: map[string]*corev1.Pod{}}
	lw := follow.Pods(cs, namespace, selector)
	initial, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		cancel()
		return nil, err
	}
	for i := range initial.Items {
		w.pods[initial.Items[i].Name] = &initial.Items[i]
	}
	w.Observe(time.Now(), w.Pods())
	go func() {
		defer close(w.done)
		defer w.note.notify()
		w.fail(follow.Watch(ctx, lw, initial.ResourceVersion, fmt.Sprintf("pod watch of %s/%s", namespace, stsName),
			func(t watch.EventType, p *corev1.Pod) {
				w.mu.Lock()
				if t == watch.Deleted {
					delete(w.pods, p.Name)
				} else {
					w.pods[p.Name] = p
				}
				w.mu.Unlock()
				w.Observe(time.Now(), w.Pods())
				w.note.notify()
			}))
	}()
	return w, nil
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// Err is why the watch ended, or nil while it runs.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Pods is a snapshot of the watched pods (shared objects: do not modify).
func (w *Watcher) Pods() []*corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(w.pods))
	for _, p := range w.pods {
		out = append(out, p)
	}
	return out
}

// Changed is closed on the next pod event (or when the watch ends).
func (w *Watcher) Changed() <-chan struct{} { return w.note.changed() }

// Done is closed once the watch has ended.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Stop ends the watch and waits for it.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}
