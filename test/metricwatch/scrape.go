package metricwatch

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ksmscale/ksm-scale-operator/internal/promtext"
	"github.com/ksmscale/ksm-scale-operator/test/coverage"
)

// loopback is the only network this package dials.
var loopback = &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}

// isLoopback reports whether host is a literal IPv4 address in 127.0.0.0/8.
// Names (even "localhost") are refused: resolving them is where an address
// elsewhere could slip in.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && loopback.Contains(ip.To4())
}

// loopbackClient is the scrape client: no proxy (an environment's
// HTTP_PROXY must not reroute a scrape off the machine), and a dialer that
// refuses every address outside 127.0.0.0/8, whatever URL it is given.
func loopbackClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				if !isLoopback(host) {
					return nil, fmt.Errorf("metricwatch: refusing to dial %s: only 127.0.0.0/8 is allowed", addr)
				}
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 2,
		},
		// A redirect could only lead elsewhere; the dialer would refuse it
		// anyway, but say why.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return fmt.Errorf("metricwatch: not following redirects")
		},
	}
}

// scrapeResult is what one target exported: keys per kind, or why not.
type scrapeResult struct {
	keys map[Kind]map[string]struct{}
	err  error
}

// scrapeAll scrapes every target concurrently.
func (w *Watcher) scrapeAll(ctx context.Context, targets []Target) []scrapeResult {
	results := make([]scrapeResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { results[i] = w.scrape(ctx, t) })
	}
	wg.Wait()
	return results
}

// scrape reads one target's /metrics as a stream and keeps the object keys
// of the wanted families. A failure of any kind (refused, timed out, not
// 200, malformed, too large) is returned as the error and the target counts
// as exporting nothing: what was read before the failure is not trusted.
func (w *Watcher) scrape(ctx context.Context, t Target) scrapeResult {
	u, err := url.Parse(t.URL)
	if err != nil {
		return scrapeResult{err: fmt.Errorf("bad URL %q: %w", t.URL, err)}
	}
	if !isLoopback(u.Hostname()) {
		return scrapeResult{err: fmt.Errorf("refusing %s: only 127.0.0.0/8 addresses are scraped", t.URL)}
	}
	ctx, cancel := context.WithTimeout(ctx, w.opts.ScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return scrapeResult{err: err}
	}
	// KSM serves OpenMetrics only when asked; promtext reads 0.0.4.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := w.client.Do(req)
	if err != nil {
		return scrapeResult{err: err}
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return scrapeResult{err: fmt.Errorf("GET %s: %s", t.URL, resp.Status)}
	}
	keys := map[Kind]map[string]struct{}{}
	for _, k := range w.kinds {
		keys[k] = map[string]struct{}{}
	}
	_, err = promtext.Scan(resp.Body, w.opts.Limits, w.fams, func(s *promtext.Sample) error {
		k := familyKinds[s.Name]
		if key, ok := kindInfos[k].sampleKey(s); ok {
			keys[k][key] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return scrapeResult{err: fmt.Errorf("GET %s: %w", t.URL, err)}
	}
	return scrapeResult{keys: keys}
}

// PodTargets returns a Targets function that lists the pods matching
// selector in namespace (all namespaces if empty) at every tick and returns
// those serving — the rule of coverage.Serving: Ready, not being deleted,
// not in a terminal phase — at http://<status.podIP>:<port>/metrics.
//
// A pod whose IP is not in 127.0.0.0/8 is skipped, never dialled: these
// tests run on a machine whose traffic must stay on loopback. A skipped pod
// exports nothing, so its objects show up as missing, which is the honest
// answer when its metrics cannot be read. (On the local kwok cluster pod IPs
// are loopback addresses.)
func PodTargets(client kubernetes.Interface, namespace, selector string, port int) func(context.Context) ([]Target, error) {
	return func(ctx context.Context) ([]Target, error) {
		pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, err
		}
		var out []Target
		for i := range pods.Items {
			p := &pods.Items[i]
			if !coverage.Serving(p) || !isLoopback(p.Status.PodIP) {
				continue
			}
			out = append(out, Target{
				Name: p.Namespace + "/" + p.Name,
				URL:  "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)) + "/metrics",
			})
		}
		return out, nil
	}
}
