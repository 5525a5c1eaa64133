package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/test/e2e/ksmproc"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/tools"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

const (
	// externalLabel marks the pods this test's Kubelet runs; kwok skips
	// them (localcluster.Options.ExternalKubeletLabel).
	externalLabel = "kubelet.test.example.com/external"
	ns            = "kubelet-test"
	sa            = "ksm"
	gate          = "ksmscale.example.com/verified"
	// timeout is generous: two shared cores run a control plane and several
	// kube-state-metrics processes.
	timeout = 3 * time.Minute
)

// kwokNodeAnnotation is localcluster's: kwok plays kubelet only for nodes
// annotated with it ("fake").
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

// retryOnConflict runs update until it does not fail with a conflict.
func retryOnConflict(ctx context.Context, update func() error) error {
	for {
		err := update()
		if !apierrors.IsConflict(err) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	wait.Eventually(t, 200*time.Millisecond, timeout, what, cond)
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

func condition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	return findCondition(pod.Status.Conditions, t)
}

func condStatus(pod *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	if c := condition(pod, t); c != nil {
		return c.Status
	}
	return ""
}

// shardPod looks like the operator's shard pod (internal/ksm podspec.go):
// listen flags on 0.0.0.0, named ports, probes on /livez and /readyz, a
// readiness gate; with fast probes and a single resource to keep the test
// short and light.
func shardPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			externalLabel: "true", "app.kubernetes.io/name": "kube-state-metrics",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			ReadinessGates:     []corev1.PodReadinessGate{{ConditionType: gate}},
			Containers: []corev1.Container{{
				Name:  ContainerName,
				Image: "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
				Args: []string{"--host=0.0.0.0", "--port=8080", "--telemetry-host=0.0.0.0", "--telemetry-port=8081",
					"--shard=0", "--total-shards=1", "--resources=pods,namespaces"},
				Ports: []corev1.ContainerPort{
					{Name: "http-metrics", ContainerPort: 8080},
					{Name: "telemetry", ContainerPort: 8081},
				},
				LivenessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/livez", Port: intstr.FromString("http-metrics"), Scheme: corev1.URISchemeHTTP,
					}},
					InitialDelaySeconds: 1, TimeoutSeconds: 5, PeriodSeconds: 2, FailureThreshold: 3,
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/readyz", Port: intstr.FromString("telemetry"), Scheme: corev1.URISchemeHTTP,
					}},
					InitialDelaySeconds: 1, TimeoutSeconds: 5, PeriodSeconds: 1, FailureThreshold: 3,
				},
			}},
		},
	}
}

// setup grants the pods' ServiceAccount what KSM needs: the shipped
// read-only ClusterRole, plus get on pods and StatefulSets in the namespace
// for autosharding.
func setup(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "kube_state_metrics_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		t.Fatal(err)
	}
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}
	for _, err := range []error{
		func() error {
			_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "kubelet-test-ksm"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects:   subjects,
			}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Name: "ksm-autosharding"},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
					{APIGroups: []string{"apps"}, Resources: []string{"statefulsets"}, Verbs: []string{"get"}},
				},
			}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "ksm-autosharding"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "ksm-autosharding"},
				Subjects:   subjects,
			}, metav1.CreateOptions{})
			return err
		}(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestKubelet runs real kube-state-metrics for labelled pods of a local
// cluster and checks what a kubelet must do: the pod's own IP, its
// ServiceAccount, status with readiness gates honoured and other writers'
// conditions kept, quiet when steady, no status writes while the pod's node
// is not Ready, restarts, env expansion, deletion, and that Stop leaves no
// process.
func TestKubelet(t *testing.T) {
	bin := tools.BinDir(t, localcluster.KubeAPIServer, localcluster.Kwok, "kube-state-metrics")
	ctx := t.Context()
	dir := t.TempDir()

	c := localcluster.StartT(t, localcluster.Options{
		BinDir: bin, Dir: filepath.Join(dir, "cluster"), Nodes: 3, Logf: t.Logf,
		ExternalKubeletLabel: externalLabel + "=true",
	})
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	setup(t, ctx, cs)

	pods := cs.CoreV1().Pods(ns)
	getPod := func(name string) (*corev1.Pod, error) { return pods.Get(ctx, name, metav1.GetOptions{}) }
	ours := netip.MustParsePrefix(DefaultIPRange)

	// Before this kubelet runs, kwok gets every chance to take a labelled
	// pod: it is bound first, then a plain pod is created and becomes Ready
	// through kwok. Without the exclusion kwok would have made the labelled
	// one Running and Ready long before (a kubelet that writes the pod IP at
	// once could otherwise win the race and hide a missing exclusion).
	// It has no KSM container, so later this kubelet can only report that
	// it cannot run it.
	broken := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "no-ksm", Namespace: ns, Labels: map[string]string{externalLabel: "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "other", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if _, err := pods.Create(ctx, broken, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no-ksm bound", func() error {
		p, err := getPod("no-ksm")
		if err == nil && p.Spec.NodeName == "" {
			err = errors.New("not bound yet")
		}
		return err
	})
	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kwok-pod", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := pods.Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Run("kwok runs other pods, not the labelled ones", func(t *testing.T) {
		eventually(t, "kwok-pod Ready", func() error {
			p, err := getPod("kwok-pod")
			if err != nil {
				return err
			}
			if condStatus(p, corev1.PodReady) != corev1.ConditionTrue {
				return fmt.Errorf("not Ready: %+v", p.Status)
			}
			if ip, err := netip.ParseAddr(p.Status.PodIP); err != nil || !netip.MustParsePrefix(localcluster.PodCIDR).Contains(ip) {
				return fmt.Errorf("pod IP %q is not in kwok's loopback range %s", p.Status.PodIP, localcluster.PodCIDR)
			}
			return nil
		})
		b, err := getPod("no-ksm")
		if err != nil {
			t.Fatal(err)
		}
		if b.Status.PodIP != "" || b.Status.Phase != corev1.PodPending || len(b.Status.ContainerStatuses) > 0 {
			t.Fatalf("kwok took the labelled pod: %+v", b.Status)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	var hooked sync.Map // pod names the Kubeconfig hook was asked about
	k, err := Start(ctx, Options{
		Config:   c.RESTConfig(),
		BinDir:   bin,
		Dir:      filepath.Join(dir, "kubelet"),
		Selector: labels.SelectorFromSet(labels.Set{externalLabel: "true"}),
		// Leaves every pod to the default (its ServiceAccount's token).
		Kubeconfig: func(_ context.Context, pod *corev1.Pod) (string, error) {
			hooked.Store(pod.Name, true)
			return "", nil
		},
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the cluster's: runs first. Whatever happens, every
	// process the Kubelet started is stopped by PID.
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			if err := k.Stop(); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "kubelet", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				t.Logf("end of %s:\n%s", l, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	if _, err := pods.Create(ctx, shardPod("shard-0"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var pod *corev1.Pod
	t.Run("containers ready, Ready waits for the gate", func(t *testing.T) {
		eventually(t, "shard-0 ContainersReady", func() error {
			if pod, err = getPod("shard-0"); err != nil {
				return err
			}
			if condStatus(pod, corev1.ContainersReady) != corev1.ConditionTrue {
				return fmt.Errorf("ContainersReady not True: %+v", pod.Status)
			}
			return nil
		})
		st := pod.Status
		if ip, err := netip.ParseAddr(st.PodIP); err != nil || !ours.Contains(ip) {
			t.Fatalf("pod IP %q not from %s", st.PodIP, DefaultIPRange)
		}
		if st.Phase != corev1.PodRunning || st.HostIP != HostIP || st.StartTime == nil ||
			len(st.PodIPs) != 1 || st.PodIPs[0].IP != st.PodIP {
			t.Errorf("status: %+v", st)
		}
		if len(st.ContainerStatuses) != 1 {
			t.Fatalf("containerStatuses: %+v", st.ContainerStatuses)
		}
		cst := st.ContainerStatuses[0]
		if !cst.Ready || !ptr.Deref(cst.Started, false) || cst.RestartCount != 0 || cst.State.Running == nil ||
			!strings.HasPrefix(cst.ContainerID, "test-kubelet://") {
			t.Errorf("container status: %+v", cst)
		}
		for _, ct := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodScheduled} {
			if condStatus(pod, ct) != corev1.ConditionTrue {
				t.Errorf("%s not True: %+v", ct, st.Conditions)
			}
		}
		// kwok's pod-ready stage would have set Ready and every gate True.
		ready := condition(pod, corev1.PodReady)
		if ready == nil || ready.Status != corev1.ConditionFalse || ready.Reason != ReadinessGatesNotReadyReason {
			t.Fatalf("Ready before the gate is set: %+v", ready)
		}
		if condition(pod, gate) != nil {
			t.Fatalf("someone set the gate condition: %+v", st.Conditions)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	p := k.Process(ns, "shard-0")
	if p == nil {
		t.Fatal("no process for shard-0")
	}
	pid := p.PID()
	t.Run("listens on exactly the pod IP and serves the pod itself", func(t *testing.T) {
		if want := "http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + "/metrics"; p.MetricsURL() != want {
			t.Errorf("metrics URL %s, want %s", p.MetricsURL(), want)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"--host=" + pod.Status.PodIP, "--telemetry-host=" + pod.Status.PodIP, "--port=8080", "--telemetry-port=8081", "--kubeconfig="} {
			if !bytes.Contains(cmdline, []byte(want)) {
				t.Errorf("command line lacks %s: %q", want, cmdline)
			}
		}
		// KSM runs as the pod's ServiceAccount, as kubelet would mount it.
		if _, ok := hooked.Load("shard-0"); !ok {
			t.Error("the Kubeconfig hook was not asked about shard-0")
		}
		kubeconfig, ok := ksmproc.FlagValue(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), "kubeconfig")
		if !ok {
			t.Fatalf("no --kubeconfig in %q", cmdline)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx,
			&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := review.Status.UserInfo.Username, "system:serviceaccount:"+ns+":"+sa; got != want {
			t.Errorf("KSM authenticates as %q, want %q", got, want)
		}
		if got := review.Status.UserInfo.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "shard-0" {
			t.Errorf("token not bound to the pod: extra %v", review.Status.UserInfo.Extra)
		}
		eventually(t, "kube_pod_info of shard-0 at the pod IP", func() error {
			text, err := p.Scrape(ctx)
			if err != nil {
				return err
			}
			for _, s := range ksmproc.ParseSeries(text, "kube_pod_info")["kube_pod_info"] {
				if _, l := ksmproc.Labels(s); l["namespace"] == ns && l["pod"] == "shard-0" {
					return nil
				}
			}
			return errors.New("no kube_pod_info for shard-0 yet")
		})
		// Bound to the pod IP, not to every address: the next loopback
		// address (nobody's) refuses the connection.
		other := netip.MustParseAddr(pod.Status.PodIP).Next()
		if conn, err := net.DialTimeout("tcp", net.JoinHostPort(other.String(), "8080"), 2*time.Second); err == nil {
			conn.Close()
			t.Errorf("%s:8080 accepts connections: KSM is not bound to the pod IP alone", other)
		}
	})

	t.Run("gate True makes Ready True, and keeps the gate", func(t *testing.T) {
		before := condition(pod, corev1.ContainersReady).LastTransitionTime
		// The operator's write: only its own condition, through pods/status.
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]any{{
			"type": gate, "status": "True", "reason": "Verified", "lastTransitionTime": metav1.Now(),
		}}}})
		if _, err := pods.Patch(ctx, "shard-0", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Ready True", func() error {
			if pod, err = getPod("shard-0"); err != nil {
				return err
			}
			if condStatus(pod, corev1.PodReady) != corev1.ConditionTrue {
				return fmt.Errorf("Ready: %+v", condition(pod, corev1.PodReady))
			}
			return nil
		})
		if g := condition(pod, gate); g == nil || g.Status != corev1.ConditionTrue || g.Reason != "Verified" {
			t.Errorf("gate condition: %+v", g)
		}
		if after := condition(pod, corev1.ContainersReady).LastTransitionTime; !after.Equal(&before) {
			t.Errorf("ContainersReady lastTransitionTime moved from %s to %s without a flip", before, after)
		}
	})

	t.Run("quiet when steady", func(t *testing.T) {
		// Probes run every second; none of them may cause a write.
		rv := pod.ResourceVersion
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			cur, err := getPod("shard-0")
			if err != nil {
				t.Fatal(err)
			}
			if cur.ResourceVersion != rv {
				t.Fatalf("pod written while steady: resourceVersion %s -> %s\nbefore: %+v\nafter: %+v", rv, cur.ResourceVersion, pod.Status, cur.Status)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("no status writes while the node is not Ready", func(t *testing.T) {
		nodes := cs.CoreV1().Nodes()
		nodeName := pod.Spec.NodeName
		setNodeReady := func(status corev1.ConditionStatus, reason string) {
			t.Helper()
			err := retryOnConflict(ctx, func() error {
				node, err := nodes.Get(ctx, nodeName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				for i := range node.Status.Conditions {
					if c := &node.Status.Conditions[i]; c.Type == corev1.NodeReady {
						c.Status, c.Reason, c.LastTransitionTime = status, reason, metav1.Now()
					}
				}
				_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		nodeReadyStatus := func() corev1.ConditionStatus {
			node, err := nodes.Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status
				}
			}
			return ""
		}
		annotate := func(value *string) {
			t.Helper()
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{kwokNodeAnnotation: value}}})
			if _, err := nodes.Patch(ctx, nodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}

		// kwok's node-initialize stage matches every node of its own whose
		// Ready is not True, with no delay: Ready=Unknown on a kwok node
		// lasts moments. Log what it does, for whoever relies on the trick.
		setNodeReady(corev1.ConditionUnknown, "NodeStatusUnknown")
		flipped := time.Duration(-1)
		for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(100 * time.Millisecond) {
			if nodeReadyStatus() == corev1.ConditionTrue {
				flipped = time.Since(start)
				break
			}
		}
		if flipped >= 0 {
			t.Logf("kwok set node %s Ready=True again %s after it was marked Unknown", nodeName, flipped.Round(10*time.Millisecond))
		} else {
			t.Logf("node %s stayed Ready=Unknown for 3s under kwok", nodeName)
			setNodeReady(corev1.ConditionTrue, "KubeletReady")
		}
		eventually(t, "shard-0 Ready after the node is back", func() error {
			p, err := getPod("shard-0")
			if err == nil && condStatus(p, corev1.PodReady) != corev1.ConditionTrue {
				err = fmt.Errorf("Ready: %+v", condition(p, corev1.PodReady))
			}
			return err
		})

		// So the node is taken from kwok first, as a partitioned node's
		// kubelet is gone: without the annotation kwok leaves it alone.
		annotate(nil)
		t.Cleanup(func() { annotate(ptr.To("fake")) })
		setNodeReady(corev1.ConditionUnknown, "NodeStatusUnknown")
		pid := k.PIDs()[ns+"/shard-0"]
		// What the node lifecycle controller's MarkPodsNotReady writes.
		err := retryOnConflict(ctx, func() error {
			cur, err := getPod("shard-0")
			if err != nil {
				return err
			}
			for i := range cur.Status.Conditions {
				if c := &cur.Status.Conditions[i]; c.Type == corev1.PodReady {
					c.Status, c.Reason, c.Message, c.LastTransitionTime = corev1.ConditionFalse, "NodeNotReady", "", metav1.Now()
				}
			}
			_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		kubeletWrite := func(p *corev1.Pod) string {
			for _, m := range p.ManagedFields {
				if m.Manager == "test-kubelet" && m.Subresource == "status" && m.Time != nil {
					return m.Time.UTC().Format(time.RFC3339)
				}
			}
			return ""
		}
		marked, err := getPod("shard-0")
		if err != nil {
			t.Fatal(err)
		}
		lastWrite := kubeletWrite(marked)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			cur, err := getPod("shard-0")
			if err != nil {
				t.Fatal(err)
			}
			if st := nodeReadyStatus(); st != corev1.ConditionUnknown {
				t.Fatalf("node %s Ready=%s during the check: something else plays its kubelet", nodeName, st)
			}
			if r := condition(cur, corev1.PodReady); r == nil || r.Status != corev1.ConditionFalse || r.Reason != "NodeNotReady" {
				t.Fatalf("Ready rewritten while the node is not Ready: %+v", r)
			}
			if w := kubeletWrite(cur); w != lastWrite {
				t.Fatalf("the kubelet wrote status while the node is not Ready (%s, before %s): %+v", w, lastWrite, cur.Status)
			}
		}
		// A partitioned node's containers keep running.
		if got := k.PIDs()[ns+"/shard-0"]; pid == 0 || got != pid || !alive(pid) {
			t.Errorf("process while the node is not Ready: pid %d, before %d", got, pid)
		}

		setNodeReady(corev1.ConditionTrue, "KubeletReady")
		eventually(t, "shard-0 Ready again once the node is Ready", func() error {
			if pod, err = getPod("shard-0"); err != nil {
				return err
			}
			if condStatus(pod, corev1.PodReady) != corev1.ConditionTrue {
				return fmt.Errorf("Ready: %+v", condition(pod, corev1.PodReady))
			}
			return nil
		})
		if got := k.PIDs()[ns+"/shard-0"]; got != pid {
			t.Errorf("process restarted across the node's outage: pid %d, before %d", got, pid)
		}
	})

	t.Run("a killed process is restarted", func(t *testing.T) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, "restarted and Ready again", func() error {
			if pod, err = getPod("shard-0"); err != nil {
				return err
			}
			cst := pod.Status.ContainerStatuses[0]
			if cst.RestartCount != 1 || cst.LastTerminationState.Terminated == nil || !cst.Ready ||
				condStatus(pod, corev1.PodReady) != corev1.ConditionTrue {
				return fmt.Errorf("container status: %+v", cst)
			}
			return nil
		})
		if code := pod.Status.ContainerStatuses[0].LastTerminationState.Terminated.ExitCode; code != 137 {
			t.Errorf("last exit code %d, want 137 (SIGKILL)", code)
		}
		if p = k.Process(ns, "shard-0"); p == nil || p.PID() == pid || alive(pid) {
			t.Fatalf("after the restart: process %v, old pid %d alive %v", p, pid, alive(pid))
		}
		pid = p.PID()
	})

	t.Run("failing liveness restarts; a Failed phase stops the process", func(t *testing.T) {
		lp := shardPod("liveness")
		lp.Spec.ReadinessGates = nil
		// Nothing listens on port 9 of the pod IP.
		lp.Spec.Containers[0].LivenessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9)}},
			PeriodSeconds: 1, FailureThreshold: 2,
		}
		if _, err := pods.Create(ctx, lp, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "liveness restarted", func() error {
			p, err := getPod("liveness")
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) != 1 {
				return fmt.Errorf("status: %+v", p.Status)
			}
			cst := p.Status.ContainerStatuses[0]
			if cst.RestartCount < 1 || cst.LastTerminationState.Terminated == nil ||
				cst.LastTerminationState.Terminated.Message != reasonLivenessKill {
				return fmt.Errorf("container status: %+v", cst)
			}
			return nil
		})
		var lpid int
		eventually(t, "liveness running again", func() error {
			if lpid = k.PIDs()[ns+"/liveness"]; lpid == 0 {
				return errors.New("no process")
			}
			return nil
		})
		// Someone (an eviction, a test) declares the pod Failed: it serves
		// nothing any more, so its process goes, and the pod stays.
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"phase": corev1.PodFailed}})
		if _, err := pods.Patch(ctx, "liveness", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "process of the Failed pod stopped", func() error {
			if _, ok := k.PIDs()[ns+"/liveness"]; ok || alive(lpid) {
				return fmt.Errorf("pid %d still runs", lpid)
			}
			return nil
		})
		p, err := getPod("liveness")
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodFailed {
			t.Errorf("phase %s: the kubelet overwrote Failed", p.Status.Phase)
		}
		if err := pods.Delete(ctx, "liveness", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Failed pod removed", func() error {
			if _, err := getPod("liveness"); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
	})

	t.Run("the labelled pod without KSM is reported as not runnable", func(t *testing.T) {
		eventually(t, "no-ksm reported as not runnable", func() error {
			b, err := getPod("no-ksm")
			if err != nil {
				return err
			}
			if len(b.Status.ContainerStatuses) != 1 || b.Status.ContainerStatuses[0].State.Waiting == nil ||
				b.Status.ContainerStatuses[0].State.Waiting.Reason != reasonConfigError {
				return fmt.Errorf("status: %+v", b.Status)
			}
			if b.Status.Phase != corev1.PodPending || condStatus(b, corev1.PodReady) != corev1.ConditionFalse {
				return fmt.Errorf("phase %s, Ready %s", b.Status.Phase, condStatus(b, corev1.PodReady))
			}
			if ip, err := netip.ParseAddr(b.Status.PodIP); err != nil || !ours.Contains(ip) {
				return fmt.Errorf("pod IP %q not ours", b.Status.PodIP)
			}
			return nil
		})
	})

	t.Run("env and downward API expand in args (StatefulSet autosharding)", func(t *testing.T) {
		lbls := map[string]string{externalLabel: "true", "app": "ksm-auto"}
		field := func(path string) *corev1.EnvVarSource {
			return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
		}
		ss := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: "ksm-auto", Namespace: ns},
			Spec: appsv1.StatefulSetSpec{
				Replicas:            ptr.To[int32](2),
				PodManagementPolicy: appsv1.ParallelPodManagement,
				Selector:            &metav1.LabelSelector{MatchLabels: lbls},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: lbls},
					Spec: corev1.PodSpec{
						ServiceAccountName: sa,
						Containers: []corev1.Container{{
							Name:  ContainerName,
							Image: "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
							// As KSM's autosharding example: no listen flags.
							Args: []string{"--pod=$(POD_NAME)", "--pod-namespace=$(POD_NAMESPACE)", "--resources=namespaces"},
							Env: []corev1.EnvVar{
								{Name: "POD_NAME", ValueFrom: field("metadata.name")},
								{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
							},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8081)}},
								PeriodSeconds: 1,
							},
						}},
					},
				},
			},
		}
		if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx, ss, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ksm-auto-0", "ksm-auto-1"} {
			eventually(t, name+" Ready", func() error {
				ap, err := getPod(name)
				if err != nil {
					return err
				}
				if condStatus(ap, corev1.PodReady) != corev1.ConditionTrue {
					return fmt.Errorf("not Ready: %+v", ap.Status)
				}
				return nil
			})
		}
		// ksm-auto-1 is shard 1 of 2 only if KSM got its real name.
		ap := k.Process(ns, "ksm-auto-1")
		if ap == nil {
			t.Fatal("no process for ksm-auto-1")
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ap.PID()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(cmdline, []byte("--pod=ksm-auto-1\x00--pod-namespace="+ns+"\x00")) {
			t.Errorf("command line: %q", cmdline)
		}
		// KSM reads its ordinal from the pod name and logs what it chose.
		eventually(t, "ksm-auto-1 configures itself as shard 1 of 2", func() error {
			log, err := os.ReadFile(k.LogFile(ns, "ksm-auto-1"))
			if err != nil {
				return err
			}
			if !bytes.Contains(log, []byte("shard=1 totalShards=2")) {
				return fmt.Errorf("not in %s yet", k.LogFile(ns, "ksm-auto-1"))
			}
			return nil
		})
	})

	t.Run("force-deleted pod: process stopped, same-name successor runs", func(t *testing.T) {
		old, err := getPod("ksm-auto-0")
		if err != nil {
			t.Fatal(err)
		}
		oldPID := k.PIDs()[ns+"/ksm-auto-0"]
		if oldPID == 0 {
			t.Fatal("no process for ksm-auto-0")
		}
		if err := pods.Delete(ctx, "ksm-auto-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "old process stopped, the StatefulSet's new ksm-auto-0 Ready under a new process", func() error {
			if alive(oldPID) {
				return fmt.Errorf("old pid %d still runs", oldPID)
			}
			p, err := getPod("ksm-auto-0")
			if err != nil {
				return err
			}
			if p.UID == old.UID {
				return errors.New("not replaced yet")
			}
			if condStatus(p, corev1.PodReady) != corev1.ConditionTrue {
				return fmt.Errorf("new pod not Ready: %+v", p.Status)
			}
			if pid := k.PIDs()[ns+"/ksm-auto-0"]; pid == 0 || pid == oldPID {
				return fmt.Errorf("process of the new pod: %d", pid)
			}
			return nil
		})
	})

	t.Run("deletion stops the process, then removes the pod", func(t *testing.T) {
		if err := pods.Delete(ctx, "shard-0", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "shard-0 gone and its process stopped", func() error {
			if alive(pid) {
				return fmt.Errorf("pid %d still runs", pid)
			}
			if _, err := getPod("shard-0"); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod still there (%v)", err)
			}
			if k.Process(ns, "shard-0") != nil {
				return errors.New("Process still returns a process")
			}
			return nil
		})
	})

	t.Run("Stop leaves no process", func(t *testing.T) {
		pids := k.PIDs()
		if len(pids) == 0 {
			t.Fatal("no processes before Stop")
		}
		stopped = true
		if err := k.Stop(); err != nil {
			t.Error(err)
		}
		for key, pid := range pids {
			if alive(pid) {
				t.Errorf("%s (pid %d) alive after Stop", key, pid)
			}
		}
		if got := k.PIDs(); len(got) != 0 {
			t.Errorf("PIDs after Stop = %v", got)
		}
	})
}
