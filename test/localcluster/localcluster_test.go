package localcluster

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/ksmscale/ksm-scale-operator/test/tools"
)

// eventually polls cond until it returns true or timeout passes. cond's
// error is remembered for the failure message but does not stop polling.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not done after %s (last error: %v)", what, timeout, lastErr)
		case <-tick.C:
		}
	}
}

// TestCluster exercises every component the operator's tests rely on:
// kwok nodes, Deployments turning into Ready pods (controller manager,
// scheduler, kwok), ServiceAccount tokens, garbage collection, restarting
// the API server, and that Stop leaves no process behind.
func TestCluster(t *testing.T) {
	bin := tools.BinDir(t, KubeAPIServer)
	ctx := t.Context()
	dir := t.TempDir()

	began := time.Now()
	c, err := Start(ctx, Options{BinDir: bin, Dir: dir, Nodes: 20, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("cluster with 20 nodes up in %s", time.Since(began).Round(time.Millisecond))

	client := kubernetes.NewForConfigOrDie(c.RESTConfig())

	t.Run("nodes", func(t *testing.T) {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ready int
		for i := range nodes.Items {
			if NodeReady(&nodes.Items[i]) {
				ready++
			}
		}
		if len(nodes.Items) != 20 || ready != 20 {
			t.Fatalf("got %d nodes, %d Ready; want 20 Ready", len(nodes.Items), ready)
		}
	})

	const ns = "localcluster-test"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("deployment", func(t *testing.T) {
		labels := map[string]string{"app": "web"}
		deploy := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name:  "web",
						Image: "registry.k8s.io/pause:3.10",
					}}},
				},
			},
		}
		if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		readyPods := func(ctx context.Context) (int, int, error) {
			pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return 0, 0, err
			}
			var ready int
			for _, p := range pods.Items {
				for _, cond := range p.Status.Conditions {
					if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
			return len(pods.Items), ready, nil
		}
		eventually(t, 120*time.Second, "3 Ready pods", func(ctx context.Context) (bool, error) {
			total, ready, err := readyPods(ctx)
			return total == 3 && ready == 3, err
		})

		// Deleting the Deployment only removes the Deployment; its
		// ReplicaSet and pods go through the garbage collector (and kwok's
		// pod-delete stage, which plays the kubelet confirming deletion).
		if err := client.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{
			PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 120*time.Second, "pods garbage collected", func(ctx context.Context) (bool, error) {
			total, _, err := readyPods(ctx)
			return err == nil && total == 0, err
		})
	})

	t.Run("serviceaccount token", func(t *testing.T) {
		sa, err := client.CoreV1().ServiceAccounts(ns).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "tester"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(c.RESTConfig())
		cfg.BearerToken = tr.Status.Token
		saClient := kubernetes.NewForConfigOrDie(cfg)
		// SelfSubjectReview needs no RBAC grant, so it tests authentication alone.
		review, err := saClient.AuthenticationV1().SelfSubjectReviews().Create(ctx,
			&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := review.Status.UserInfo.Username, "system:serviceaccount:"+ns+":tester"; got != want {
			t.Fatalf("token authenticates as %q, want %q", got, want)
		}
		// And RBAC applies to it: a ServiceAccount without grants may not list nodes.
		if _, err := saClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Fatalf("listing nodes as an unprivileged ServiceAccount: got %v, want Forbidden", err)
		}
	})

	t.Run("restart apiserver", func(t *testing.T) {
		old := c.PIDs()[KubeAPIServer]
		if err := c.StopProcess(KubeAPIServer); err != nil {
			t.Fatal(err)
		}
		if _, running := c.PIDs()[KubeAPIServer]; running {
			t.Fatal("kube-apiserver still listed as running after StopProcess")
		}
		if alive(old) {
			t.Fatalf("kube-apiserver pid %d still alive after StopProcess", old)
		}
		if err := c.StartProcess(KubeAPIServer); err != nil {
			t.Fatal(err)
		}
		if c.PIDs()[KubeAPIServer] == old {
			t.Fatal("kube-apiserver has the same pid after restart")
		}
		eventually(t, 60*time.Second, "API server answers after restart", func(ctx context.Context) (bool, error) {
			_, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return err == nil, err
		})
	})

	t.Run("stop", func(t *testing.T) {
		pids := c.PIDs()
		if len(pids) != len(startOrder) {
			t.Fatalf("running processes %v, want all of %v", pids, startOrder)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		for name, pid := range pids {
			if alive(pid) {
				t.Errorf("%s (pid %d) still alive after Stop", name, pid)
			}
		}
		if got := c.PIDs(); len(got) != 0 {
			t.Errorf("PIDs after Stop = %v, want none", got)
		}
		if err := StopDir(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("StopDir left %s behind (stat: %v)", dir, err)
		}
	})
}

// TestStopDirRefusesForeignDirectory guards the one destructive thing StopDir
// does: it must not delete a directory that is not a cluster directory.
func TestStopDirRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep")
	if err := os.WriteFile(keep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := StopDir(dir); err == nil {
		t.Fatal("StopDir accepted a directory without a pids file")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("StopDir removed files of a foreign directory: %v", err)
	}
	if err := StopDir(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("StopDir of a missing directory: %v", err)
	}
}

// TestExternalKubeletLabel checks that kwok leaves the labelled pods to
// someone else (no status, no deletion) while it still runs every other pod,
// with pod IPs on loopback.
func TestExternalKubeletLabel(t *testing.T) {
	bin := tools.BinDir(t, KubeAPIServer)
	ctx := t.Context()
	const label = "kubelet.test.example.com/external"
	c, err := Start(ctx, Options{BinDir: bin, Dir: t.TempDir(), Nodes: 2, Logf: t.Logf, ExternalKubeletLabel: label + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	client := kubernetes.NewForConfigOrDie(c.RESTConfig())
	pods := client.CoreV1().Pods(metav1.NamespaceDefault)
	pod := func(name string, lbls map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
		}
	}
	// The external pod first: kwok has every chance to take it before it
	// takes the ordinary ones.
	for _, p := range []*corev1.Pod{
		pod("external", map[string]string{label: "true"}),
		pod("other-value", map[string]string{label: "false"}),
		pod("plain", nil),
	} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cidr := netip.MustParsePrefix(PodCIDR)
	for _, name := range []string{"plain", "other-value"} {
		eventually(t, 120*time.Second, name+" Ready on a loopback IP", func(ctx context.Context) (bool, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil {
				return false, err
			}
			if !cidr.Contains(ip) {
				t.Fatalf("%s: pod IP %s outside %s", name, ip, cidr)
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	}
	ext, err := pods.Get(ctx, "external", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ext.Spec.NodeName == "" {
		t.Fatal("external pod not scheduled: the check below would prove nothing")
	}
	if ext.Status.PodIP != "" || ext.Status.Phase != corev1.PodPending || len(ext.Status.ContainerStatuses) > 0 {
		t.Fatalf("kwok touched the external pod: %+v", ext.Status)
	}

	// Deletion: kwok removes the plain pod, but not the external one,
	// whose kubelet has to confirm it.
	for _, name := range []string{"external", "plain"} {
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 120*time.Second, "plain pod removed", func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, "plain", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	ext, err = pods.Get(ctx, "external", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("external pod removed without its kubelet: %v", err)
	}
	if ext.DeletionTimestamp == nil {
		t.Fatal("external pod has no deletionTimestamp")
	}
}
