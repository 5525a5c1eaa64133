//go:build e2e

// Package e2e runs the operator binary as a separate process, with the
// credentials of a ServiceAccount bound only to the RBAC in config/rbac,
// against the local cluster (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kwok), and drives it as a user would. Real
// kube-state-metrics binaries run with the operator's own shard arguments.
//
// Run with: make test-e2e
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	ksmkubelet "github.com/ksmscale/ksm-scale-operator/test/kubelet"
	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
	"github.com/ksmscale/ksm-scale-operator/test/proc"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

// Nodes is the simulated cluster size of the suite.
const Nodes = 300

const (
	operatorNamespace = "ksm-scale-operator-system"
	operatorSA        = "ksm-scale-operator"
)

var (
	root, bin, work string
	cluster         *localcluster.Cluster
	k8s             client.Client
	cs              kubernetes.Interface
	scheme          = runtime.NewScheme()
	managerBin      string
	// operatorKubeconfig holds the operator ServiceAccount's token.
	operatorKubeconfig string
	suiteCtx           context.Context
	// kubelet runs real kube-state-metrics behind every KSMScale pod.
	kubelet *ksmkubelet.Kubelet

	// kubeconfigFor, when set, picks the kubeconfig of a KSM pod started
	// from now on (a slow proxy, a limited account); "" means the pod's own
	// ServiceAccount. Tests set it and reset it in a cleanup.
	kubeconfigMu  sync.Mutex
	kubeconfigFor func(ctx context.Context, pod *corev1.Pod) (string, error)
)

// ksmPodLabel marks the pods test/kubelet runs: every KSMScale's pods
// (shard pods and the Deployment's replicas) carry it.
const ksmPodLabel = "ksmscale.example.com"

func podKubeconfig(ctx context.Context, pod *corev1.Pod) (string, error) {
	kubeconfigMu.Lock()
	f := kubeconfigFor
	kubeconfigMu.Unlock()
	if f == nil {
		return "", nil
	}
	return f(ctx, pod)
}

// useKubeconfigs sets kubeconfigFor until t ends.
func useKubeconfigs(t *testing.T, f func(ctx context.Context, pod *corev1.Pod) (string, error)) {
	kubeconfigMu.Lock()
	kubeconfigFor = f
	kubeconfigMu.Unlock()
	t.Cleanup(func() {
		kubeconfigMu.Lock()
		kubeconfigFor = nil
		kubeconfigMu.Unlock()
	})
}

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard())
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "e2e setup: "+format+"\n", args...)
		return 1
	}
	root, _ = filepath.Abs("../..")
	bin = filepath.Join(root, "bin")
	if v := os.Getenv("KUBEBUILDER_ASSETS"); v != "" {
		bin = v
	}
	var err error
	if work, err = os.MkdirTemp("", "ksmscale-e2e-"); err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(work)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	suiteCtx = ctx

	managerBin = filepath.Join(work, "manager")
	build := exec.Command("go", "build", "-o", managerBin, "./cmd")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fail("build the manager: %v", err)
	}

	start := time.Now()
	// Every KSMScale's pods run real kube-state-metrics on their own
	// loopback IPs (test/kubelet); kwok simulates the nodes and every other
	// pod, and leaves these alone.
	cluster, err = localcluster.Start(ctx, localcluster.Options{BinDir: bin, Dir: filepath.Join(work, "cluster"), Nodes: Nodes,
		ExternalKubeletLabel: ksmPodLabel})
	if err != nil {
		return fail("start the local cluster: %v", err)
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop the local cluster: %v\n", err)
		}
	}()
	fmt.Printf("e2e: local cluster with %d Ready nodes in %s\n", Nodes, time.Since(start).Round(time.Millisecond))

	cfg := cluster.RESTConfig()
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail("%v", err)
	}
	cs = kubernetes.NewForConfigOrDie(cfg)
	sel, err := labels.Parse(ksmPodLabel)
	if err != nil {
		return fail("%v", err)
	}
	kubelet, err = ksmkubelet.Start(ctx, ksmkubelet.Options{Config: cfg, BinDir: bin, Dir: filepath.Join(work, "kubelet"),
		Selector: sel, Kubeconfig: podKubeconfig})
	if err != nil {
		return fail("start the kube-state-metrics kubelet: %v", err)
	}
	defer func() {
		if err := kubelet.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop the kube-state-metrics kubelet: %v\n", err)
		}
	}()

	if judge, err = startJudge(ctx); err != nil {
		return fail("start prometheus: %v", err)
	}
	if judge != nil {
		defer func() {
			if err := judge.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "stop prometheus: %v\n", err)
			}
		}()
	}

	// Install as a user would, from config/.
	for _, args := range [][]string{
		{"apply", "-k", filepath.Join(root, "config", "crd")},
		{"create", "namespace", operatorNamespace},
		{"apply", "-k", filepath.Join(root, "config", "rbac")},
		{"wait", "--for", "condition=Established", "crd/ksmscales.monitor.example.com", "--timeout=60s"},
	} {
		if out, err := kubectl(args...); err != nil {
			return fail("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if operatorKubeconfig, err = serviceAccountKubeconfig(ctx, operatorNamespace, operatorSA); err != nil {
		return fail("operator credentials: %v", err)
	}
	return m.Run()
}

// kubectl runs bin/kubectl against the local cluster as cluster admin.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", cluster.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates with a
// token of the ServiceAccount, so the operator has exactly the permissions
// config/rbac binds to it.
func serviceAccountKubeconfig(ctx context.Context, ns, sa string) (string, error) {
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	admin, err := clientcmd.LoadFromFile(cluster.Kubeconfig())
	if err != nil {
		return "", err
	}
	var server string
	var ca []byte
	for _, c := range admin.Clusters {
		server, ca = c.Server, c.CertificateAuthorityData
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["operator"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "operator"
	path := filepath.Join(work, sa+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// operator is one running operator process.
type operator struct {
	*proc.Process
	metricsURL string
	log        string
}

// startOperator runs the manager binary with leader election, as the
// operator's ServiceAccount. It is stopped when owner ends, which may be a
// parent of t: an operator started in one subtest can outlive it.
func startOperator(t, owner *testing.T, name string, extraArgs ...string) *operator {
	t.Helper()
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	mport, pport := ports[0], ports[1]
	log := filepath.Join(work, name+".log")
	p, err := proc.Start(name, managerBin, append([]string{
		"--kubeconfig", operatorKubeconfig,
		"--leader-elect", "--leader-election-namespace", operatorNamespace,
		"--ksm-namespaces=monitoring,faults,handover,migration",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", mport),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", pport),
	}, extraArgs...), log)
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			owner.Errorf("stop %s: %v", name, err)
		}
		if owner.Failed() {
			owner.Logf("end of %s:\n%s", log, tailFile(log, 40))
		}
	})
	op := &operator{Process: p, metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), log: log}
	trackOperator(owner, fmt.Sprintf("127.0.0.1:%d", mport))
	eventually(t, 60*time.Second, name+" healthy", func() error {
		if !p.Running() {
			return fmt.Errorf("exited:\n%s", tailFile(log, 30))
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", pport))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return op
}

// metric sums the samples of a family on the operator's metrics endpoint
// whose label set contains every pair of want.
func (o *operator) metric(t *testing.T, family string, want map[string]string) float64 {
	t.Helper()
	resp, err := http.Get(o.metricsURL)
	if err != nil {
		t.Fatalf("scrape %s: %v", o.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return sumSamples(string(body), family, want)
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	wait.Eventually(t, 200*time.Millisecond, timeout, what, cond)
}

// ensureNamespace creates a namespace whose pods must pass the Pod Security
// Standard "restricted", enforced by the API server.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := k8s.Create(suiteCtx, ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
}
