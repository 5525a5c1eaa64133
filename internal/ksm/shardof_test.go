package ksm

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestJumpHashEdgeValues(t *testing.T) {
	// Edge values that follow from the algorithm; the e2e suite checks the
	// whole function against real kube-state-metrics processes.
	cases := []struct {
		key  uint64
		n    int32
		want int32
	}{
		// Key 0 always lands in bucket 0, any key in the only bucket.
		{0, 1, 0}, {0, 10, 0}, {1, 1, 0}, {0xdeadbeef, 1, 0},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d_%d", tc.key, tc.n), func(t *testing.T) {
			if got := jumpHash(tc.key, tc.n); got != tc.want {
				t.Errorf("jumpHash(%d, %d) = %d, want %d", tc.key, tc.n, got, tc.want)
			}
		})
	}
}

func TestShardOfIsConsistentAndBalanced(t *testing.T) {
	const objects = 30000
	counts := make([]int, 7)
	moved := 0
	for i := 0; i < objects; i++ {
		uid := types.UID(fmt.Sprintf("9a1f2c3e-0000-4000-8000-%012d", i))
		s6, s7 := ShardOf(uid, 6), ShardOf(uid, 7)
		if s7 < 0 || s7 >= 7 || s6 < 0 || s6 >= 6 {
			t.Fatalf("shard out of range: %d of 6, %d of 7", s6, s7)
		}
		counts[s7]++
		if s6 != s7 {
			moved++
			// Consistent hashing: growing 6 -> 7 moves keys only to the new shard.
			if s7 != 6 {
				t.Fatalf("uid %s moved from %d to %d, not to the new shard 6", uid, s6, s7)
			}
		}
	}
	for s, c := range counts {
		if c < objects/7*9/10 || c > objects/7*11/10 {
			t.Errorf("shard %d holds %d of %d objects, more than 10%% off an even split", s, c, objects)
		}
	}
	if lo, hi := objects/7*9/10, objects/7*11/10; moved < lo || moved > hi {
		t.Errorf("growing to 7 shards moved %d objects, want about %d", moved, objects/7)
	}
	if ShardOf("x", 1) != 0 || ShardOf("x", 0) != 0 {
		t.Errorf("one shard must take everything")
	}
}
