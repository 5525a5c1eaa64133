package ksm

import (
	"time"

	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Ports of kube-state-metrics, fixed by the operator: the Service, the probes
// and the ServiceMonitor rely on them.
const (
	MetricsPort       = 8080
	TelemetryPort     = 8081
	MetricsPortName   = "http-metrics"
	TelemetryPortName = "telemetry"
	ContainerName     = "kube-state-metrics"
	// nobody: the user the KSM project's own manifests run as.
	runAsUser = 65534
)

// DiscoveryAllowance is how long a new kube-state-metrics pod may take to
// become a scrape target of Prometheus: its service discovery hands changes
// on at most every 5 s, and its scrape manager applies them at most every
// 5 s more. A pod's hand-over waits, beside the settle time counted from
// Ready (the scrape interval, so that a complete scrape exists), until its
// containers have been ready this long plus the settle time, so that a pod
// verified within seconds of starting is not handed the shard before
// Prometheus scrapes it at all. The e2e suite's Prometheus saw half the
// objects of a 5->2 reshard absent for two scrapes without it.
const DiscoveryAllowance = 10 * time.Second

// MetricsVerifiedGate is the readiness gate of every kube-state-metrics pod
// when hand-overs are verified. kube-state-metrics reports ready before its
// first list has finished (its /readyz does not wait for the informers), so
// Ready alone would let the Service, the PodDisruptionBudget and the
// operator's own replacement rules count a pod that still serves an empty or
// partial set. The operator sets this condition once the pod's own metrics
// show the objects it must export; only then does kubelet report it Ready.
const MetricsVerifiedGate corev1.PodConditionType = "ksmscale.example.com/metrics-verified"

// baseArgs are the listen flags every kube-state-metrics container gets.
func baseArgs() []string {
	return []string{
		"--host=0.0.0.0",
		fmt.Sprintf("--port=%d", MetricsPort),
		"--telemetry-host=0.0.0.0",
		fmt.Sprintf("--telemetry-port=%d", TelemetryPort),
	}
}

// UnshardedArgs is the command line of an unsharded instance.
func UnshardedArgs(c Config) []string {
	return append(baseArgs(), c.ExtraArgs...)
}

// ShardArgs is the command line of shard `shard` of `total`.
func ShardArgs(c Config, shard, total int32) []string {
	args := append(baseArgs(), fmt.Sprintf("--shard=%d", shard), fmt.Sprintf("--total-shards=%d", total))
	return append(args, c.ExtraArgs...)
}

// podSpec is the pod spec shared by the Deployment and the shard pods. It
// passes the Pod Security Standard "restricted" and mirrors the security
// settings of the KSM project's own manifests.
func podSpec(c Config, args []string, affinity *corev1.Affinity) corev1.PodSpec {
	var gates []corev1.PodReadinessGate
	if c.VerifyHandover {
		gates = []corev1.PodReadinessGate{{ConditionType: MetricsVerifiedGate}}
	}
	return corev1.PodSpec{
		ReadinessGates:               gates,
		ServiceAccountName:           ServiceAccountName(c.Name),
		AutomountServiceAccountToken: ptr.To(true),
		NodeSelector:                 c.NodeSelector,
		Tolerations:                  c.Tolerations,
		PriorityClassName:            c.PriorityClassName,
		Affinity:                     affinity,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](runAsUser),
			RunAsGroup:     ptr.To[int64](runAsUser),
			FSGroup:        ptr.To[int64](runAsUser),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:  ContainerName,
			Image: c.Image,
			Args:  args,
			Ports: []corev1.ContainerPort{
				{Name: MetricsPortName, ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
				{Name: TelemetryPortName, ContainerPort: TelemetryPort, Protocol: corev1.ProtocolTCP},
			},
			Resources: c.Resources,
			LivenessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/livez", Port: intstr.FromString(MetricsPortName), Scheme: corev1.URISchemeHTTP,
				}},
				InitialDelaySeconds: 5,
				TimeoutSeconds:      5,
				PeriodSeconds:       10,
				FailureThreshold:    3,
			},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/readyz", Port: intstr.FromString(TelemetryPortName), Scheme: corev1.URISchemeHTTP,
				}},
				InitialDelaySeconds: 5,
				TimeoutSeconds:      5,
				PeriodSeconds:       10,
				FailureThreshold:    3,
			},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				RunAsNonRoot:             ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}},
	}
}
