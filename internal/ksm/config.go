// Package ksm builds the Kubernetes objects that run kube-state-metrics for a
// KSMScale and holds the policies that size it. Everything here is a pure
// function of its arguments: no client, no clock, no environment, so the
// reconciler can compare what it wants with what it sees, and tests can pin
// every object down.
package ksm

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
)

// Config is a KSMScale's spec with every default resolved. The API server
// applies the same defaults; resolving them again here keeps the builders
// correct for objects written before a default existed and for typed objects
// in unit tests.
type Config struct {
	Name              string
	Namespace         string
	Image             string
	NodesPerMonitor   int32
	Resources         corev1.ResourceRequirements
	ExtraArgs         []string
	NodeSelector      map[string]string
	Tolerations       []corev1.Toleration
	PriorityClassName string

	Sharded bool
	// ShardCount is spec.sharding.shardCount; 0 means "derive it".
	ShardCount                    int32
	SpreadAcrossNodes             bool
	EnablePDB                     bool
	MinAvailable                  int32
	MinReadySeconds               int32
	MaxSurge                      int32
	ScaleUpStabilizationSeconds   int32
	ScaleDownStabilizationSeconds int32
	// Paused: change nothing, only report.
	Paused bool
	// ProgressDeadline is how long a change may stay in progress before it
	// is reported as stalled.
	ProgressDeadline time.Duration

	// VerifyHandover is the operator's --verify-handover, not a spec field:
	// every pod carries the readiness gate MetricsVerifiedGate, and the
	// operator marks it only once the pod has shown that it exports the
	// objects it is meant to (see internal/controller/verify.go).
	VerifyHandover bool
}

// Resolve reads a KSMScale into a Config.
func Resolve(k *v1alpha1.KSMScale) Config {
	s := k.Spec
	c := Config{
		Name:                          k.Name,
		Namespace:                     orDefault(s.Namespace, v1alpha1.DefaultNamespace),
		Image:                         orDefault(s.MonitorImage, v1alpha1.DefaultMonitorImage),
		NodesPerMonitor:               s.NodesPerMonitor,
		Resources:                     s.Resources,
		ExtraArgs:                     s.ExtraArgs,
		NodeSelector:                  s.NodeSelector,
		Tolerations:                   s.Tolerations,
		PriorityClassName:             s.PriorityClassName,
		SpreadAcrossNodes:             true,
		EnablePDB:                     true,
		MinAvailable:                  v1alpha1.DefaultMinAvailable,
		MinReadySeconds:               v1alpha1.DefaultMinReadySeconds,
		MaxSurge:                      v1alpha1.DefaultMaxSurge,
		ScaleUpStabilizationSeconds:   v1alpha1.DefaultScaleUpStabilizationSeconds,
		ScaleDownStabilizationSeconds: v1alpha1.DefaultScaleDownStabilizationSeconds,
		Paused:                        s.Paused,
		ProgressDeadline:              time.Duration(int32Or(s.ProgressDeadlineSeconds, v1alpha1.DefaultProgressDeadlineSeconds)) * time.Second,
	}
	if sh := s.Sharding; sh != nil {
		c.Sharded = sh.Enabled
		c.ShardCount = sh.ShardCount
		if a := sh.Advanced; a != nil {
			c.SpreadAcrossNodes = boolOr(a.SpreadAcrossNodes, true)
			c.EnablePDB = boolOr(a.EnablePDB, true)
			if a.MinAvailable > 0 {
				c.MinAvailable = a.MinAvailable
			}
			c.MinReadySeconds = int32Or(a.MinReadySeconds, c.MinReadySeconds)
			c.MaxSurge = int32Or(a.MaxSurge, c.MaxSurge)
			c.ScaleUpStabilizationSeconds = int32Or(a.ScaleUpStabilizationSeconds, c.ScaleUpStabilizationSeconds)
			c.ScaleDownStabilizationSeconds = int32Or(a.ScaleDownStabilizationSeconds, c.ScaleDownStabilizationSeconds)
		}
	}
	return c
}

// DeploymentName is the name of the unsharded Deployment, and of the Service
// and ServiceAccount binding of the instance.
func DeploymentName(name string) string { return "kube-state-metrics-" + name }

// ServiceName is the headless Service over the shard pods.
func ServiceName(name string) string { return "kube-state-metrics-" + name }

// PDBName is the PodDisruptionBudget over the shard pods.
func PDBName(name string) string { return fmt.Sprintf("kube-state-metrics-%s-pdb", name) }

// ClusterRoleBindingName binds the instance's ServiceAccount to the read-only
// kube-state-metrics ClusterRole. Each KSMScale (cluster-scoped, so its name
// is unique) owns its own binding, even when two share a namespace and its
// ServiceAccount, so deleting one never takes the other's permissions away.
func ClusterRoleBindingName(name string) string { return "kube-state-metrics-" + name }

// ServiceAccountName is the ServiceAccount kube-state-metrics runs as: one per
// KSMScale, created and owned by it. Never the namespace's plain
// "kube-state-metrics": that name is often taken (kube-prometheus ships
// monitoring/kube-state-metrics, the KSM chart creates one and deletes it on
// uninstall), and binding an account the operator did not create would hand
// cluster-wide read access to whoever controls it.
func ServiceAccountName(name string) string { return "kube-state-metrics-" + name }

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func int32Or(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
