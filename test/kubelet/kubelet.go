// Package kubelet plays kubelet for selected pods of a local cluster
// (test/localcluster) by running the real kube-state-metrics binary for
// each of them.
//
// kwok makes every simulated pod Running and Ready with nothing behind it,
// so a Ready shard pod proves nothing about the shard. For the pods this
// package selects, a real KSM process runs instead, with the pod's own
// container arguments ($(VAR) references expanded from the container's env,
// downward API included), listening on the pod's own IP (taken from a range
// inside 127.0.0.0/8, so every byte stays on loopback) and authenticated as
// the pod's ServiceAccount. The pod's status is what a kubelet would write:
// Running, the pod IP, container statuses, and the conditions, with
// ContainersReady from the pod's own readiness probe and Ready also waiting
// for the pod's readiness gates. Liveness failures and exits restart the
// process; a pod being deleted has its process stopped and is then removed.
//
// Status is written only while the pod's node is Ready, as only a kubelet
// that reaches the API server can: when the Node is gone or its Ready
// condition is not True (a test simulating a partitioned node, as the node
// lifecycle controller reports one), the pod's status is left to others
// (MarkPodsNotReady's Ready=False stays), while its process keeps running,
// as a partitioned node's containers do. Once the node is Ready again, the
// pod's status is reconciled as usual.
//
// kwok must leave these pods alone: start the cluster with
// localcluster.Options.ExternalKubeletLabel matching Options.Selector.
//
// Every process is started in its own process group with Pdeathsig (see
// test/proc) and stopped by its PID, so nothing outlives a failed test and
// nothing this package did not start is signalled.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/ksmscale/ksm-scale-operator/test/e2e/ksmproc"
)

// ContainerName is the container that is run; the pod's other containers
// are reported running and ready without running anything.
const ContainerName = ksmproc.ContainerName

const (
	// DefaultIPRange is where pod IPs come from by default: loopback, and
	// apart from localcluster.PodCIDR (kwok's pods), so a pod IP of this
	// kubelet is never also a kwok pod's.
	DefaultIPRange = "127.65.0.0/16"
	// HostIP is every pod's hostIP: the simulated nodes have no address of
	// their own that anything may dial.
	HostIP = "127.0.0.1"

	// workers is how many pods are synced at once.
	workers = 4
	// maxStopGrace caps the grace of Stop, which tears a whole test down.
	maxStopGrace = 10 * time.Second
)

// Options configures Start.
type Options struct {
	// Config is an admin client configuration of the cluster; the API
	// server's address and CA also go into the pods' kubeconfigs.
	Config *rest.Config
	// BinDir holds kube-state-metrics.
	BinDir string
	// Dir receives one log file per pod (<namespace>_<name>.log, appended
	// across restarts) and the pods' kubeconfigs.
	Dir string
	// Selector picks the pods to run, in every namespace. Required: running
	// every pod of a cluster is never what a test wants.
	Selector labels.Selector
	// Kubeconfig, when set, returns the kubeconfig a pod's KSM is started
	// with, in place of a token of the pod's ServiceAccount: a test can
	// point one shard at a proxy or at an account lacking a permission. It
	// is called once per pod, before its first start; an empty path with no
	// error means "the ServiceAccount's token, as usual" for that pod.
	Kubeconfig func(ctx context.Context, pod *corev1.Pod) (string, error)
	// IPRange is the loopback prefix pod IPs come from; empty means
	// DefaultIPRange. Kubelets running side by side should use different
	// ranges.
	IPRange string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Kubelet runs the selected pods. Its methods are safe for concurrent use.
type Kubelet struct {
	o      Options
	bin    string
	dir    string
	logf   func(format string, args ...any)
	client kubernetes.Interface
	ips    *ipPool

	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	// nodeFactory is apart from factory, whose list options carry the pod
	// selector; nodes tells which nodes are Ready.
	nodeFactory informers.SharedInformerFactory
	nodes       cache.SharedIndexInformer
	queue       workqueue.TypedRateLimitingInterface[string]
	cancel      context.CancelFunc
	ctx         context.Context
	workers     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	pods    map[string]*podRunner // by namespace/name
	// gone counts the goroutines that run or stop containers (runner
	// loops, stops of forgotten pods, terminations); Stop waits for them.
	gone    sync.WaitGroup
	stopErr []error
}

// Start begins to play kubelet for every pod o.Selector matches and returns
// once it has seen the current pods. Stop it with Stop.
func Start(ctx context.Context, o Options) (*Kubelet, error) {
	if o.Config == nil || o.BinDir == "" || o.Dir == "" {
		return nil, errors.New("kubelet: Options.Config, BinDir and Dir are required")
	}
	if o.Selector == nil || o.Selector.Empty() {
		return nil, errors.New("kubelet: Options.Selector must select some pods, not all")
	}
	if o.IPRange == "" {
		o.IPRange = DefaultIPRange
	}
	k := &Kubelet{o: o, logf: o.Logf, pods: map[string]*podRunner{}}
	if k.logf == nil {
		k.logf = func(string, ...any) {}
	}
	var err error
	if k.bin, err = filepath.Abs(filepath.Join(o.BinDir, "kube-state-metrics")); err != nil {
		return nil, err
	}
	if _, err := os.Stat(k.bin); err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	if k.dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return nil, err
	}
	if k.ips, err = newIPPool(o.IPRange); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(o.Config)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 100, 200
	}
	if k.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}

	// The kubelet's life is not bound to ctx's: Stop ends it, so that a
	// test's cleanup order decides when processes go.
	k.ctx, k.cancel = context.WithCancel(context.WithoutCancel(ctx))
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test-kubelet"})
	selector := o.Selector.String()
	k.factory = informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = selector }))
	k.informer = k.factory.Core().V1().Pods().Informer()
	if err := k.informer.AddIndexers(cache.Indexers{nodeNameIndex: indexByNodeName}); err != nil {
		return nil, err
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, err
	}
	k.nodeFactory = informers.NewSharedInformerFactory(k.client, 0)
	k.nodes = k.nodeFactory.Core().V1().Nodes().Informer()
	if _, err := k.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: k.enqueueNodePods,
		UpdateFunc: func(old, cur any) {
			if nodeReady(old) != nodeReady(cur) {
				k.enqueueNodePods(cur)
			}
		},
		DeleteFunc: k.enqueueNodePods,
	}); err != nil {
		return nil, err
	}
	k.factory.Start(k.ctx.Done())
	k.nodeFactory.Start(k.ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), k.informer.HasSynced, k.nodes.HasSynced) {
		k.cancel()
		k.factory.Shutdown()
		k.nodeFactory.Shutdown()
		return nil, errors.New("kubelet: pod or node informer did not sync")
	}
	for range workers {
		k.workers.Go(k.work)
	}
	k.logf("kubelet: running pods matching %q on IPs from %s", selector, o.IPRange)
	return k, nil
}

// Stop stops every process this Kubelet started (SIGTERM, then SIGKILL
// after the pod's grace period, at most 10 s) and waits for them to be
// reaped. It leaves the pods as they are. Stop is idempotent.
func (k *Kubelet) Stop() error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	k.stopped = true
	runners := make([]*podRunner, 0, len(k.pods))
	for _, r := range k.pods {
		runners = append(runners, r)
	}
	k.mu.Unlock()

	k.cancel()
	k.queue.ShutDown()
	k.workers.Wait()
	k.factory.Shutdown()
	k.nodeFactory.Shutdown()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Go(func() { r.halt(min(r.grace(nil), maxStopGrace)) })
	}
	wg.Wait()
	k.gone.Wait()

	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range runners {
		if err := r.stopErr(); err != nil {
			k.stopErr = append(k.stopErr, err)
		}
	}
	return errors.Join(k.stopErr...)
}

// Process returns the KSM process currently running for the pod, or nil
// when none runs (not started yet, restarting, stopped).
func (k *Kubelet) Process(namespace, name string) *ksmproc.Process {
	k.mu.Lock()
	r := k.pods[namespace+"/"+name]
	k.mu.Unlock()
	if r == nil {
		return nil
	}
	if p := r.process(); p != nil && !p.Exited() {
		return p
	}
	return nil
}

// PIDs returns the PID of every running KSM process by "namespace/name".
func (k *Kubelet) PIDs() map[string]int {
	k.mu.Lock()
	runners := make(map[string]*podRunner, len(k.pods))
	for key, r := range k.pods {
		runners[key] = r
	}
	k.mu.Unlock()
	pids := map[string]int{}
	for key, r := range runners {
		if p := r.process(); p != nil && !p.Exited() {
			pids[key] = p.PID()
		}
	}
	return pids
}

// LogFile is where the pod's KSM writes its output.
func (k *Kubelet) LogFile(namespace, name string) string {
	return filepath.Join(k.dir, namespace+"_"+name+".log")
}

func (k *Kubelet) work() {
	for {
		key, shutdown := k.queue.Get()
		if shutdown {
			return
		}
		if err := k.sync(k.ctx, key); err != nil {
			if k.ctx.Err() == nil && !apierrors.IsConflict(err) {
				k.logf("kubelet: %s: %v", key, err)
			}
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

// sync brings one pod's process and status in line with the pod.
func (k *Kubelet) sync(ctx context.Context, key string) error {
	obj, exists, err := k.informer.GetStore().GetByKey(key)
	if err != nil {
		return err
	}
	var pod *corev1.Pod
	if exists {
		pod = obj.(*corev1.Pod)
	}
	k.mu.Lock()
	r := k.pods[key]
	k.mu.Unlock()

	// The pod this process ran for is gone: deleted outright, or replaced
	// by a new pod of the same name (a StatefulSet's).
	if r != nil && (pod == nil || pod.UID != r.uid) {
		k.forget(key, r)
		r = nil
	}
	if pod == nil || pod.Spec.NodeName == "" {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		// Unlike a real kubelet, this one finalizes deletions even on a node
		// that is not Ready (where the pod would wait for a force delete),
		// so that a test never leaves processes or pods behind.
		return k.terminate(ctx, key, pod, r)
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		// Someone declared the pod finished: it serves nothing any more.
		if r != nil {
			r.haltAsync(r.grace(pod))
		}
		return nil
	}
	if r == nil {
		if r, err = k.admit(key, pod); err != nil || r == nil {
			return err
		}
	}
	if r.halted() {
		return nil
	}
	if !k.nodeIsReady(pod.Spec.NodeName) {
		// The node is unreachable: its kubelet could not write, so the
		// status others wrote (NodeNotReady) stays. The process runs on;
		// a node event requeues the pod once the node is Ready again.
		return nil
	}
	patch, err := statusPatch(pod, r.observe(), ContainerName, time.Now())
	if err != nil || patch == nil {
		return err
	}
	_, err = k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: "test-kubelet"}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// nodeNameIndex indexes pods by spec.nodeName, for requeueing a node's pods.
const nodeNameIndex = "nodeName"

func indexByNodeName(obj any) ([]string, error) {
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
		return []string{pod.Spec.NodeName}, nil
	}
	return nil, nil
}

// nodeReady reports whether obj is a Node whose NodeReady condition is
// True; anything else (a tombstone, Unknown, False, no condition) is not.
func nodeReady(obj any) bool {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeIsReady reports whether the node named name exists and is Ready.
func (k *Kubelet) nodeIsReady(name string) bool {
	obj, exists, err := k.nodes.GetStore().GetByKey(name)
	return err == nil && exists && nodeReady(obj)
}

// enqueueNodePods queues every selected pod bound to the node obj (a Node
// or a deletion tombstone of one), whose readiness decides whether their
// status is written.
func (k *Kubelet) enqueueNodePods(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	pods, err := k.informer.GetIndexer().ByIndex(nodeNameIndex, key)
	if err != nil {
		return
	}
	for _, p := range pods {
		if podKey, err := cache.MetaNamespaceKeyFunc(p); err == nil {
			k.queue.Add(podKey)
		}
	}
}

// admit takes a newly scheduled pod on: an IP, and a runner that starts its
// container.
func (k *Kubelet) admit(key string, pod *corev1.Pod) (*podRunner, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return nil, nil
	}
	ip := pod.Status.PodIP
	if ip == "" || !k.ips.reserve(ip, key) {
		var err error
		if ip, err = k.ips.allocate(key, listenPorts(pod)); err != nil {
			return nil, err
		}
	}
	r := newRunner(k, key, pod, ip)
	k.pods[key] = r
	k.gone.Add(1)
	go func() {
		defer k.gone.Done()
		r.run()
	}()
	k.logf("kubelet: %s on %s (IP %s)", key, pod.Spec.NodeName, ip)
	return r, nil
}

// forget drops a runner whose pod is gone and stops its process in the
// background; its IP is free once the process is.
func (k *Kubelet) forget(key string, r *podRunner) {
	k.mu.Lock()
	if k.pods[key] == r {
		delete(k.pods, key)
	}
	k.gone.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.gone.Done()
		r.halt(r.grace(nil))
		k.ips.release(r.ip)
		k.recordStopErr(r)
	}()
}

func (k *Kubelet) recordStopErr(r *podRunner) {
	if err := r.stopErr(); err != nil {
		k.mu.Lock()
		k.stopErr = append(k.stopErr, err)
		k.mu.Unlock()
	}
}

// terminate handles a pod with a deletionTimestamp as kubelet does: stop
// the container within the grace period, then remove the pod for good. The
// delete names the UID, so a new pod of the same name is never hit.
func (k *Kubelet) terminate(ctx context.Context, key string, pod *corev1.Pod, r *podRunner) error {
	remove := func(ctx context.Context) error {
		err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if r == nil {
		// Never run (or run by a Kubelet before this one): nothing to stop.
		return remove(ctx)
	}
	if !r.beginTermination() {
		return nil // already under way
	}
	k.mu.Lock()
	k.gone.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.gone.Done()
		// A stop error is recorded once: by forget when the pod is gone,
		// or by Stop.
		r.halt(r.grace(pod))
		if k.ctx.Err() != nil {
			return
		}
		for attempt := 0; ; attempt++ {
			err := remove(k.ctx)
			if err == nil || k.ctx.Err() != nil {
				return
			}
			if attempt%10 == 0 {
				k.logf("kubelet: %s: removing the pod: %v", key, err)
			}
			select {
			case <-k.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}

// listenPorts are the ports the pod's KSM will listen on, for the IP
// allocator's check that they are free.
func listenPorts(pod *corev1.Pod) []int {
	ports := []int{8080, 8081}
	for _, c := range pod.Spec.Containers {
		if c.Name != ContainerName {
			continue
		}
		for i, flag := range []string{"port", "telemetry-port"} {
			if v, ok := ksmproc.FlagValue(c.Args, flag); ok {
				if n, err := strconv.Atoi(v); err == nil {
					ports[i] = n
				}
			}
		}
	}
	return ports
}
