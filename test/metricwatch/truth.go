package metricwatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/ksmscale/ksm-scale-operator/internal/promtext"
)

// Kind is a kind of object compared: the resource name KSM's --resources
// flag uses.
type Kind string

// The kinds the watcher can compare.
const (
	Pods       Kind = "pods"
	Nodes      Kind = "nodes"
	Namespaces Kind = "namespaces"
	ConfigMaps Kind = "configmaps"
)

// AllKinds is the default of Options.Kinds.
var AllKinds = []Kind{Pods, Nodes, Namespaces, ConfigMaps}

// kindInfo ties a kind to its resource and to the KSM family that exports
// one sample per object.
type kindInfo struct {
	gvr    schema.GroupVersionResource
	family string
	// objectKey identifies an object from its metadata; name is what logs
	// show (namespace/name rather than a pod's UID).
	objectKey func(metav1.Object) (key, name string)
	// sampleKey identifies the object a sample is about; false when the
	// sample lacks the labels.
	sampleKey func(*promtext.Sample) (string, bool)
}

func core(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: resource}
}

func byName(o metav1.Object) (string, string) { return o.GetName(), o.GetName() }

func byNamespacedName(o metav1.Object) (string, string) {
	k := o.GetNamespace() + "/" + o.GetName()
	return k, k
}

func label(key string) func(*promtext.Sample) (string, bool) {
	return func(s *promtext.Sample) (string, bool) { return s.Label(key) }
}

var kindInfos = map[Kind]kindInfo{
	Pods: {
		gvr: core("pods"), family: "kube_pod_info",
		objectKey: func(o metav1.Object) (string, string) {
			return string(o.GetUID()), o.GetNamespace() + "/" + o.GetName()
		},
		sampleKey: label("uid"),
	},
	Nodes:      {gvr: core("nodes"), family: "kube_node_info", objectKey: byName, sampleKey: label("node")},
	Namespaces: {gvr: core("namespaces"), family: "kube_namespace_created", objectKey: byName, sampleKey: label("namespace")},
	ConfigMaps: {
		gvr: core("configmaps"), family: "kube_configmap_info", objectKey: byNamespacedName,
		sampleKey: func(s *promtext.Sample) (string, bool) {
			ns, ok1 := s.Label("namespace")
			name, ok2 := s.Label("configmap")
			return ns + "/" + name, ok1 && ok2
		},
	},
}

// familyKinds maps a family back to its kind.
var familyKinds = func() map[string]Kind {
	m := map[string]Kind{}
	for k, info := range kindInfos {
		m[info.family] = k
	}
	return m
}()

// object is one object of the truth.
type object struct {
	// since is when it became known: its creationTimestamp if the initial
	// list found it, else when the watch delivered it.
	since time.Time
	name  string
}

// truth is the set of objects that exist, kept current by metadata-only
// informers, and the recently deleted ones.
type truth struct {
	mu      sync.Mutex
	objects map[Kind]map[string]object
	// deleted holds when each key was deleted, for the grace window.
	deleted map[Kind]map[string]time.Time

	wg sync.WaitGroup
}

// startTruth starts one metadata informer per kind and waits until each
// has delivered its initial list. The informers run until ctx ends; wait
// waits for them.
func startTruth(ctx context.Context, mc metadata.Interface, kinds []Kind) (*truth, error) {
	t := &truth{objects: map[Kind]map[string]object{}, deleted: map[Kind]map[string]time.Time{}}
	var synced []cache.InformerSynced
	for _, k := range kinds {
		t.objects[k] = map[string]object{}
		t.deleted[k] = map[string]time.Time{}
		info := kindInfos[k]
		inf := metadatainformer.NewFilteredMetadataInformer(mc, info.gvr, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
			AddFunc: func(obj any, initial bool) { t.add(k, obj, initial) },
			UpdateFunc: func(_, obj any) {
				// Only an object this watcher somehow missed matters here.
				t.add(k, obj, false)
			},
			DeleteFunc: func(obj any) { t.remove(k, obj) },
		})
		if err != nil {
			return nil, fmt.Errorf("metricwatch: %s informer: %w", k, err)
		}
		synced = append(synced, reg.HasSynced)
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			inf.RunWithContext(ctx)
		}()
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		t.wait()
		return nil, fmt.Errorf("metricwatch: initial lists of %v not complete: %w", kinds, context.Cause(ctx))
	}
	return t, nil
}

func (t *truth) wait() { t.wg.Wait() }

func (t *truth) add(k Kind, obj any, initial bool) {
	o, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	key, name := kindInfos[k].objectKey(o)
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.objects[k][key]; ok {
		return
	}
	since := now
	if created := o.GetCreationTimestamp().Time; initial && !created.IsZero() && created.Before(now) {
		// It existed before the watcher: KSM has had as long as anyone
		// to see it. (creationTimestamp has whole seconds, so this errs
		// by under a second towards requiring it earlier.)
		since = created
	}
	t.objects[k][key] = object{since: since, name: name}
}

func (t *truth) remove(k Kind, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	key, _ := kindInfos[k].objectKey(o)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.objects[k], key)
	t.deleted[k][key] = time.Now()
}

// forget drops deletions older than before. The caller holds t.mu.
func (t *truth) forget(before time.Time) {
	for _, m := range t.deleted {
		for key, at := range m {
			if at.Before(before) {
				delete(m, key)
			}
		}
	}
}
