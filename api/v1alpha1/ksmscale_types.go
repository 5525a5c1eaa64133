package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultMonitorImage is the kube-state-metrics image used when spec.monitorImage is absent.
// It must equal the +kubebuilder:default on MonitorImage.
const DefaultMonitorImage = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"

// Defaults the API server fills in; the controller repeats them only for objects
// that were stored before a default existed (or typed clients in unit tests).
const (
	DefaultNamespace                     = "monitoring"
	DefaultMinAvailable                  = 1
	DefaultMinReadySeconds               = 30
	DefaultProgressDeadlineSeconds       = 600
	DefaultMaxSurge                      = 10
	DefaultScaleUpStabilizationSeconds   = 60
	DefaultScaleDownStabilizationSeconds = 300
)

// StrategyManual runs one individually managed Pod per shard.
const StrategyManual = "manual"

// KSMScaleSpec is what the user asks for: how kube-state-metrics should run and
// how it should follow the size of the cluster.
//
// +kubebuilder:validation:XValidation:rule="!has(self.sharding) || !has(self.sharding.shardCount) || !has(self.sharding.advanced) || !has(self.sharding.advanced.minAvailable) || self.sharding.advanced.minAvailable < self.sharding.shardCount",message="spec.sharding.advanced.minAvailable must be less than spec.sharding.shardCount: a PodDisruptionBudget that needs every shard blocks every node drain",fieldPath=".sharding.advanced.minAvailable"
type KSMScaleSpec struct {
	// NodesPerMonitor sizes kube-state-metrics to the cluster: without sharding,
	// the Deployment runs ceil(nodes / nodesPerMonitor) replicas (one when unset);
	// with sharding and no shardCount, the shard count is
	// ceil(nodes / nodesPerMonitor) clamped to 2..10.
	// +kubebuilder:validation:Minimum=1
	// +optional
	NodesPerMonitor int32 `json:"nodesPerMonitor,omitempty"`

	// MonitorImage is the kube-state-metrics container image.
	// +kubebuilder:default="registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.trim() == self",message="spec.monitorImage must not start or end with white space"
	// +optional
	MonitorImage string `json:"monitorImage,omitempty"`

	// Namespace is where the kube-state-metrics workload, Service,
	// PodDisruptionBudget and ServiceAccount are created. It must exist.
	// +kubebuilder:default=monitoring
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// Resources are the compute resources of each kube-state-metrics container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Sharding splits the objects of the cluster over several kube-state-metrics
	// instances. Absent or enabled: false runs a single Deployment.
	// +optional
	Sharding *ShardingConfig `json:"sharding,omitempty"`

	// ExtraArgs are appended to the kube-state-metrics command line, for example
	// --resources=pods,nodes or --metric-labels-allowlist=pods=[app].
	// The listen addresses and the shard flags belong to the operator.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.all(a, !a.matches('^--?(shard|total-shards|port|telemetry-port|host|telemetry-host|pod|pod-namespace)(=.*)?$'))",message="spec.extraArgs must not set --shard, --total-shards, --port, --telemetry-port, --host, --telemetry-host, --pod or --pod-namespace: the operator sets them"
	// +listType=atomic
	// +optional
	ExtraArgs []string `json:"extraArgs,omitempty"`

	// NodeSelector constrains the kube-state-metrics pods to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations let the kube-state-metrics pods run on tainted nodes.
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// PriorityClassName is the priority class of the kube-state-metrics pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// Paused stops the operator from changing the workload: no pod, Deployment,
	// Service, PodDisruptionBudget, ServiceAccount or binding is created,
	// updated or deleted while it is true. Status keeps being reported, with
	// Progressing=False reason Paused. Setting it back to false resumes.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// ProgressDeadlineSeconds is how long a change may stay in progress (a
	// rollout, a reshard, pods that do not become Ready) before Progressing
	// turns False with reason ProgressDeadlineExceeded and Stalled turns True,
	// as for a Deployment. The operator keeps trying; a new spec restarts the
	// clock.
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=1
	// +optional
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`
}

// ShardingConfig turns on manual sharding: one Pod per shard, each started with
// --shard=N --total-shards=M.
type ShardingConfig struct {
	// Enabled runs kube-state-metrics sharded.
	// +kubebuilder:default=false
	Enabled bool `json:"enabled"`

	// Strategy is how shards are run; only "manual" (one Pod per shard) exists.
	// +kubebuilder:validation:Enum=manual
	// +kubebuilder:default=manual
	// +optional
	Strategy string `json:"strategy,omitempty"`

	// ShardCount fixes the number of shards. When absent, it follows the
	// cluster: ceil(nodes / nodesPerMonitor) clamped to 2..10, or 3 without
	// nodesPerMonitor.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	// +optional
	ShardCount int32 `json:"shardCount,omitempty"`

	// Advanced tunes placement, disruption and rollout of the shards.
	// +kubebuilder:default={}
	// +optional
	Advanced *AdvancedShardingConfig `json:"advanced,omitempty"`
}

// AdvancedShardingConfig tunes placement, disruption budget and rollouts.
// The booleans are pointers so that an explicit false survives a typed client
// (a plain bool with omitempty would drop false and the default true would win).
type AdvancedShardingConfig struct {
	// SpreadAcrossNodes prefers to put each shard on a different node.
	// +kubebuilder:default=true
	// +optional
	SpreadAcrossNodes *bool `json:"spreadAcrossNodes,omitempty"`

	// EnablePDB creates a PodDisruptionBudget over the shards.
	// +kubebuilder:default=true
	// +optional
	EnablePDB *bool `json:"enablePDB,omitempty"`

	// MinAvailable is the PodDisruptionBudget's minAvailable, in shards.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	// +optional
	MinAvailable int32 `json:"minAvailable,omitempty"`

	// MinReadySeconds is how long a new shard pod must have been Ready before
	// the pod it replaces is deleted. With verified hand-overs (the default)
	// a pod is Ready once its metrics show its full object set, and this is
	// the time every Prometheus needs to scrape it at least once: keep it at
	// or above the longest scrape interval of the shards (30s in the shipped
	// ServiceMonitor). Without verification it must also cover kube-state-
	// metrics' first list, as its readiness probe passes before that ends.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	MinReadySeconds *int32 `json:"minReadySeconds,omitempty"`

	// MaxSurge is how many shards may be replaced at once during a rollout
	// (image, resources, arguments). A change of the shard count always
	// starts the whole new generation at once. The default replaces every
	// shard of up to 10 at once, as a reshard does: the rollout takes one
	// list and one settle time, and the shards' memory is doubled meanwhile.
	// Lower it to trade rollout time for that peak.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	// +optional
	MaxSurge *int32 `json:"maxSurge,omitempty"`

	// ScaleUpStabilizationSeconds is how long a higher shard count derived from
	// nodesPerMonitor must hold before the operator reshards up.
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +optional
	ScaleUpStabilizationSeconds *int32 `json:"scaleUpStabilizationSeconds,omitempty"`

	// ScaleDownStabilizationSeconds is how long a lower shard count derived
	// from nodesPerMonitor must hold before the operator reshards down.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +optional
	ScaleDownStabilizationSeconds *int32 `json:"scaleDownStabilizationSeconds,omitempty"`
}

// Phase summarises the state of a KSMScale in one word.
// +kubebuilder:validation:Enum=Ready;Scaling;Resharding;Degraded;Paused
type Phase string

const (
	// PhaseReady: every replica or shard of the desired workload is Ready.
	PhaseReady Phase = "Ready"
	// PhaseScaling: replicas or shard pods are being created or replaced.
	PhaseScaling Phase = "Scaling"
	// PhaseResharding: a new generation with another shard count, or the other
	// mode's workload, is being brought up beside the old one.
	PhaseResharding Phase = "Resharding"
	// PhaseDegraded: the operator cannot reach the desired state on its own.
	PhaseDegraded Phase = "Degraded"
	// PhasePaused: spec.paused is true; the workload is left as it is.
	PhasePaused Phase = "Paused"
)

// Mode is how kube-state-metrics currently runs.
// +kubebuilder:validation:Enum=Sharded;Unsharded
type Mode string

const (
	// ModeSharded: one Pod per shard.
	ModeSharded Mode = "Sharded"
	// ModeUnsharded: one Deployment.
	ModeUnsharded Mode = "Unsharded"
)

// Condition types of a KSMScale.
const (
	// ConditionAvailable is True when a complete set of kube-state-metrics
	// instances is Ready, so every object of the cluster is exported.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while the operator is moving the workload
	// towards the spec (creating, replacing, resharding).
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something stops the operator from
	// reaching the spec and needs attention.
	ConditionDegraded = "Degraded"

	// The conditions kstatus-based tools read (Flux, Argo CD health checks,
	// kubectl wait --for=condition=Ready), derived from the three above.

	// ConditionReady is True when every object is exported by the desired
	// workload and nothing is in progress or needs attention.
	ConditionReady = "Ready"
	// ConditionReconciling is True while a change is in progress (it
	// mirrors Progressing).
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the operator cannot make progress without
	// a person (it mirrors Degraded, including ProgressDeadlineExceeded).
	ConditionStalled = "Stalled"
	// ConditionMetricsVerified is True when every kube-state-metrics pod
	// showed in its own metrics the objects it must export before it took
	// over; False while pods wait for that, or when a pod took over after the
	// settle time without it (reason HandoverUnverified says which and why).
	// Absent when the operator runs with --verify-handover=false.
	ConditionMetricsVerified = "MetricsVerified"
)

// KSMScaleStatus is what the operator observed on its last pass.
type KSMScaleStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Mode is how kube-state-metrics runs now.
	// +optional
	Mode Mode `json:"mode,omitempty"`

	// CurrentReplicas is the number of Ready kube-state-metrics pods of the desired workload.
	// +optional
	CurrentReplicas int32 `json:"currentReplicas,omitempty"`

	// DesiredReplicas is the number of kube-state-metrics pods wanted
	// (Deployment replicas, or shards).
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas,omitempty"`

	// NodeCount is the number of nodes in the cluster.
	// +optional
	NodeCount int32 `json:"nodeCount,omitempty"`

	// Phase summarises the state in one word.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// LastUpdated is when the content of this status last changed.
	// +optional
	LastUpdated *metav1.Time `json:"lastUpdated,omitempty"`

	// ShardingStatus describes the shards when sharding is enabled.
	// +optional
	ShardingStatus *ShardingStatus `json:"shardingStatus,omitempty"`

	// Conditions are Available, Progressing and Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ShardingStatus describes the shards.
type ShardingStatus struct {
	// TotalShards is the desired shard count.
	TotalShards int32 `json:"totalShards"`

	// ActiveShards is how many of the desired shards have a Ready pod.
	ActiveShards int32 `json:"activeShards"`

	// ShardCountSource says which rule chose TotalShards:
	// ShardCount, NodesPerMonitor or Default.
	// +optional
	ShardCountSource string `json:"shardCountSource,omitempty"`

	// ShardCountMessage explains TotalShards, including a pending change held
	// back by a stabilization window.
	// +optional
	ShardCountMessage string `json:"shardCountMessage,omitempty"`

	// RecommendedShards is the shard count the cluster size calls for now,
	// which the operator adopts once it has held for the stabilization window.
	// +optional
	RecommendedShards int32 `json:"recommendedShards,omitempty"`

	// RecommendedSince is when RecommendedShards last changed.
	// +optional
	RecommendedSince *metav1.Time `json:"recommendedSince,omitempty"`

	// ShardHealth has one entry per desired shard.
	// +listType=map
	// +listMapKey=shardId
	// +optional
	ShardHealth []ShardHealth `json:"shardHealth,omitempty"`
}

// ShardHealth is the state of one shard.
type ShardHealth struct {
	// ShardID is the shard's ordinal, 0..totalShards-1.
	ShardID int32 `json:"shardId"`
	// PodName is the pod serving the shard (the newest Ready one), if any.
	// +optional
	PodName string `json:"podName"`
	// Ready is whether a pod of the shard is Ready.
	Ready bool `json:"ready"`
	// LastSeen is when Ready last changed.
	// +optional
	LastSeen metav1.Time `json:"lastSeen"`
}

// KSMScale runs kube-state-metrics for the cluster and keeps it sized to the
// cluster, sharded or not. It is cluster-scoped so that it can own the objects
// it creates in spec.namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ksms
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredReplicas`,description="Shards (sharded) or replicas (unsharded) wanted"
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.currentReplicas`,description="Shards with a Ready pod, or Ready replicas"
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`,description="Every object is exported by a complete generation"
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodeCount`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40",message="metadata.name must be a DNS label of at most 40 characters: it becomes part of the Service name kube-state-metrics-<name> and of label values"
type KSMScale struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec KSMScaleSpec `json:"spec,omitempty"`
	// +optional
	Status KSMScaleStatus `json:"status,omitempty"`
}

// KSMScaleList is a list of KSMScale.
//
// +kubebuilder:object:root=true
type KSMScaleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KSMScale `json:"items"`
}

func init() {
	SchemeBuilder.Register(&KSMScale{}, &KSMScaleList{})
}
