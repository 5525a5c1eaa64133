package promjudge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Debian's prometheus package (2.42+ds, what .ci/run installs) is built
// without Kubernetes service discovery: its configuration parser has no
// kubernetes_sd_configs at all. So the test process plays Prometheus' pod
// role: podDiscovery watches the pods and writes, for file_sd_configs, the
// targets and __meta_kubernetes_* labels Prometheus' own pod role
// (discovery/kubernetes/pod.go) gives them. Everything after discovery, the
// relabelings from the ServiceMonitor above all, runs in Prometheus.

// targetGroup is one entry of a file_sd file.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// podDiscovery keeps a file_sd file in step with the pods of a cluster.
type podDiscovery struct {
	path     string
	informer cache.SharedIndexInformer
	factory  informers.SharedInformerFactory
	cancel   context.CancelFunc
	dirty    chan struct{}
	done     sync.WaitGroup
	logf     func(format string, args ...any)
}

// discoveryFlush bounds how long a pod change waits to reach the file, and
// how often the file is rewritten while pods change.
const discoveryFlush = 200 * time.Millisecond

// startPodDiscovery watches the pods that match selector in namespaces
// (every namespace when empty) and writes their targets to path whenever
// they change. The selector is the ServiceMonitor's matchLabels: the keep
// relabelings in Prometheus select the same pods again, so it only spares
// writing a target for every pod of a large test cluster.
func startPodDiscovery(ctx context.Context, kubeconfig, path string, selector labels.Selector, namespaces []string, logf func(string, ...any)) (*podDiscovery, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("promjudge: kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ns := metav1.NamespaceAll
	if len(namespaces) == 1 {
		ns = namespaces[0]
	}
	d := &podDiscovery{path: path, dirty: make(chan struct{}, 1), logf: logf}
	d.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = selector.String() }))
	d.informer = d.factory.Core().V1().Pods().Informer()
	mark := func(any) {
		select {
		case d.dirty <- struct{}{}:
		default:
		}
	}
	if _, err := d.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: mark, UpdateFunc: func(_, o any) { mark(o) }, DeleteFunc: mark,
	}); err != nil {
		return nil, err
	}
	var runCtx context.Context
	runCtx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	d.factory.Start(runCtx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), d.informer.HasSynced) {
		d.stop()
		return nil, fmt.Errorf("promjudge: pod informer did not sync")
	}
	keep := func(p *corev1.Pod) bool { return len(namespaces) <= 1 || slices.Contains(namespaces, p.Namespace) }
	if err := d.write(keep); err != nil {
		d.stop()
		return nil, err
	}
	d.done.Go(func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case <-d.dirty:
			}
			if err := d.write(keep); err != nil {
				d.logf("promjudge: write targets: %v", err)
			}
			select {
			case <-runCtx.Done():
				return
			case <-time.After(discoveryFlush):
			}
		}
	})
	return d, nil
}

func (d *podDiscovery) stop() {
	d.cancel()
	d.factory.Shutdown()
	d.done.Wait()
}

// write replaces the file atomically, so Prometheus never reads half of it.
func (d *podDiscovery) write(keep func(*corev1.Pod) bool) error {
	var groups []targetGroup
	for _, o := range d.informer.GetStore().List() {
		if p := o.(*corev1.Pod); keep(p) {
			groups = append(groups, podTargets(p)...)
		}
	}
	slices.SortFunc(groups, func(a, b targetGroup) int {
		return cmpStrings(a.Labels["__meta_kubernetes_namespace"]+"/"+a.Labels["__meta_kubernetes_pod_name"]+"/"+a.Targets[0],
			b.Labels["__meta_kubernetes_namespace"]+"/"+b.Labels["__meta_kubernetes_pod_name"]+"/"+b.Targets[0])
	})
	if groups == nil {
		groups = []targetGroup{}
	}
	data, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Clean(d.path))
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// podTargets are the targets Prometheus' pod role makes of one pod: one per
// declared container port, one without a port for a container that declares
// none; nothing for a pod without an IP yet.
func podTargets(p *corev1.Pod) []targetGroup {
	if p.Status.PodIP == "" {
		return nil
	}
	podLabels := map[string]string{
		"__meta_kubernetes_namespace":     p.Namespace,
		"__meta_kubernetes_pod_name":      p.Name,
		"__meta_kubernetes_pod_ip":        p.Status.PodIP,
		"__meta_kubernetes_pod_ready":     podReady(p),
		"__meta_kubernetes_pod_phase":     string(p.Status.Phase),
		"__meta_kubernetes_pod_node_name": p.Spec.NodeName,
		"__meta_kubernetes_pod_host_ip":   p.Status.HostIP,
		"__meta_kubernetes_pod_uid":       string(p.UID),
	}
	for k, v := range p.Labels {
		podLabels["__meta_kubernetes_pod_label_"+sanitize(k)] = v
		podLabels["__meta_kubernetes_pod_labelpresent_"+sanitize(k)] = "true"
	}
	for k, v := range p.Annotations {
		podLabels["__meta_kubernetes_pod_annotation_"+sanitize(k)] = v
		podLabels["__meta_kubernetes_pod_annotationpresent_"+sanitize(k)] = "true"
	}
	if ref := metav1.GetControllerOf(p); ref != nil {
		podLabels["__meta_kubernetes_pod_controller_kind"] = ref.Kind
		podLabels["__meta_kubernetes_pod_controller_name"] = ref.Name
	}
	var out []targetGroup
	add := func(c corev1.Container, init bool, port *corev1.ContainerPort) {
		l := make(map[string]string, len(podLabels)+6)
		for k, v := range podLabels {
			l[k] = v
		}
		l["__meta_kubernetes_pod_container_name"] = c.Name
		l["__meta_kubernetes_pod_container_image"] = c.Image
		l["__meta_kubernetes_pod_container_init"] = strconv.FormatBool(init)
		addr := p.Status.PodIP
		if port != nil {
			l["__meta_kubernetes_pod_container_port_name"] = port.Name
			l["__meta_kubernetes_pod_container_port_number"] = strconv.Itoa(int(port.ContainerPort))
			l["__meta_kubernetes_pod_container_port_protocol"] = string(port.Protocol)
			addr = net.JoinHostPort(addr, strconv.Itoa(int(port.ContainerPort)))
		}
		out = append(out, targetGroup{Targets: []string{addr}, Labels: l})
	}
	for _, cs := range []struct {
		containers []corev1.Container
		init       bool
	}{{p.Spec.Containers, false}, {p.Spec.InitContainers, true}} {
		for _, c := range cs.containers {
			if len(c.Ports) == 0 {
				add(c, cs.init, nil)
			}
			for i := range c.Ports {
				add(c, cs.init, &c.Ports[i])
			}
		}
	}
	return out
}

func podReady(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return strconv.FormatBool(c.Status == corev1.ConditionTrue)
		}
	}
	return "unknown"
}
