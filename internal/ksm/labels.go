package ksm

import (
	"strconv"

	"k8s.io/apimachinery/pkg/labels"
)

// Label keys. The plan's labels are the users' contract: dashboards, scrape
// configs and the PodDisruptionBudget select on them.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelKSMScale  = "ksmscale.example.com"
	LabelShardID   = "shard-id"
	LabelTotal     = "total-shards"
	LabelSharded   = "sharding-enabled"
	// LabelRevision is the hash of everything that shapes a shard pod.
	LabelRevision = "ksmscale.example.com/revision"

	// AnnotationSpecHash on the unsharded Deployment is the hash of the spec
	// the operator built, whatever admission made of it.
	AnnotationSpecHash = "ksmscale.example.com/spec-hash"

	// ManagedBy is the value of LabelManagedBy on every object the operator
	// creates; its informers are scoped to it, so the Pod cache holds only
	// this operator's pods.
	ManagedBy = "ksm-scale-operator"
	appName   = "kube-state-metrics"
	component = "exporter"
)

// ManagedSelector selects every object this operator creates.
func ManagedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})
}

// CommonLabels are carried by every object of one KSMScale.
func CommonLabels(name string) map[string]string {
	return map[string]string{
		LabelName:      appName,
		LabelInstance:  name,
		LabelComponent: component,
		LabelManagedBy: ManagedBy,
		LabelKSMScale:  name,
	}
}

// UnshardedSelector selects the pods of a KSMScale's Deployment. It is the
// Deployment's (immutable) selector.
func UnshardedSelector(name string) map[string]string {
	return map[string]string{
		LabelName:     appName,
		LabelKSMScale: name,
		LabelSharded:  "false",
	}
}

// ShardSelector selects every shard pod of a KSMScale, of every generation
// and revision. The Service and the PodDisruptionBudget use it.
func ShardSelector(name string) map[string]string {
	return map[string]string{
		LabelName:     appName,
		LabelKSMScale: name,
		LabelSharded:  "true",
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }
