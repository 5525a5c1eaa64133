package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
	"github.com/ksmscale/ksm-scale-operator/internal/promtext"
)

// The hand-over verification.
//
// kube-state-metrics says Ready before its first list has finished, so a
// Ready pod can serve an empty or partial set, and a settle timer is a guess
// that a large cluster's list outlasts. Every kube-state-metrics pod therefore
// carries the readiness gate ksm.MetricsVerifiedGate, and the operator sets
// it only when the pod's own /metrics show what it must export:
//
//   - as the pod it replaces: another verified pod of the same shard and
//     shard count (a rollout), or another verified replica of the unsharded
//     Deployment, exports the same objects; the counts of
//     ksm.IdentityFamilies must agree within ksm.Tolerance;
//   - as the workload it replaces: a new generation (reshard, sharding
//     switched on or off) has no per-shard peer, so its pods are verified
//     together, once their summed counts agree with a complete verified
//     generation's, or the Deployment's;
//   - always, unless extra arguments restrict what it exports: exactly the
//     nodes and namespaces its shard owns, which the operator computes from
//     its own caches with ksm.ShardOf;
//   - with nothing to compare with (the first start, a lost shard): the
//     node and namespace check, and counts unchanged since the previous
//     scrape.
//
// kubelet reports the pod Ready only then, so the Service's endpoints, the
// PodDisruptionBudget, kubectl and the operator's replacement rules all count
// it from that moment; the settle time (minReadySeconds) stays as a floor,
// counted from the containers becoming ready.
//
// When verification is impossible (the pod has no IP, a NetworkPolicy drops
// the scrape, the endpoint fails or returns garbage) the gate is set once the
// containers have been ready for the settle time, with reason Unverified, a
// Warning Event and the KSMScale's MetricsVerified condition saying why; when
// the pod answers but keeps exporting less than it should (it cannot list a
// kind), the same happens after the verify timeout. A hand-over never waits
// forever.

// Reasons on the pods' MetricsVerified gate condition.
const (
	// GateVerified: the pod's metrics showed the objects it must export.
	GateVerified = "Verified"
	// GateUnverified: the pod took over after the settle time (or the verify
	// timeout) without verified metrics; the message says why.
	GateUnverified = "Unverified"
)

// EventHandoverUnverified is the Warning Event of a fallback.
const EventHandoverUnverified = "HandoverUnverified"

const (
	// verifyInterval is how often a pass re-scrapes pods that are waiting,
	// for their first verifyEagerFor: a new pod is verified, and a shard
	// becomes Available, at most about this long after its list finished
	// (twice that when nothing compares and two equal scrapes are needed).
	// A scrape of a pod that is still listing is cheap: it has little to say.
	verifyInterval = time.Second
	// verifyEagerFor: after this long waiting, a pod's list is done and its
	// metrics do not agree; it is re-scraped only every verifyBackoff until
	// they do or the verify timeout ends, so that a large shard that keeps
	// disagreeing costs little.
	verifyEagerFor = 30 * time.Second
	verifyBackoff  = 5 * time.Second
	// confirmAfter: a pod with nothing to compare with, which exports the
	// nodes and namespaces it owns and some pods, is scraped again this soon
	// to confirm its counts hold. (Without pods, the largest kind and the
	// last to list, it may still be listing, and two quick scrapes would
	// both show none: it is confirmed at verifyInterval.) kube-state-metrics fills a kind's store in one Replace,
	// milliseconds for a shard, so two equal scrapes this far apart are
	// as telling as two a second apart, and the shard is Available sooner.
	confirmAfter = 250 * time.Millisecond
	// scrapeTimeout bounds one scrape, connection to last byte. A shard of
	// a 150,000-pod cluster serves tens of MB, seconds even on a slow
	// network; a hung endpoint costs a pass at most this.
	scrapeTimeout = 10 * time.Second
	// scrapeParallelism bounds the scrapes of one pass.
	scrapeParallelism = 8
	// maxScrapeBytes bounds what one scrape may read.
	maxScrapeBytes = 1 << 30
	// staleScrape: remembered counts older than this are forgotten.
	staleScrape = 10 * time.Minute
	// DefaultVerifyTimeout is --verify-timeout's default.
	DefaultVerifyTimeout = 5 * time.Minute
)

// verifier holds what verification needs across passes: the HTTP client and
// the previous counts of each waiting pod (for the stability rule). Losing
// the memory on a restart costs one more scrape, nothing else.
type verifier struct {
	enabled bool
	// timeout is how long a pod that answers but exports too little may
	// wait before it takes over unverified.
	timeout time.Duration
	client  *http.Client
	// scrapeTimeout and maxBytes bound one scrape (scrapeTimeout and
	// maxScrapeBytes; tests lower them).
	scrapeTimeout time.Duration
	maxBytes      int64

	mu   sync.Mutex
	last map[types.UID]remembered
}

type remembered struct {
	counts ksm.Counts
	at     time.Time
}

func newVerifier(enabled bool, timeout time.Duration) *verifier {
	dialer := &net.Dialer{Timeout: 3 * time.Second}
	return &verifier{
		enabled:       enabled,
		timeout:       timeout,
		scrapeTimeout: scrapeTimeout,
		maxBytes:      maxScrapeBytes,
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:                 nil, // pod IPs are never reached through a proxy
				DialContext:           dialer.DialContext,
				ResponseHeaderTimeout: scrapeTimeout,
				MaxIdleConnsPerHost:   1,
				IdleConnTimeout:       30 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		last: map[types.UID]remembered{},
	}
}

// ksmPod is one kube-state-metrics pod (a shard pod or a Deployment replica)
// as verification sees it.
type ksmPod struct {
	pod *corev1.Pod
	// shard and total are what it exports; total is 1 for an unsharded pod.
	shard, total int32
	active       bool
	gated        bool // has the readiness gate
	gate         *corev1.PodCondition
	ready        bool
	// containersSince is when its containers became ready; zero if not.
	containersSince time.Time
	// scope is what its arguments narrow the export to (ksm.ObjectScope):
	// only pods of equal scope are compared.
	scope string
}

func readKSMPod(p *corev1.Pod) ksmPod {
	k := ksmPod{pod: p, shard: 0, total: 1}
	i := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == ksm.ContainerName })
	if i >= 0 {
		if s, t := shardArgs(p.Spec.Containers[i].Args); t > 0 {
			k.shard, k.total = s, t
		}
		k.scope = ksm.ObjectScope(p.Spec.Containers[i].Args)
	}
	k.active = p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded
	k.gated = slices.ContainsFunc(p.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == ksm.MetricsVerifiedGate })
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		switch c.Type {
		case ksm.MetricsVerifiedGate:
			k.gate = c
		case corev1.PodReady:
			k.ready = c.Status == corev1.ConditionTrue
		case corev1.ContainersReady:
			if c.Status == corev1.ConditionTrue {
				k.containersSince = c.LastTransitionTime.Time
			}
		}
	}
	return k
}

func (k ksmPod) gateTrue() bool { return k.gate != nil && k.gate.Status == corev1.ConditionTrue }

// verified: a pod whose export counts as known-good, to compare others with.
// A pod without the gate (made before verification was turned on) counts
// when Ready: it is what serves now.
func (k ksmPod) verified() bool { return k.active && k.ready && (!k.gated || k.gateTrue()) }

// waiting: a pod whose containers are ready and whose gate is not set yet.
func (k ksmPod) waiting() bool {
	return k.active && k.gated && !k.gateTrue() && !k.containersSince.IsZero()
}

// shardKey names what a pod exports: the same objects for equal keys.
type shardKey struct {
	scope        string
	total, shard int32
}

func keyOf(k ksmPod) shardKey { return shardKey{k.scope, k.total, k.shard} }

// genKey names a generation: the pods of one scope and shard count.
type genKey struct {
	scope string
	total int32
}

func genOf(k ksmPod) genKey { return genKey{k.scope, k.total} }

// verifyHandovers scrapes the waiting pods of this KSMScale and sets their
// gate when they pass, or when the fallback is due. It returns when to look
// again while pods are waiting. Nothing is scraped when nothing waits, so a
// converged instance stays quiet.
func (r *KSMScaleReconciler) verifyHandovers(ctx context.Context, s *scope) (ctrl.Result, error) {
	v := r.verify
	if v == nil || !v.enabled || s.cfg.Paused {
		return ctrl.Result{}, nil
	}
	pods, err := r.ksmPods(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	all := make([]ksmPod, 0, len(pods))
	var waiting []ksmPod
	for _, p := range pods {
		k := readKSMPod(p)
		all = append(all, k)
		if k.waiting() {
			waiting = append(waiting, k)
		}
	}
	s.obs.verify = verifyObservation(all)
	if len(waiting) == 0 {
		v.forget(all, s.now)
		return ctrl.Result{}, nil
	}

	// References: a verified peer per waiting pod's shard, and a complete
	// verified generation other than each waiting pod's own.
	peers := map[shardKey]ksmPod{}
	gens := map[string]map[int32]map[int32]ksmPod{} // scope -> total -> shard
	for _, k := range all {
		if !k.verified() {
			continue
		}
		key := keyOf(k)
		if _, ok := peers[key]; !ok {
			peers[key] = k
		}
		if gens[k.scope] == nil {
			gens[k.scope] = map[int32]map[int32]ksmPod{}
		}
		if gens[k.scope][k.total] == nil {
			gens[k.scope][k.total] = map[int32]ksmPod{}
		}
		if _, ok := gens[k.scope][k.total][k.shard]; !ok {
			gens[k.scope][k.total][k.shard] = k
		}
	}
	toScrape := map[types.UID]*corev1.Pod{}
	for _, k := range waiting {
		toScrape[k.pod.UID] = k.pod
		if p, ok := peers[keyOf(k)]; ok {
			toScrape[p.pod.UID] = p.pod
		}
	}
	covers := map[genKey][]ksmPod{} // waiting generation -> the complete generation it replaces
	for _, k := range waiting {
		if _, ok := peers[keyOf(k)]; ok {
			continue
		}
		if _, done := covers[genOf(k)]; done {
			continue
		}
		if cover := completeGeneration(gens[k.scope], k.total); cover != nil {
			covers[genOf(k)] = cover
			for _, c := range cover {
				toScrape[c.pod.UID] = c.pod
			}
		}
	}
	counts := v.scrapeAll(ctx, toScrape)

	ident, err := r.identityExpectations(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Decide each waiting pod: a reason it is not verified yet ("" when it
	// is), or an error that makes verification impossible.
	verdict := map[types.UID]string{}
	impossible := map[types.UID]error{}
	evidence := map[types.UID]string{}
	confirming := map[types.UID]bool{} // only the stability rule is left
	pending := map[genKey][]ksmPod{}
	for _, k := range waiting {
		got := counts[k.pod.UID]
		if got.err != nil {
			impossible[k.pod.UID] = got.err
			continue
		}
		why := ident.check(got.counts, k)
		peer, hasPeer := peers[keyOf(k)]
		switch {
		case why != "":
		case hasPeer && counts[peer.pod.UID].err == nil:
			why = ksm.CompareCounts(got.counts, counts[peer.pod.UID].counts)
			evidence[k.pod.UID] = "as " + peer.pod.Name + " does"
		case covers[genOf(k)] != nil:
			pending[genOf(k)] = append(pending[genOf(k)], k)
			continue
		default:
			why = v.stable(k.pod.UID, got.counts, s.now)
			evidence[k.pod.UID] = "unchanged since the previous scrape; nothing to compare with"
			confirming[k.pod.UID] = why != "" && got.counts[ksm.FamilyPods] > 0
		}
		verdict[k.pod.UID] = why
	}
	for g, ks := range pending {
		why := generationVerdict(g, ks, peers, covers[g], counts)
		together := fmt.Sprintf("the %d shards together", g.total)
		if g.total == 1 {
			together = "the whole set"
		}
		for _, k := range ks {
			verdict[k.pod.UID] = why
			evidence[k.pod.UID] = fmt.Sprintf("%s, as %s does", together, describeCover(covers[g]))
		}
	}
	for _, k := range waiting {
		v.remember(k.pod.UID, counts[k.pod.UID], s.now)
	}

	minReady := time.Duration(s.cfg.MinReadySeconds) * time.Second
	var res ctrl.Result
	var errs []error
	for _, k := range waiting {
		uid := k.pod.UID
		since := s.now.Sub(k.containersSince)
		if err, ok := impossible[uid]; ok {
			if since >= minReady {
				errs = append(errs, r.unverified(ctx, s, k, fmt.Sprintf("cannot read its metrics (%v); took over after the settle time of %s", err, minReady)))
				continue
			}
			res = earliest(res, ctrl.Result{RequeueAfter: min(rescrapeAfter(since), minReady-since+settleSlack)})
			continue
		}
		why := verdict[uid]
		if why == "" {
			c := counts[uid].counts
			msg := fmt.Sprintf("exports %d pods, %d nodes and %d namespaces, %s", c[ksm.FamilyPods], c[ksm.FamilyNodes], c[ksm.FamilyNamespaces], evidence[uid])
			errs = append(errs, r.setGate(ctx, k.pod, GateVerified, msg, s.now))
			log.FromContext(ctx).Info("verified pod metrics", "pod", k.pod.Name, "evidence", msg)
			continue
		}
		if since >= max(v.timeout, minReady) {
			errs = append(errs, r.unverified(ctx, s, k, fmt.Sprintf("after %s it still %s; took over unverified", v.timeout, why)))
			continue
		}
		if confirming[uid] {
			res = earliest(res, ctrl.Result{RequeueAfter: confirmAfter})
			continue
		}
		res = earliest(res, ctrl.Result{RequeueAfter: rescrapeAfter(since)})
	}
	return res, errors.Join(errs...)
}

// rescrapeAfter is when a pod that has waited this long since its containers
// became ready is scraped again.
func rescrapeAfter(waited time.Duration) time.Duration {
	if waited < verifyEagerFor {
		return verifyInterval
	}
	return verifyBackoff
}

// ksmPods lists this KSMScale's kube-state-metrics pods in its namespace:
// the shard pods (owned by it) and the Deployment's replicas (owned by a
// ReplicaSet, found by their selector).
func (r *KSMScaleReconciler) ksmPods(ctx context.Context, s *scope) ([]*corev1.Pod, error) {
	shards := &corev1.PodList{}
	if err := r.List(ctx, shards, client.InNamespace(s.cfg.Namespace), client.MatchingFields{ownerIndex: string(s.ksm.UID)}); err != nil {
		return nil, fmt.Errorf("list shard pods: %w", err)
	}
	replicas := &corev1.PodList{}
	if err := r.List(ctx, replicas, client.InNamespace(s.cfg.Namespace), client.MatchingLabels(ksm.UnshardedSelector(s.cfg.Name))); err != nil {
		return nil, fmt.Errorf("list Deployment pods: %w", err)
	}
	out := make([]*corev1.Pod, 0, len(shards.Items)+len(replicas.Items))
	seen := map[types.UID]bool{}
	for _, list := range [][]corev1.Pod{shards.Items, replicas.Items} {
		for i := range list {
			if !seen[list[i].UID] {
				seen[list[i].UID] = true
				out = append(out, &list[i])
			}
		}
	}
	return out, nil
}

// completeGeneration is a complete verified generation other than `not`:
// one verified pod per shard of some other shard count, or a verified
// unsharded replica (total 1). The unsharded one is preferred: it is one
// scrape.
func completeGeneration(gens map[int32]map[int32]ksmPod, not int32) []ksmPod {
	totals := make([]int32, 0, len(gens))
	for t := range gens {
		totals = append(totals, t)
	}
	slices.Sort(totals)
	for _, t := range totals {
		if t == not || int32(len(gens[t])) != t {
			continue
		}
		out := make([]ksmPod, 0, t)
		for s := int32(0); s < t; s++ {
			out = append(out, gens[t][s])
		}
		return out
	}
	return nil
}

// generationVerdict compares a waiting generation with the one it replaces:
// one pod per shard (a verified one where there is one, else a waiting one
// that was scraped), summed, against the cover's sum.
func generationVerdict(g genKey, waiting []ksmPod, peers map[shardKey]ksmPod, cover []ksmPod, counts map[types.UID]scraped) string {
	total := g.total
	sum := ksm.Counts{}
	for s := int32(0); s < total; s++ {
		var c ksm.Counts
		if p, ok := peers[shardKey{g.scope, total, s}]; ok && counts[p.pod.UID].err == nil {
			c = counts[p.pod.UID].counts
		}
		for _, k := range waiting {
			if c == nil && k.shard == s && counts[k.pod.UID].err == nil {
				c = counts[k.pod.UID].counts
			}
		}
		if c == nil {
			return fmt.Sprintf("shard %d of %d has no pod to verify yet", s, total)
		}
		sum.Add(c)
	}
	want := ksm.Counts{}
	for _, k := range cover {
		c := counts[k.pod.UID]
		if c.err != nil {
			return fmt.Sprintf("cannot read %s, which it replaces: %v", k.pod.Name, c.err)
		}
		want.Add(c.counts)
	}
	if why := ksm.CompareCounts(sum, want); why != "" {
		return fmt.Sprintf("the %d shards together %s (%s)", total, strings.TrimPrefix(why, "exports "), describeCover(cover))
	}
	return ""
}

func describeCover(cover []ksmPod) string {
	if len(cover) == 1 {
		return cover[0].pod.Name
	}
	return fmt.Sprintf("the %d-shard generation", len(cover))
}

// identity holds the node and namespace UIDs the operator's own caches
// know, to compute exactly what a shard must export of them.
type identity struct {
	nodes, namespaces []types.UID
}

func (r *KSMScaleReconciler) identityExpectations(ctx context.Context, s *scope) (identity, error) {
	var id identity
	for kind, dst := range map[string]*[]types.UID{"NodeList": &id.nodes, "NamespaceList": &id.namespaces} {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
		if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return id, fmt.Errorf("list %s: %w", kind, err)
		}
		for _, o := range list.Items {
			if o.DeletionTimestamp.IsZero() {
				*dst = append(*dst, o.UID)
			}
		}
	}
	return id, nil
}

// check is "" when counts hold exactly the nodes and namespaces of k's shard
// (within ksm.Tolerance, for objects created or deleted a moment ago).
func (id identity) check(counts ksm.Counts, k ksmPod) string {
	if k.scope != "" {
		return ""
	}
	return ksm.CompareCounts(counts, ksm.Counts{
		ksm.FamilyNodes:      ksm.ShareOf(id.nodes, k.shard, k.total),
		ksm.FamilyNamespaces: ksm.ShareOf(id.namespaces, k.shard, k.total),
	})
}

// scraped is one scrape's outcome.
type scraped struct {
	counts ksm.Counts
	err    error
}

// scrapeAll scrapes the pods concurrently, at most scrapeParallelism at a
// time, each bounded by scrapeTimeout.
func (v *verifier) scrapeAll(ctx context.Context, pods map[types.UID]*corev1.Pod) map[types.UID]scraped {
	out := make(map[types.UID]scraped, len(pods))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, scrapeParallelism)
	for uid, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := v.scrape(ctx, p)
			mu.Lock()
			out[uid] = scraped{c, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// scrape reads the identity families from a pod's metrics endpoint as a
// stream: a shard's whole output is never held in memory.
func (v *verifier) scrape(ctx context.Context, p *corev1.Pod) (ksm.Counts, error) {
	if p.Status.PodIP == "" {
		return nil, errors.New("the pod has no IP")
	}
	url := "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(metricsPort(p))) + "/metrics"
	ctx, cancel := context.WithTimeout(ctx, v.scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// The text format: no protobuf or OpenMetrics negotiation.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	c, err := promtext.Count(resp.Body, promtext.Limits{MaxBytes: v.maxBytes}, ksm.IdentityFamilies)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	out := ksm.Counts{}
	for f, n := range c {
		if n > 0 {
			out[f] = n
		}
	}
	return out, nil
}

// metricsPort is the port of the pod's http-metrics container port.
func metricsPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == ksm.MetricsPortName {
				return int(port.ContainerPort)
			}
		}
	}
	return ksm.MetricsPort
}

// stable is "" when counts equal the pod's previous scrape (within
// tolerance, both ways) and the previous scrape is recent.
func (v *verifier) stable(uid types.UID, counts ksm.Counts, now time.Time) string {
	v.mu.Lock()
	prev, ok := v.last[uid]
	v.mu.Unlock()
	if !ok || now.Sub(prev.at) > staleScrape {
		return "has been scraped once; waiting for a second, unchanged scrape"
	}
	if why := ksm.CompareCounts(counts, prev.counts); why != "" {
		return "changed since the previous scrape: " + why
	}
	if why := ksm.CompareCounts(prev.counts, counts); why != "" {
		return "changed since the previous scrape: " + why
	}
	return ""
}

func (v *verifier) remember(uid types.UID, s scraped, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s.err != nil {
		delete(v.last, uid)
		return
	}
	v.last[uid] = remembered{s.counts, now}
}

// forget drops remembered counts of pods that no longer wait, and stale ones.
func (v *verifier) forget(pods []ksmPod, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, k := range pods {
		if !k.waiting() {
			delete(v.last, k.pod.UID)
		}
	}
	for uid, m := range v.last {
		if now.Sub(m.at) > staleScrape {
			delete(v.last, uid)
		}
	}
}

// setGate sets the pod's MetricsVerified condition True through the status
// subresource. The strategic merge patch names only this condition, so
// kubelet's own conditions are never overwritten.
func (r *KSMScaleReconciler) setGate(ctx context.Context, p *corev1.Pod, reason, msg string, now time.Time) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{{
		Type: ksm.MetricsVerifiedGate, Status: corev1.ConditionTrue, Reason: reason, Message: truncate(msg, 1024),
		LastTransitionTime: metav1.NewTime(now),
	}}}})
	if err != nil {
		return err
	}
	if err := r.Status().Patch(ctx, p, client.RawPatch(types.StrategicMergePatchType, patch)); client.IgnoreNotFound(err) != nil {
		return classify(err, "set the metrics-verified condition of pod "+p.Name)
	}
	return nil
}

// unverified is the fallback: the gate is set anyway, and people are told.
func (r *KSMScaleReconciler) unverified(ctx context.Context, s *scope, k ksmPod, why string) error {
	log.FromContext(ctx).Info("pod takes over without verified metrics", "pod", k.pod.Name, "why", why)
	r.podEvent(s, k.pod, corev1.EventTypeWarning, EventHandoverUnverified, "VerifyMetrics", "pod %s: %s", k.pod.Name, truncate(why, 512))
	return r.setGate(ctx, k.pod, GateUnverified, why, s.now)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// verifyState is what status reports about verification.
type verifyState struct {
	// waiting pods have ready containers and no verdict yet.
	waiting []string
	// unverified pods serve after a fallback; "pod: why".
	unverified []string
}

// verifyObservation reads the pods' gate conditions: status is derived from
// what is on the pods, so it does not churn and survives a restart.
func verifyObservation(pods []ksmPod) verifyState {
	var st verifyState
	for _, k := range pods {
		switch {
		case !k.active || !k.gated:
		case k.waiting():
			st.waiting = append(st.waiting, k.pod.Name)
		case k.gateTrue() && k.gate.Reason == GateUnverified:
			st.unverified = append(st.unverified, k.pod.Name+": "+k.gate.Message)
		}
	}
	slices.Sort(st.waiting)
	slices.Sort(st.unverified)
	return st
}
