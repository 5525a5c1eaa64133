// Package follow runs the watch loop that the coverage watcher and the
// bench's StatefulSet watchers share: from a list's resourceVersion, a
// RetryWatcher (which re-establishes dropped watches) feeds every change of
// one kind of object to a callback.
package follow

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	toolswatch "k8s.io/client-go/tools/watch"
)

// Watch calls apply for every Added, Modified and Deleted event of a T that
// lw's watch delivers after resourceVersion, until ctx ends (it returns
// ctx.Err()) or the watch fails (it returns why; `what` names it).
func Watch[T runtime.Object](ctx context.Context, lw cache.WatcherWithContext, resourceVersion, what string,
	apply func(watch.EventType, T)) error {
	rw, err := toolswatch.NewRetryWatcherWithContext(ctx, resourceVersion, lw)
	if err != nil {
		return err
	}
	defer rw.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-rw.ResultChan():
			if !ok {
				return fmt.Errorf("%s ended", what)
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("%s: %v", what, apierrors.FromObject(ev.Object))
			}
			obj, ok := ev.Object.(T)
			if !ok {
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				apply(ev.Type, obj)
			}
		}
	}
}

// Pods is a ListWatch of the pods in namespace that match the label
// selector, for Watch.
func Pods(cs kubernetes.Interface, namespace, selector string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return cs.CoreV1().Pods(namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return cs.CoreV1().Pods(namespace).Watch(ctx, o)
		},
	}
}
