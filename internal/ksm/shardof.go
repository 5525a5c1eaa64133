package ksm

import (
	"hash/fnv"

	"k8s.io/apimachinery/pkg/types"
)

// ShardOf predicts which of `total` shards exports the object with this UID,
// with the algorithm kube-state-metrics itself uses (pkg/sharding): the
// Lamping–Veach jump consistent hash of the FNV-1a 64-bit hash of the UID.
// (KSM's README speaks of md5 and modulo; its code does this.) The e2e suite
// checks it against real KSM processes. The operator uses it to know exactly
// how many nodes and namespaces a shard must export before it hands over.
func ShardOf(uid types.UID, total int32) int32 {
	if total <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	return jumpHash(h.Sum64(), total)
}

// jumpHash is "A Fast, Minimal Memory, Consistent Hash Algorithm" (Lamping and
// Veach, 2014): it maps a key to one of n buckets so that growing n to n+1
// moves only 1/(n+1) of the keys.
func jumpHash(key uint64, n int32) int32 {
	b, j := int64(-1), int64(0)
	for j < int64(n) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int32(b)
}
