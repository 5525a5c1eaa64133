package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ksmscale/ksm-scale-operator/test/e2e/ksmproc"
)

const (
	// Restart back-off after an exit or a failed liveness probe: doubling
	// from restartBackoffBase to restartBackoffMax, and back to the base
	// once a container has run for backoffReset. Kubelet's 10 s..5 min is
	// too slow for tests.
	restartBackoffBase = time.Second
	restartBackoffMax  = 20 * time.Second
	backoffReset       = time.Minute
	// defaultGrace is a pod's termination grace without
	// terminationGracePeriodSeconds (the API's default).
	defaultGrace = 30 * time.Second
	// minGrace is kubelet's floor for a container's grace period.
	minGrace = 2 * time.Second
)

// Waiting reasons of a container that does not run, as kubelet names them.
const (
	reasonCreating     = "ContainerCreating"
	reasonConfigError  = "CreateContainerConfigError"
	reasonCrashLoop    = "CrashLoopBackOff"
	reasonStartError   = "StartError"
	reasonLivenessKill = "LivenessProbeFailed"
)

// podRunner runs one pod's KSM container: starts it, probes it, restarts it,
// and keeps what the status is derived from.
type podRunner struct {
	k   *Kubelet
	key string
	uid types.UID
	ip  string
	// pod is the pod as admitted; kubelet runs the spec it started with.
	pod *corev1.Pod

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned, its process stopped

	mu          sync.Mutex
	obs         podObs
	proc        *ksmproc.Process
	haltGrace   time.Duration
	isHalted    bool
	terminating bool
	err         error
}

func newRunner(k *Kubelet, key string, pod *corev1.Pod, ip string) *podRunner {
	ctx, cancel := context.WithCancel(k.ctx)
	return &podRunner{
		k: k, key: key, uid: pod.UID, ip: ip, pod: pod.DeepCopy(),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		obs: podObs{
			podIP: ip, hostIP: HostIP, startTime: time.Now(),
			container: containerObs{waiting: reasonCreating},
		},
	}
}

// observe returns a snapshot of what the status is derived from.
func (r *podRunner) observe() podObs {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.obs
}

// update changes the observation and has the pod's status rewritten.
func (r *podRunner) update(f func(o *containerObs)) {
	r.mu.Lock()
	f(&r.obs.container)
	if r.obs.container.running {
		r.obs.everStarted = true
	}
	r.mu.Unlock()
	r.k.queue.Add(r.key)
}

func (r *podRunner) process() *ksmproc.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

func (r *podRunner) halted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.isHalted
}

// beginTermination reports whether this call is the first for the pod's
// deletion.
func (r *podRunner) beginTermination() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := !r.terminating
	r.terminating = true
	return first
}

func (r *podRunner) stopErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// grace is the time the container gets between SIGTERM and SIGKILL: the
// deletion's grace period when pod (the current object) is being deleted,
// else the pod's terminationGracePeriodSeconds.
func (r *podRunner) grace(pod *corev1.Pod) time.Duration {
	g := defaultGrace
	if s := r.pod.Spec.TerminationGracePeriodSeconds; s != nil {
		g = time.Duration(*s) * time.Second
	}
	if pod != nil && pod.DeletionGracePeriodSeconds != nil {
		g = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	return max(g, minGrace)
}

// haltAsync stops the container for good, without waiting.
func (r *podRunner) haltAsync(grace time.Duration) {
	r.mu.Lock()
	if !r.isHalted {
		r.isHalted = true
		r.haltGrace = grace
	}
	r.mu.Unlock()
	r.cancel()
}

// halt stops the container for good and waits until its process is gone.
func (r *podRunner) halt(grace time.Duration) {
	r.haltAsync(grace)
	<-r.done
}

// run is the container's life: credentials, then start, probe and restart
// until halted.
func (r *podRunner) run() {
	defer close(r.done)
	ctx := r.ctx
	c := container(r.pod)
	if c == nil {
		r.update(func(o *containerObs) {
			o.waiting, o.waitingMessage = reasonConfigError, fmt.Sprintf("pod has no container %q", ContainerName)
		})
		<-ctx.Done()
		return
	}
	backoff := restartBackoffBase
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, restartBackoffMax)
		return true
	}

	var kubeconfig string
	for {
		var err error
		if r.k.o.Kubeconfig != nil {
			kubeconfig, err = r.k.o.Kubeconfig(ctx, r.pod)
		}
		if err == nil && kubeconfig == "" {
			kubeconfig, err = r.k.serviceAccountKubeconfig(ctx, r.pod)
		}
		if err == nil {
			break
		}
		r.configError(err)
		if !wait() {
			return
		}
	}
	backoff = restartBackoffBase

	for {
		env, vars, err := containerEnv(ctx, r.k.client, r.pod, c, r.ip, HostIP)
		var args []string
		if err == nil {
			expanded := make([]string, len(c.Args))
			for i, a := range c.Args {
				expanded[i] = expand(a, vars)
			}
			args, err = ksmproc.ArgsOnHost(r.pod, expanded, kubeconfig, r.ip)
		}
		if err != nil {
			r.configError(err)
			if !wait() {
				return
			}
			continue
		}
		p, err := ksmproc.Start(ctx, ksmproc.Options{
			Bin: r.k.bin, Args: args, Env: env, NoWait: true, Name: r.key,
			LogFile: r.k.LogFile(r.pod.Namespace, r.pod.Name),
		})
		if err != nil {
			r.update(func(o *containerObs) { o.waiting, o.waitingMessage = reasonStartError, err.Error() })
			if !wait() {
				return
			}
			continue
		}
		started := time.Now()
		id := fmt.Sprintf("test-kubelet://%d", p.PID())
		r.mu.Lock()
		r.proc = p
		r.mu.Unlock()
		r.update(func(o *containerObs) {
			*o = containerObs{
				running: true, startedAt: started, containerID: id,
				ready: c.ReadinessProbe == nil, restarts: o.restarts, lastTerminated: o.lastTerminated,
			}
		})

		livenessFailed := r.supervise(ctx, p, c)
		if ctx.Err() != nil {
			r.mu.Lock()
			grace := r.haltGrace
			r.mu.Unlock()
			if err := p.StopGrace(grace); err != nil {
				r.mu.Lock()
				r.err = fmt.Errorf("kubelet: stop %s (pid %d): %w", r.key, p.PID(), err)
				r.mu.Unlock()
			}
			r.update(func(o *containerObs) { o.running, o.ready = false, false })
			return
		}
		if livenessFailed {
			r.k.logf("kubelet: %s: liveness probe failed, restarting (pid %d)", r.key, p.PID())
			if err := p.StopGrace(r.grace(nil)); err != nil {
				r.k.logf("kubelet: %s: %v", r.key, err)
			}
		}
		finished := time.Now()
		term := terminated(p, id, started, finished, livenessFailed)
		if finished.Sub(started) >= backoffReset {
			backoff = restartBackoffBase
		}
		r.k.logf("kubelet: %s: container exited (%s, code %d), restarting in %s", r.key, term.Reason, term.ExitCode, backoff)
		r.update(func(o *containerObs) {
			*o = containerObs{
				restarts: o.restarts + 1, containerID: id, lastTerminated: term,
				waiting:        reasonCrashLoop,
				waitingMessage: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.Name, r.key),
			}
		})
		if !wait() {
			return
		}
	}
}

func (r *podRunner) configError(err error) {
	r.k.logf("kubelet: %s: %v", r.key, err)
	r.update(func(o *containerObs) { o.waiting, o.waitingMessage = reasonConfigError, err.Error() })
}

// terminated describes how p ended, with kubelet's exit codes for signals.
func terminated(p *ksmproc.Process, id string, started, finished time.Time, liveness bool) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ContainerID: id, StartedAt: seconds(started), FinishedAt: seconds(finished), Reason: "Error",
	}
	if st := p.ExitState(); st != nil {
		t.ExitCode = int32(st.ExitCode())
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.ExitCode = 128 + int32(ws.Signal())
		}
	}
	if t.ExitCode == 0 {
		t.Reason = "Completed"
	}
	if liveness {
		t.Message = reasonLivenessKill
	}
	return t
}

// container returns the pod's KSM container.
func container(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == ContainerName {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// supervise probes p until it exits, ctx ends, or the liveness probe fails
// failureThreshold times in a row (then it returns true). It publishes
// readiness as the readiness probe decides.
func (r *podRunner) supervise(ctx context.Context, p *ksmproc.Process, c *corev1.Container) (livenessFailed bool) {
	start := time.Now()
	readiness := newProber(r, c, c.ReadinessProbe, start)
	liveness := newProber(r, c, c.LivenessProbe, start)
	ready := c.ReadinessProbe == nil
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := time.Time{}
		for _, pr := range []*prober{readiness, liveness} {
			if pr != nil && (next.IsZero() || pr.next.Before(next)) {
				next = pr.next
			}
		}
		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tick = timer.C
		}
		select {
		case <-p.Done():
			return false
		case <-ctx.Done():
			return false
		case <-tick:
		}
		now := time.Now()
		if readiness != nil && !now.Before(readiness.next) {
			if ok, changed := readiness.check(ctx, ready); changed && ctx.Err() == nil && !p.Exited() {
				ready = ok
				r.update(func(o *containerObs) { o.ready = ok })
			}
		}
		if liveness != nil && !now.Before(liveness.next) {
			if ok, changed := liveness.check(ctx, true); changed && !ok && ctx.Err() == nil && !p.Exited() {
				return true
			}
		}
	}
}

// prober runs one of a container's probes with Kubernetes' semantics and
// defaults (period 10 s, timeout 1 s, success 1, failure 3).
type prober struct {
	r      *podRunner
	c      *corev1.Container
	probe  *corev1.Probe
	period time.Duration
	next   time.Time
	client *http.Client
	// consecutive results
	successes, failures int32
	warned              bool
}

func newProber(r *podRunner, c *corev1.Container, p *corev1.Probe, start time.Time) *prober {
	if p == nil {
		return nil
	}
	pr := &prober{r: r, c: c, probe: p, period: seconds32(p.PeriodSeconds, 10)}
	pr.next = start.Add(time.Duration(p.InitialDelaySeconds) * time.Second)
	pr.client = &http.Client{
		Timeout: seconds32(p.TimeoutSeconds, 1),
		// Kubelet neither keeps connections nor uses a proxy, and takes a
		// redirect as success; HTTPS is not verified.
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet does not verify probes
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return pr
}

func seconds32(v, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

// check runs the probe once and returns the resulting state given the
// current one (cur), and whether it changed: it turns true after
// successThreshold consecutive successes and false after failureThreshold
// consecutive failures.
func (pr *prober) check(ctx context.Context, cur bool) (state, changed bool) {
	pr.next = time.Now().Add(pr.period)
	err := pr.run(ctx)
	if err == nil {
		pr.successes++
		pr.failures = 0
		if !cur && pr.successes >= max(pr.probe.SuccessThreshold, 1) {
			return true, true
		}
		return cur, false
	}
	pr.failures++
	pr.successes = 0
	failureThreshold := pr.probe.FailureThreshold
	if failureThreshold <= 0 {
		failureThreshold = 3
	}
	if cur && pr.failures >= failureThreshold {
		return false, true
	}
	return cur, false
}

func (pr *prober) run(ctx context.Context) error {
	switch h := pr.probe.ProbeHandler; {
	case h.HTTPGet != nil:
		return pr.httpGet(ctx, h.HTTPGet)
	case h.TCPSocket != nil:
		port, err := pr.port(h.TCPSocket.Port)
		if err != nil {
			return err
		}
		d := net.Dialer{Timeout: pr.client.Timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(pr.host(h.TCPSocket.Host), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	default:
		// exec and gRPC probes need the container's filesystem or a gRPC
		// client; KSM's manifests use neither. Count them as passing.
		if !pr.warned {
			pr.warned = true
			pr.r.k.logf("kubelet: %s: only httpGet and tcpSocket probes are run; taking this one as passing", pr.r.key)
		}
		return nil
	}
}

func (pr *prober) httpGet(ctx context.Context, g *corev1.HTTPGetAction) error {
	port, err := pr.port(g.Port)
	if err != nil {
		return err
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(pr.host(g.Host), strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/test-kubelet")
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// host is the probe's target address: the pod IP, unless the probe names a
// loopback address of its own (anything else is never dialed).
func (pr *prober) host(h string) string {
	if a, err := netip.ParseAddr(h); err == nil && a.IsLoopback() {
		return h
	}
	return pr.r.ip
}

// port resolves a probe port given by number or by the container port's
// name.
func (pr *prober) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range pr.c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, errors.New("no container port named " + p.StrVal)
}
