package ksm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// revisionLength is how many hex digits of the template hash name a revision.
const revisionLength = 10

// Revision is a short hash of everything that shapes the shard pods of a
// generation of `total` shards: the whole pod template with the shard ordinal
// left out, so any change to the image, resources, arguments, scheduling
// fields, the shard count or the builder itself yields a new revision. Equal
// input gives an equal revision, and so equal pod names: a reconcile working
// from a stale cache can never create a second pod for a shard, its create
// meets AlreadyExists.
func Revision(c Config, total int32) string {
	return hashOf(shardPodTemplate(c, -1, total))
}

// hashOf is the short hash of an API object's JSON form.
func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// API types always marshal; failing here is a programming error.
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:revisionLength]
}

// ShardPodName is the name of shard `shard`'s pod of revision `rev`. The
// revision suffix lets a shard's old and new pod exist side by side during a
// replacement.
func ShardPodName(name string, shard int32, rev string) string {
	return fmt.Sprintf("kube-state-metrics-%s-shard-%d-%s", name, shard, rev)
}

// BuildShardPod is the pod serving shard `shard` of `total`.
func BuildShardPod(c Config, shard, total int32) *corev1.Pod {
	rev := Revision(c, total)
	tmpl := shardPodTemplate(c, shard, total)
	tmpl.Labels[LabelRevision] = rev
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ShardPodName(c.Name, shard, rev),
			Namespace: c.Namespace,
			Labels:    tmpl.Labels,
		},
		Spec: tmpl.Spec,
	}
}

// ShardLabels are the labels of a shard pod, less the revision.
func ShardLabels(name string, shard, total int32) map[string]string {
	return merge(CommonLabels(name), ShardSelector(name), map[string]string{
		LabelShardID: itoa(shard),
		LabelTotal:   itoa(total),
	})
}

// shardPodTemplate builds a shard pod's labels and spec. With shard < 0 it
// builds the shard-independent template the revision hashes.
func shardPodTemplate(c Config, shard, total int32) corev1.PodTemplateSpec {
	var aff *corev1.Affinity
	if c.SpreadAcrossNodes {
		aff = spreadAffinity(c.Name)
	}
	args := ShardArgs(c, shard, total)
	lbls := ShardLabels(c.Name, shard, total)
	if shard < 0 {
		delete(lbls, LabelShardID)
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: lbls},
		Spec:       podSpec(c, args, aff),
	}
}

// spreadAffinity prefers nodes that hold no other shard of the same KSMScale,
// so that losing one node takes down as few shards as possible.
func spreadAffinity(name string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
					LabelKSMScale: name,
					LabelSharded:  "true",
				}},
				TopologyKey: corev1.LabelHostname,
			},
		}},
	}}
}
