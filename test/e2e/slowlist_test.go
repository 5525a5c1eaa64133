//go:build e2e

package e2e

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// TestSlowListHandover makes the initial pod list of the replacement pods
// take longer than the settle time, by sending their kube-state-metrics
// through a proxy that holds that list back, and measures the same rollout
// with the hand-over verification off and on. Off, the old pods go after
// the settle time while the new ones still export no pods: the metric
// watcher must see objects missing (it can fail). On, the hand-over waits
// for the list: nothing is missing.
func TestSlowListHandover(t *testing.T) {
	const ns, name = handoverNamespace, "slowlist"
	const delay = 20 * time.Second
	ensureNamespace(t, ns)
	seedWorkload(t)
	proxy := startSlowListProxy(t, delay)
	proxyCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})
	var slow atomic.Bool
	useKubeconfigs(t, func(ctx context.Context, pod *corev1.Pod) (string, error) {
		if !slow.Load() || pod.Labels["ksmscale.example.com"] != name {
			return "", nil
		}
		return tokenKubeconfig(ctx, ns, pod.Spec.ServiceAccountName, proxy.URL, proxyCA, "slow-"+pod.Name)
	})

	off := startOperator(t, t, "operator-noverify", "--verify-handover=false")
	createSharded(t, ns, name, 2, 1, nil)
	w := watchCoverage(t, ns, name)

	// Verification off: Ready plus the settle time.
	slow.Store(true)
	w.reset()
	patchSpec(t, name, `{"spec":{"monitorImage":"registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0-slow"}}`)
	waitConverged(t, ns, name, 2, 240*time.Second)
	resOff := measure(t, w, "slow list, verification off", true, fmt.Sprintf("initial pod list held back %s", delay))
	if err := off.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Verification on: the new operator adds the readiness gate, which is a
	// new revision, so it rolls every shard once, through the same proxy.
	w.reset()
	startOperator(t, t, "operator-verify")
	var handovers []time.Duration
	eventually(t, 300*time.Second, "rolled to gated pods, converged", func() error {
		pods := activePods(t, ns, name)
		handovers = handovers[:0]
		for _, p := range pods {
			if !slices.ContainsFunc(p.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == ksm.MetricsVerifiedGate }) {
				return fmt.Errorf("pod %s has no gate yet", p.Name)
			}
			gate, cr := condition(&p, ksm.MetricsVerifiedGate), condition(&p, corev1.ContainersReady)
			if gate == nil || gate.Status != corev1.ConditionTrue || cr == nil {
				return fmt.Errorf("pod %s not verified yet", p.Name)
			}
			handovers = append(handovers, gate.LastTransitionTime.Sub(cr.LastTransitionTime.Time))
		}
		return nil
	})
	waitConverged(t, ns, name, 2, 120*time.Second)
	resOn := measure(t, w, "slow list, verification on", false, fmt.Sprintf("initial pod list held back %s; verified %v after ready", delay, handovers))
	wantVerified(t, name)

	fmt.Printf("e2e slow list (pod list held back %s, minReadySeconds 3):\n  %s\n  %s\n", delay, resOff, resOn)
	if resOff.missing == 0 {
		t.Errorf("with verification off the watcher saw nothing missing (%s): the slow list did not outlast the settle time, or the watcher is blind", resOff)
	}
	for _, d := range handovers {
		// The containers turn ready at the first readiness probe (5 s
		// after the start), the list ends delay after the start; conditions
		// have a resolution of a second.
		if d < delay-8*time.Second {
			t.Errorf("a pod was verified %s after its containers were ready, before its pod list (held back %s) can have finished", d, delay)
		}
	}
}

// TestUnlistableShardFallsBack: a new shard whose kube-state-metrics may not
// list one kind (its account lacks the permission) answers, but exports less
// than the pod it replaces. The hand-over must not wait forever: after
// --verify-timeout the pod takes over unverified, with a Warning Event, and
// the KSMScale's MetricsVerified condition says which pod and why.
func TestUnlistableShardFallsBack(t *testing.T) {
	const ns, name = handoverNamespace, "blind"
	const timeout = 20 * time.Second
	ensureNamespace(t, ns)
	seedWorkload(t)
	account := limitedAccount(t, ns, "e2e-ksm-no-configmaps", "configmaps")
	var blind atomic.Bool
	useKubeconfigs(t, func(ctx context.Context, pod *corev1.Pod) (string, error) {
		if !blind.Load() || pod.Labels["ksmscale.example.com"] != name || pod.Labels["shard-id"] != "1" {
			return "", nil
		}
		return tokenKubeconfig(ctx, ns, account, cluster.Host(), cluster.RESTConfig().CAData, "blind-"+pod.Name)
	})
	startOperator(t, t, "operator-blind", fmt.Sprintf("--verify-timeout=%s", timeout))
	createSharded(t, ns, name, 2, 1, nil)
	wantVerified(t, name)

	blind.Store(true)
	changed := time.Now()
	patchSpec(t, name, `{"spec":{"monitorImage":"registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0-blind"}}`)
	waitConverged(t, ns, name, 2, 240*time.Second)
	t.Logf("rollout with an unlistable shard converged in %s", time.Since(changed).Round(time.Second))

	var fallback *corev1.PodCondition
	for _, p := range activePods(t, ns, name) {
		gate, cr := condition(&p, ksm.MetricsVerifiedGate), condition(&p, corev1.ContainersReady)
		switch p.Labels["shard-id"] {
		case "0":
			if gate == nil || gate.Reason != controller.GateVerified {
				t.Errorf("shard 0's pod %s: gate %+v, want Verified", p.Name, gate)
			}
		case "1":
			if gate == nil || gate.Reason != controller.GateUnverified || !strings.Contains(gate.Message, "kube_configmap_info") {
				t.Fatalf("shard 1's pod %s: gate %+v, want Unverified naming kube_configmap_info", p.Name, gate)
			}
			if waited := gate.LastTransitionTime.Sub(cr.LastTransitionTime.Time); waited < timeout-2*time.Second {
				t.Errorf("shard 1 fell back %s after its containers were ready, before --verify-timeout %s", waited, timeout)
			}
			fallback = gate
		}
	}
	t.Logf("fallback: %s", fallback.Message)
	eventually(t, 60*time.Second, "MetricsVerified says why", func() error {
		got := &v1alpha1.KSMScale{}
		if err := k8s.Get(suiteCtx, client.ObjectKey{Name: name}, got); err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionMetricsVerified)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controller.ReasonHandoverUnverified || !strings.Contains(c.Message, "kube_configmap_info") {
			return fmt.Errorf("MetricsVerified %+v", c)
		}
		return nil
	})
	eventually(t, 60*time.Second, "a Warning Event "+controller.EventHandoverUnverified, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(suiteCtx, evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == controller.EventHandoverUnverified && e.Regarding.Name == name && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})
}

func condition(p *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// startSlowListProxy is an HTTPS reverse proxy on loopback in front of the
// API server that holds back every initial list of pods (a LIST, or a watch
// that sends the initial events) by delay, and passes everything else
// through at once. Clients authenticate with their own bearer token, which
// the proxy forwards; it adds no credentials of its own. (HTTPS because
// client-go sends a bearer token only over TLS.)
func startSlowListProxy(t *testing.T, delay time.Duration) *httptest.Server {
	t.Helper()
	target, err := url.Parse(cluster.Host())
	if err != nil {
		t.Fatal(err)
	}
	cfg := cluster.RESTConfig()
	transport, err := rest.TransportFor(&rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData, CAFile: cfg.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport, rp.FlushInterval = transport, -1
	held := func(r *http.Request) bool {
		q := r.URL.Query()
		return r.Method == http.MethodGet && r.URL.Path == "/api/v1/pods" && (q.Get("watch") != "true" || q.Get("sendInitialEvents") == "true")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if held(r) {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// tokenKubeconfig writes a kubeconfig for a ServiceAccount's token against
// server (the API server, or a proxy in front of it) and returns its path.
func tokenKubeconfig(ctx context.Context, ns, sa, server string, caPEM []byte, file string) (string, error) {
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	c := &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = c
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	path := filepath.Join(work, file+".kubeconfig")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	return path, clientcmd.WriteToFile(*kc, path)
}

// limitedAccount creates a ServiceAccount bound to a copy of the shipped
// kube-state-metrics ClusterRole without the given resource.
func limitedAccount(t *testing.T, ns, name, without string) string {
	t.Helper()
	role := &rbacv1.ClusterRole{}
	if err := k8s.Get(suiteCtx, client.ObjectKey{Name: controller.DefaultKSMClusterRole}, role); err != nil {
		t.Fatal(err)
	}
	limited := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, r := range role.Rules {
		r.Resources = slices.DeleteFunc(slices.Clone(r.Resources), func(s string) bool { return s == without })
		if len(r.Resources) > 0 || len(r.NonResourceURLs) > 0 {
			limited.Rules = append(limited.Rules, r)
		}
	}
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		limited,
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}}},
	}
	for _, o := range objs {
		if err := k8s.Create(suiteCtx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
		t.Cleanup(func() { _ = k8s.Delete(suiteCtx, o) })
	}
	return name
}
