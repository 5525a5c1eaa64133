package promtext_test

import (
	"fmt"
	"strings"

	"github.com/ksmscale/ksm-scale-operator/internal/promtext"
)

const body = `# HELP kube_pod_info [STABLE] Information about pod.
# TYPE kube_pod_info gauge
kube_pod_info{namespace="default",pod="web-0",uid="6f1c"} 1
kube_pod_info{namespace="default",pod="web-1",uid="9a2e"} 1
kube_node_info{node="node-1"} 1
`

// Count is the common case: how many series a shard exports per family.
// In the operator, r is the body of an HTTP response.
func ExampleCount() {
	counts, err := promtext.Count(strings.NewReader(body), promtext.Limits{},
		map[string]bool{"kube_pod_info": true, "kube_secret_info": true})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(counts["kube_pod_info"], counts["kube_secret_info"])
	// Output: 2 0
}

// Scan reads labels only where needed; the Sample is valid only inside the
// callback, so keep strings (Label copies) rather than the Sample.
func ExampleScan() {
	uids := map[string]bool{}
	st, err := promtext.Scan(strings.NewReader(body), promtext.Limits{MaxLineBytes: 16 << 10},
		map[string]bool{"kube_pod_info": true}, func(s *promtext.Sample) error {
			if uid, ok := s.Label("uid"); ok {
				uids[uid] = true
			}
			return nil
		})
	fmt.Println(len(uids), st.Lines, st.Samples, st.Matched, err)
	// Output: 2 5 3 2 <nil>
}
