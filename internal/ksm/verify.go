package ksm

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// Counts is how many series a kube-state-metrics process exports per metric
// family, for the families in IdentityFamilies.
type Counts map[string]int

// IdentityFamilies are the families the hand-over compares: for each kind
// kube-state-metrics exports by default, one family with exactly one series
// per object, present under that name in every v2 release. kube-state-metrics
// fills a kind's store when that kind's list completes (MetricsStore.Replace:
// clear, then add every object), so a kind not listed yet shows as 0, and
// while the Replace runs a scrape sees a growing subset: counts must agree
// within Tolerance of the reference, not merely be non-zero.
//
// A release that drops or renames one of them would make its pods fall back
// to the settle time (with a Warning), never hand over early.
var IdentityFamilies = map[string]bool{
	FamilyPods:                           true,
	FamilyNodes:                          true,
	FamilyNamespaces:                     true,
	"kube_configmap_info":                true,
	"kube_secret_info":                   true,
	"kube_service_info":                  true,
	"kube_endpoint_info":                 true,
	"kube_deployment_created":            true,
	"kube_replicaset_created":            true,
	"kube_statefulset_created":           true,
	"kube_daemonset_created":             true,
	"kube_job_info":                      true,
	"kube_cronjob_info":                  true,
	"kube_persistentvolume_info":         true,
	"kube_persistentvolumeclaim_info":    true,
	"kube_poddisruptionbudget_created":   true,
	"kube_horizontalpodautoscaler_info":  true,
	"kube_ingress_info":                  true,
	"kube_storageclass_info":             true,
	"kube_resourcequota_created":         true,
	"kube_limitrange_created":            true,
	"kube_networkpolicy_created":         true,
	"kube_replicationcontroller_created": true,
	"kube_lease_owner":                   true,
}

// The families whose expected count the operator knows exactly, from its own
// Node and Namespace caches and ShardOf.
const (
	FamilyPods       = "kube_pod_info"
	FamilyNodes      = "kube_node_info"
	FamilyNamespaces = "kube_namespace_created"
)

// Add adds o's counts to c.
func (c Counts) Add(o Counts) {
	for f, n := range o {
		c[f] += n
	}
}

// String lists the counts in a stable order, for messages.
func (c Counts) String() string {
	fams := make([]string, 0, len(c))
	for f := range c {
		fams = append(fams, f)
	}
	slices.Sort(fams)
	parts := make([]string, 0, len(fams))
	for _, f := range fams {
		parts = append(parts, fmt.Sprintf("%s=%d", f, c[f]))
	}
	return strings.Join(parts, " ")
}

// Tolerance is how far two counts of the same objects, taken a moment apart
// from two processes, may differ because objects were created or deleted in
// between: 2 plus 1 %. It never excuses a kind that is missing altogether:
// see CompareCounts.
func Tolerance(want int) int { return 2 + want/100 }

// CompareCounts reports why got does not export what want does, or "" when
// it does: every family want has must be in got (a kind not listed yet shows
// as 0), within Tolerance of want's count. Families only got has are not held
// against it (a newer kube-state-metrics may export more).
func CompareCounts(got, want Counts) string {
	fams := make([]string, 0, len(want))
	for f := range want {
		fams = append(fams, f)
	}
	slices.Sort(fams)
	for _, f := range fams {
		w, g := want[f], got[f]
		switch {
		case w > 0 && g == 0:
			return fmt.Sprintf("exports no %s series, expected %d", f, w)
		case g-w > Tolerance(w) || w-g > Tolerance(w):
			return fmt.Sprintf("exports %d %s series, expected %d", g, f, w)
		}
	}
	return ""
}

// ShareOf is how many of the objects with these UIDs shard `shard` of `total`
// exports (all of them for total <= 1).
func ShareOf(uids []types.UID, shard, total int32) int {
	if total <= 1 {
		return len(uids)
	}
	n := 0
	for _, uid := range uids {
		if ShardOf(uid, total) == shard {
			n++
		}
	}
	return n
}

// ObjectScope is the part of a kube-state-metrics command line that narrows
// what it exports (some kinds, namespaces or metrics only), in a canonical
// form; "" when nothing is narrowed. Two pods export comparable sets only
// when their scopes are equal; with a scope, the operator cannot know from
// its Node and Namespace caches what a pod must export.
func ObjectScope(args []string) string {
	var scope []string
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		switch name {
		case "--resources", "--namespaces", "--namespaces-denylist", "--metric-allowlist", "--metric-denylist",
			"--custom-resource-state-only", "--node", "--pod", "--pod-namespace":
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
				i++
				value = args[i]
			}
			scope = append(scope, name+"="+value)
		}
	}
	slices.Sort(scope)
	return strings.Join(scope, " ")
}

// RestrictsObjects reports whether the arguments narrow what kube-state-metrics
// exports (see ObjectScope).
func RestrictsObjects(args []string) bool { return ObjectScope(args) != "" }
