// Package localcluster runs a real Kubernetes control plane (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler) plus kwok as child
// processes on 127.0.0.1, with simulated kwok nodes instead of kubelets.
//
// It exists because envtest only gives an API server: the operator's
// integration and scale tests also need garbage collection, Deployments that
// turn into scheduled, Ready pods, ServiceAccount tokens and many nodes, and
// none of that is available without a controller manager, a scheduler and
// something that plays the kubelet. Every binary comes from a bin directory
// (hack/build-tools.sh builds them), every port is picked at random, and all
// state lives in one directory, so several clusters can run side by side.
//
// Every process is tracked by PID and stopped by PID (never by name), so a
// test can never kill a process it did not start.
package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

// Component names, as used by PIDs, StopProcess, StartProcess and the pids file.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kwok                  = "kwok"
)

// startOrder is the order components are started in; they are stopped in
// reverse so that no client outlives the server it talks to.
var startOrder = []string{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kwok}

const (
	// pidsFile lists "name pid binary" per started process. Its presence also
	// marks a directory as a cluster directory, which StopDir requires before
	// it removes anything.
	pidsFile = "pids"
	// kubeconfigFile is the admin kubeconfig, with credentials embedded so
	// the file can be copied elsewhere.
	kubeconfigFile = "kubeconfig"

	// NodeNameFormat names the simulated nodes: kwok-node-0, kwok-node-1, ...
	NodeNameFormat = "kwok-node-%d"
	// kwokNodeAnnotation is what kwok's --manage-nodes-with-annotation-selector
	// matches, so kwok only plays the kubelet for nodes this package creates.
	kwokNodeAnnotation = "kwok.x-k8s.io/node"

	// serviceClusterIPRange only names Services: nothing in a local cluster
	// routes to it and no component here dials it (every client uses a
	// kubeconfig pointing at 127.0.0.1, and no webhook or APIService is
	// resolved through a Service).
	serviceClusterIPRange = "10.96.0.0/16"
	serviceClusterIP      = "10.96.0.1"
	// PodCIDR is where kwok takes pod IPs from. It lies inside 127.0.0.0/8,
	// which Linux routes to the loopback interface as a whole: anything that
	// dials a pod IP (a scrape of a shard) stays on this machine, and a
	// process standing in for a pod (test/kubelet) can bind exactly its IP.
	// The price: the API refuses loopback addresses in Endpoints and
	// EndpointSlices, so Services that select pods get no endpoints (the
	// controller manager logs the refusal); no test here reads them.
	PodCIDR              = "127.64.0.0/16"
	serviceAccountIssuer = "https://kubernetes.default.svc"

	// nodeWorkers is how many nodes are created concurrently.
	nodeWorkers = 16
	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
	// pollInterval is how often readiness is polled.
	pollInterval = 100 * time.Millisecond
)

// kwokStages are the stage files (relative to the kwok-stages directory, a
// copy of kwok's kustomize/stage tree) that make kwok behave like a fast,
// healthy kubelet: nodes become Ready and keep a lease, pods become Ready
// right after binding, Job pods complete, and deleted pods go away.
var kwokStages = []string{
	"node/fast/node-initialize.yaml",
	"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"pod/fast/pod-ready.yaml",
	"pod/fast/pod-complete.yaml",
	"pod/fast/pod-delete.yaml",
}

// Options configures Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kwok and the kwok-stages directory.
	BinDir string
	// Dir holds all state: etcd data, certificates, kubeconfig, one log file
	// per process and the pids file. It is created if missing and must be
	// empty, so that a stale etcd never leaks objects into a new cluster.
	Dir string
	// Nodes is the number of kwok nodes created and waited for by Start.
	Nodes int
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
	// Detach starts every process in its own session so that it outlives the
	// calling process (make cluster-up). Otherwise processes are placed in
	// their own process group and are killed by the kernel if the caller
	// dies, so a crashed or timed-out test leaves nothing behind.
	Detach bool
	// ExtraKwokStages are additional kwok Stage YAML files (for example to
	// make some pods fail), loaded together with the default stages.
	ExtraKwokStages []string
	// PodStartupDelay makes kwok hold every scheduled pod Pending this long
	// before it turns Running and Ready, standing in for a container's real
	// start time (benchmarks give both sides of a comparison the same).
	PodStartupDelay time.Duration
	// ExternalKubeletLabel, "key=value" or just "key", marks the pods that
	// something else plays kubelet for (test/kubelet runs real processes
	// for them): every kwok Stage about pods, the default ones and
	// ExtraKwokStages alike, gets a selector requirement that skips pods
	// whose label key has that value (or, without a value, any value), so
	// kwok neither makes them Ready, nor completes them, nor deletes them.
	// kwok still manages the nodes and every other pod.
	ExternalKubeletLabel string
}

// process is one child process and how to restart and probe it.
type process struct {
	name   string
	binary string
	args   []string
	// ready returns nil once the component serves; nil means no probe.
	ready   func(ctx context.Context) error
	timeout time.Duration

	proc *proc.Process // nil until started
}

// Cluster is a running local control plane. Its methods are safe for
// concurrent use.
type Cluster struct {
	opts   Options
	dir    string
	binDir string
	logf   func(format string, args ...any)

	host       string
	restConfig *rest.Config
	client     kubernetes.Interface
	httpClient *http.Client // admin TLS client for /readyz

	mu       sync.Mutex
	procs    map[string]*process
	nextNode int
}

// Start starts a cluster as described by o and returns once the API server is
// ready and o.Nodes kwok nodes are Ready. On error everything it started is
// stopped again.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.BinDir == "" || o.Dir == "" {
		return nil, errors.New("localcluster: Options.BinDir and Options.Dir are required")
	}
	c := &Cluster{opts: o, procs: map[string]*process{}, logf: o.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if c.binDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, err
	}
	if c.dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	for _, name := range startOrder {
		if _, err := os.Stat(filepath.Join(c.binDir, name)); err != nil {
			return nil, fmt.Errorf("localcluster: missing binary (run hack/build-tools.sh): %w", err)
		}
	}
	if err := prepareDir(c.dir); err != nil {
		return nil, err
	}
	// The pids file exists from the start so that StopDir recognises the
	// directory even if Start dies half-way.
	if err := c.writePIDs(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				c.logf("stopping after failed start: %v", stopErr)
			}
		}
	}()

	began := time.Now()
	if err := c.configure(); err != nil {
		return nil, err
	}
	for _, name := range startOrder {
		if err := c.startProcess(ctx, name); err != nil {
			return nil, err
		}
	}
	c.logf("control plane ready in %s", time.Since(began).Round(time.Millisecond))
	if o.Nodes > 0 {
		t := time.Now()
		if _, err := c.AddNodes(ctx, o.Nodes); err != nil {
			return nil, err
		}
		c.logf("%d nodes Ready in %s", o.Nodes, time.Since(t).Round(time.Millisecond))
	}
	return c, nil
}

// prepareDir creates dir, refusing a non-empty one.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("localcluster: state dir %s is not empty (stop the old cluster with StopDir first)", dir)
	}
	return nil
}

// configure writes certificates, keys, kubeconfig and component config files,
// and builds the command line of every process.
func (c *Cluster) configure() error {
	ports, err := proc.FreePorts(5)
	if err != nil {
		return err
	}
	etcdPort, etcdPeerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	c.host = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	p, err := writePKI(c.dir)
	if err != nil {
		return err
	}
	c.restConfig = &rest.Config{
		Host: c.host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caCert,
			CertData: p.adminCert,
			KeyData:  p.adminKey,
		},
		// The defaults (5 QPS) make creating a thousand nodes take minutes;
		// the admin is in system:masters, which API priority and fairness
		// exempts anyway.
		QPS:   500,
		Burst: 1000,
	}
	if c.client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return err
	}
	transport, err := rest.TransportFor(c.restConfig)
	if err != nil {
		return err
	}
	c.httpClient = &http.Client{Transport: transport, Timeout: 5 * time.Second}

	kubeconfig := c.Kubeconfig()
	if err := writeKubeconfig(kubeconfig, c.host, p); err != nil {
		return err
	}
	stages, err := c.writeKwokStages()
	if err != nil {
		return err
	}
	schedConfig := filepath.Join(c.dir, "kube-scheduler.yaml")
	if err := os.WriteFile(schedConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
`, kubeconfig)), 0o644); err != nil {
		return err
	}

	file := func(name string) string { return filepath.Join(c.dir, name) }
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	etcdPeerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	insecure := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // self-signed health endpoints on loopback
	}

	c.add(&process{
		name: Etcd,
		args: []string{
			"--name=default",
			"--data-dir=" + file("etcd"),
			"--listen-client-urls=" + etcdURL,
			"--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + etcdPeerURL,
			"--initial-advertise-peer-urls=" + etcdPeerURL,
			"--initial-cluster=default=" + etcdPeerURL,
			// Throwaway data: durability only costs time.
			"--unsafe-no-fsync",
			"--quota-backend-bytes=8589934592",
			"--log-level=warn",
		},
		ready:   httpProbe(http.DefaultClient, etcdURL+"/health", `"health":"true"`),
		timeout: 60 * time.Second,
	})
	c.add(&process{
		name: KubeAPIServer,
		args: []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", apiPort),
			// The default reconciler publishes the advertise address in the
			// kubernetes Endpoints and refuses loopback addresses.
			"--endpoint-reconciler-type=none",
			"--cert-dir=" + file("apiserver-certs"),
			"--tls-cert-file=" + file("apiserver.crt"),
			"--tls-private-key-file=" + file("apiserver.key"),
			"--client-ca-file=" + file("ca.crt"),
			"--service-account-key-file=" + file("sa.pub"),
			"--service-account-signing-key-file=" + file("sa.key"),
			"--service-account-issuer=" + serviceAccountIssuer,
			"--service-cluster-ip-range=" + serviceClusterIPRange,
			"--authorization-mode=RBAC",
			"--allow-privileged=true",
			// Shut down in ~2 s instead of waiting up to --request-timeout
			// (60 s) for open watch connections: tests restart the server.
			"--shutdown-send-retry-after=true",
			"--shutdown-watch-termination-grace-period=1s",
			"--max-requests-inflight=1000",
			"--max-mutating-requests-inflight=500",
		},
		ready:   httpProbe(c.httpClient, c.host+"/readyz", ""),
		timeout: 120 * time.Second,
	})
	c.add(&process{
		name: KubeControllerManager,
		args: []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			// Without it the controller manager waits for the
			// extension-apiserver-authentication ConfigMap it does not need.
			"--authentication-skip-lookup=true",
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", kcmPort),
			"--cert-dir=" + file("kcm-certs"),
			"--leader-elect=false",
			"--controllers=*",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + file("sa.key"),
			"--root-ca-file=" + file("ca.crt"),
			"--cluster-signing-cert-file=" + file("ca.crt"),
			"--cluster-signing-key-file=" + file("ca.key"),
			"--service-cluster-ip-range=" + serviceClusterIPRange,
			"--cluster-cidr=" + PodCIDR,
			"--kube-api-qps=500",
			"--kube-api-burst=1000",
		},
		ready:   httpProbe(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort), ""),
		timeout: 60 * time.Second,
	})
	c.add(&process{
		name: KubeScheduler,
		args: []string{
			"--config=" + schedConfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--authentication-skip-lookup=true",
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", schedPort),
			"--cert-dir=" + file("scheduler-certs"),
		},
		ready:   httpProbe(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort), ""),
		timeout: 60 * time.Second,
	})
	c.add(&process{
		name: Kwok,
		args: []string{
			"--kubeconfig=" + kubeconfig,
			"--config=" + stages,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
			"--node-lease-duration-seconds=40",
			"--cidr=" + PodCIDR,
			"--server-address=127.0.0.1:0",
		},
		// kwok serves nothing worth probing; Ready nodes prove it works.
	})
	return nil
}

// add registers a process whose binary lives in the bin dir.
func (c *Cluster) add(p *process) {
	p.binary = filepath.Join(c.binDir, p.name)
	c.procs[p.name] = p
}

// writeKwokStages concatenates the default and extra kwok stages into one
// multi-document file, the simplest form kwok's --config accepts.
func (c *Cluster) writeKwokStages() (string, error) {
	var files []string
	for _, s := range kwokStages {
		files = append(files, filepath.Join(c.binDir, "kwok-stages", s))
	}
	files = append(files, c.opts.ExtraKwokStages...)
	var buf bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("localcluster: kwok stage: %w", err)
		}
		if d := c.opts.PodStartupDelay; d > 0 && strings.HasSuffix(f, "pod-ready.yaml") {
			delayed := bytes.Replace(data, []byte("\n  next:\n"),
				[]byte(fmt.Sprintf("\n  delay:\n    durationMilliseconds: %d\n  next:\n", d.Milliseconds())), 1)
			if bytes.Equal(delayed, data) {
				return "", fmt.Errorf("localcluster: cannot add a delay to %s", f)
			}
			data = delayed
		}
		if c.opts.ExternalKubeletLabel != "" {
			excluded, err := excludePods(data, c.opts.ExternalKubeletLabel)
			if err != nil {
				return "", fmt.Errorf("localcluster: kwok stage %s: %w", f, err)
			}
			data = excluded
		}
		fmt.Fprintf(&buf, "---\n# %s\n%s\n", f, bytes.TrimSpace(data))
	}
	path := filepath.Join(c.dir, "kwok-stages.yaml")
	return path, os.WriteFile(path, buf.Bytes(), 0o644)
}

// Kubeconfig returns the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, kubeconfigFile) }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Host returns the API server URL, https://127.0.0.1:PORT.
func (c *Cluster) Host() string { return c.host }

// Dir returns the absolute state directory.
func (c *Cluster) Dir() string { return c.dir }

// PIDs returns the PID of every component that is currently running.
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[string]int{}
	for name, p := range c.procs {
		if p.running() {
			pids[name] = p.proc.PID()
		}
	}
	return pids
}

// StartProcess starts the named component (one of the component constants)
// with the command line it was first started with, and waits until it is
// healthy. Starting a running component is an error.
func (c *Cluster) StartProcess(name string) error {
	return c.startProcess(context.Background(), name)
}

func (c *Cluster) startProcess(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[name]
	if !ok {
		return fmt.Errorf("localcluster: unknown process %q", name)
	}
	if p.running() {
		return fmt.Errorf("localcluster: %s is already running (pid %d)", name, p.proc.PID())
	}
	began := time.Now()
	if err := c.spawn(p); err != nil {
		return err
	}
	if err := c.writePIDs(); err != nil {
		return err
	}
	if p.ready != nil {
		if err := c.waitReady(ctx, p); err != nil {
			// Leave nothing half-started behind.
			return errors.Join(err, p.stop(), c.writePIDs())
		}
	}
	c.logf("%s (pid %d) ready in %s", name, p.proc.PID(), time.Since(began).Round(time.Millisecond))
	return nil
}

// StopProcess stops the named component: SIGTERM to its process group, then
// SIGKILL if it has not exited within 10 s. Stopping a stopped component is
// a no-op.
func (c *Cluster) StopProcess(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[name]
	if !ok {
		return fmt.Errorf("localcluster: unknown process %q", name)
	}
	began := time.Now()
	err := p.stop()
	if werr := c.writePIDs(); err == nil {
		err = werr
	}
	c.logf("%s stopped in %s", name, time.Since(began).Round(time.Millisecond))
	return err
}

// Stop stops every component, newest first. It leaves the state directory
// (with its logs) in place: remove it with StopDir, or let t.TempDir do it.
// Stop is idempotent.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	stopped := false
	for i := len(startOrder) - 1; i >= 0; i-- {
		if p, ok := c.procs[startOrder[i]]; ok && p.running() {
			errs = append(errs, p.stop())
			stopped = true
		}
	}
	// Only record a change: after StopDir the directory is gone and a
	// second Stop must still succeed.
	if stopped {
		errs = append(errs, c.writePIDs())
	}
	return errors.Join(errs...)
}

// spawn starts p with its output appended to DIR/NAME.log. Unless the
// cluster is detached, the child dies with this process, even by SIGKILL or
// a test timeout (see test/proc).
func (c *Cluster) spawn(p *process) error {
	header := fmt.Sprintf("\n==== localcluster %s: %s %s", time.Now().Format(time.RFC3339), p.binary, strings.Join(p.args, " "))
	started, err := proc.StartWith(p.name, p.binary, p.args, c.logPath(p.name),
		proc.Options{Dir: c.dir, Detach: c.opts.Detach, Header: header})
	if err != nil {
		return fmt.Errorf("localcluster: %w", err)
	}
	p.proc = started
	return nil
}

// waitReady polls p's probe until it succeeds, p exits, ctx ends or
// p.timeout passes.
func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := p.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.proc.Exited():
			return fmt.Errorf("localcluster: %s exited (%v) before becoming ready; end of %s:\n%s",
				p.name, p.proc.ExitState(), c.logPath(p.name), tail(c.logPath(p.name), 30))
		case <-ctx.Done():
			return fmt.Errorf("localcluster: %s not ready (%w, last probe: %v); end of %s:\n%s",
				p.name, ctx.Err(), err, c.logPath(p.name), tail(c.logPath(p.name), 30))
		case <-tick.C:
		}
	}
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.dir, name+".log") }

// running reports whether p was started and has not exited.
func (p *process) running() bool { return p.proc != nil && p.proc.Running() }

// stop terminates p's process group and waits for p to be reaped.
func (p *process) stop() error {
	if !p.running() {
		return nil
	}
	if err := p.proc.Stop(stopGrace); err != nil {
		return fmt.Errorf("localcluster: stop %s (pid %d): %w", p.name, p.proc.PID(), err)
	}
	return nil
}

// writePIDs rewrites the pids file with the running processes, atomically so
// that a concurrent StopDir never reads half a file. Callers hold c.mu or
// are still single-threaded.
func (c *Cluster) writePIDs() error {
	var buf bytes.Buffer
	for _, name := range startOrder {
		if p, ok := c.procs[name]; ok && p.running() {
			fmt.Fprintf(&buf, "%s %d %s\n", name, p.proc.PID(), p.binary)
		}
	}
	tmp := filepath.Join(c.dir, pidsFile+".tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, pidsFile))
}

// AddNodes creates n more kwok nodes, named after NodeNameFormat with the
// next free indices, and waits until all of them are Ready. It returns their
// names.
func (c *Cluster) AddNodes(ctx context.Context, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	c.mu.Lock()
	first := c.nextNode
	c.nextNode += n
	c.mu.Unlock()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf(NodeNameFormat, first+i)
	}

	// Generous: measured at ~7 ms per node plus a second for kwok.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(n)*50*time.Millisecond)
	defer cancel()

	// The first failure cancels the other workers and is the one reported.
	createCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(nodeWorkers, n) {
		wg.Go(func() {
			for name := range work {
				_, err := c.client.CoreV1().Nodes().Create(createCtx, kwokNode(name), metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					fail(fmt.Errorf("create node %s: %w", name, err))
					return
				}
			}
		})
	}
feed:
	for _, name := range names {
		select {
		case work <- name:
		case <-createCtx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(createCtx); err != nil {
		return nil, fmt.Errorf("localcluster: creating nodes: %w", err)
	}
	if err := c.waitNodesReady(ctx, names); err != nil {
		return nil, err
	}
	return names, nil
}

// waitNodesReady polls the node list until every named node is Ready.
func (c *Cluster) waitNodesReady(ctx context.Context, names []string) error {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var ready int
	var lastErr error
	for {
		// ResourceVersion "0" is served from the watch cache: cheap even
		// with thousands of nodes.
		list, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{
			LabelSelector:   "type=kwok",
			ResourceVersion: "0",
		})
		if err == nil {
			ready = 0
			for i := range list.Items {
				if want[list.Items[i].Name] && NodeReady(&list.Items[i]) {
					ready++
				}
			}
			if ready == len(names) {
				return nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localcluster: %d of %d nodes Ready (last error: %v); see %s: %w",
				ready, len(names), lastErr, c.logPath(Kwok), ctx.Err())
		case <-tick.C:
		}
	}
}

// NodeReady reports whether node has condition Ready=True.
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// kwokNode returns a node that kwok manages: big enough that scheduling is
// never the bottleneck, untainted so ordinary pods land on it, and without
// status.nodeInfo, which kwok's node-initialize stage fills in.
func kwokNode(name string) *corev1.Node {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				corev1.LabelHostname:   name,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: "amd64",
				"type":                 "kwok",
			},
		},
		Status: corev1.NodeStatus{
			Allocatable: resources,
			Capacity:    resources.DeepCopy(),
		},
	}
}

// ProcessState is one line of a cluster directory's pids file.
type ProcessState struct {
	Name   string
	PID    int
	Binary string
	// Running is true when the PID exists, is not a zombie and still runs
	// Binary (the PID has not been reused by something else).
	Running bool
}

// Processes reads dir's pids file and checks each recorded process. A
// missing directory yields no processes and no error.
func Processes(dir string) ([]ProcessState, error) {
	f, err := os.Open(filepath.Join(dir, pidsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var states []ProcessState
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || pid <= 1 {
			continue
		}
		states = append(states, ProcessState{
			Name:    fields[0],
			PID:     pid,
			Binary:  fields[2],
			Running: runs(pid, fields[2]),
		})
	}
	return states, sc.Err()
}

// StopDir stops the processes recorded in dir's pids file (newest first),
// then removes dir. It works from any process, so it stops clusters started
// with Detach by an earlier command. A PID is only signalled while it still
// runs the recorded binary, so a reused PID is never hit. A missing dir is
// not an error; a dir without a pids file is refused, so that a mistyped
// path cannot delete an unrelated directory.
func StopDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, pidsFile)); err != nil {
		return fmt.Errorf("localcluster: %s is not a cluster directory (no %s file): %w", dir, pidsFile, err)
	}
	states, err := Processes(dir)
	if err != nil {
		return err
	}
	var errs []error
	var stopped []int
	for i := len(states) - 1; i >= 0; i-- {
		if s := states[i]; s.Running {
			errs = append(errs, terminate(s))
			stopped = append(stopped, s.PID)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep the logs of whatever refused to die
	}
	// A detached process that exited stays a zombie until its new parent
	// (init) reaps it, which can take seconds; wait a little so that callers
	// that check with pgrep right away see nothing. A zombie holds no
	// resources, so this is best effort.
	deadline := time.Now().Add(stopGrace)
	for _, pid := range stopped {
		for exists(pid) && time.Now().Before(deadline) {
			time.Sleep(pollInterval)
		}
	}
	return os.RemoveAll(dir)
}

// exists reports whether /proc has an entry for pid, zombie or not.
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// terminate stops a process that need not be our child: SIGTERM to its
// group, poll /proc until it is gone, SIGKILL after stopGrace.
func terminate(s ProcessState) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !runs(s.PID, s.Binary) {
			return nil
		}
		if err := syscall.Kill(-s.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("localcluster: %v %s (pid %d): %w", sig, s.Name, s.PID, err)
		}
		deadline := time.Now().Add(stopGrace)
		for time.Now().Before(deadline) {
			if !alive(s.PID) {
				return nil
			}
			time.Sleep(pollInterval)
		}
	}
	return fmt.Errorf("localcluster: %s (pid %d) survived SIGKILL", s.Name, s.PID)
}

// runs reports whether pid is alive and its command line contains binary.
func runs(pid int, binary string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(binary)) && alive(pid)
}

// alive reports whether pid exists and is not a zombie (a zombie has exited
// and only waits to be reaped by its parent).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces or parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// Healthy reports whether the cluster in dir answers /readyz with its admin
// kubeconfig, and how many kwok nodes are Ready.
func Healthy(ctx context.Context, dir string) (readyNodes int, err error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, kubeconfigFile))
	if err != nil {
		return 0, err
	}
	cfg.Timeout = 10 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return 0, err
	}
	body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("localcluster: /readyz: %w (%s)", err, bytes.TrimSpace(body))
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok", ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	for i := range nodes.Items {
		if NodeReady(&nodes.Items[i]) {
			readyNodes++
		}
	}
	return readyNodes, nil
}

// httpProbe returns a probe that GETs url and wants status 200 and, if
// contains is not empty, a body containing it.
func httpProbe(client *http.Client, url, contains string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), contains) {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		return nil
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pki holds the PEM-encoded credentials the cluster uses.
type pki struct {
	caCert, adminCert, adminKey []byte
}

// writePKI generates a CA, an API server serving certificate, an admin
// client certificate (group system:masters) and the ServiceAccount signing
// key, and writes them into dir. A CA of our own (rather than the API
// server's self-signed cert) lets the controller manager publish it as
// kube-root-ca.crt and sign CSRs, so in-cluster clients can verify the server.
func writePKI(dir string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localcluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	issue := func(serial int64, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.AddDate(10, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
	}
	serverCert, serverKey, err := issue(2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(serviceClusterIP)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, err
	}
	adminCert, adminKey, err := issue(3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localcluster-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	// RSA for ServiceAccount tokens: RS256 is what every token consumer
	// supports.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt":        pemBlock("CERTIFICATE", caDER),
		"ca.key":        pemBlock("EC PRIVATE KEY", caKeyDER),
		"apiserver.crt": serverCert,
		"apiserver.key": serverKey,
		"admin.crt":     adminCert,
		"admin.key":     adminKey,
		"sa.key":        pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
		"sa.pub":        pemBlock("PUBLIC KEY", saPub),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return &pki{caCert: files["ca.crt"], adminCert: adminCert, adminKey: adminKey}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeKubeconfig writes a self-contained admin kubeconfig.
func writeKubeconfig(path, host string, p *pki) error {
	const name = "localcluster"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: p.caCert}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCert, ClientKeyData: p.adminKey}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.WriteToFile(*cfg, path)
}
