package integration

import (
	"context"
	"errors"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// faults injects API errors into the in-process operator's client: a test
// sets a function that sees every call (verb, namespace, object or list;
// a Get's object carries only the requested name) and returns the error to
// fail it with, or nil to let it through.
var faults faultInjector

type faultInjector struct {
	mu     sync.Mutex
	inject func(verb, namespace string, obj runtime.Object) error
}

// set installs inject until the test ends.
func (f *faultInjector) set(t *testing.T, inject func(verb, namespace string, obj runtime.Object) error) {
	t.Helper()
	f.mu.Lock()
	f.inject = inject
	f.mu.Unlock()
	t.Cleanup(func() { f.clear() })
}

func (f *faultInjector) clear() {
	f.mu.Lock()
	f.inject = nil
	f.mu.Unlock()
}

func (f *faultInjector) check(verb, namespace string, obj runtime.Object) error {
	f.mu.Lock()
	inject := f.inject
	f.mu.Unlock()
	if inject == nil {
		return nil
	}
	return inject(verb, namespace, obj)
}

// noWatch lets the manager's client (which has no Watch) be intercepted.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not used by the operator")
}

func (f *faultInjector) wrap(c client.Client) client.Client {
	return interceptor.NewClient(noWatch{c}, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			obj.SetName(key.Name)
			if err := f.check("get", key.Namespace, obj); err != nil {
				return err
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lo := (&client.ListOptions{}).ApplyOptions(opts)
			if err := f.check("list", lo.Namespace, list); err != nil {
				return err
			}
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := f.check("create", obj.GetNamespace(), obj); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := f.check("update", obj.GetNamespace(), obj); err != nil {
				return err
			}
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if err := f.check("patch", obj.GetNamespace(), obj); err != nil {
				return err
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if err := f.check("delete", obj.GetNamespace(), obj); err != nil {
				return err
			}
			return c.Delete(ctx, obj, opts...)
		},
	})
}
