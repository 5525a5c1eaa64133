package ksm

import (
	"fmt"
	"testing"
	"time"
)

func TestRecommendedShards(t *testing.T) {
	tests := []struct {
		nodes, perMonitor, want int32
	}{
		{nodes: 0, perMonitor: 30, want: 2},
		{nodes: 1, perMonitor: 30, want: 2},
		{nodes: 30, perMonitor: 30, want: 2},
		{nodes: 60, perMonitor: 30, want: 2},
		{nodes: 61, perMonitor: 30, want: 3},
		{nodes: 90, perMonitor: 30, want: 3},
		{nodes: 91, perMonitor: 30, want: 4},
		{nodes: 150, perMonitor: 30, want: 5},
		{nodes: 151, perMonitor: 30, want: 6},
		{nodes: 300, perMonitor: 30, want: 10},
		{nodes: 301, perMonitor: 30, want: 10},
		{nodes: 1000, perMonitor: 30, want: 10},
		{nodes: 7, perMonitor: 1, want: 7},
		{nodes: 5, perMonitor: 2, want: 3},
		{nodes: 100, perMonitor: 0, want: 2},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d nodes per %d", tc.nodes, tc.perMonitor), func(t *testing.T) {
			if got := RecommendedShards(tc.nodes, tc.perMonitor); got != tc.want {
				t.Errorf("RecommendedShards(%d, %d) = %d, want %d", tc.nodes, tc.perMonitor, got, tc.want)
			}
		})
	}
}

// autoConfig derives the shard count from 30 nodes per monitor, with a one
// minute window for growing and five for shrinking.
func autoConfig() Config {
	return Config{Name: "prod", Sharded: true, NodesPerMonitor: 30,
		ScaleUpStabilizationSeconds: 60, ScaleDownStabilizationSeconds: 300}
}

func TestDecideShardCount(t *testing.T) {
	withShardCount := autoConfig()
	withShardCount.ShardCount = 7
	noNPM := autoConfig()
	noNPM.NodesPerMonitor = 0
	noWindow := autoConfig()
	noWindow.ScaleUpStabilizationSeconds, noWindow.ScaleDownStabilizationSeconds = 0, 0

	tests := []struct {
		name string
		in   ShardCountInput
		// want: Total, Source, Recommended, Since, RequeueAfter (Message is
		// checked only for being set).
		want ShardCountDecision
	}{
		{
			name: "explicit shardCount wins over nodesPerMonitor and the current count",
			in:   ShardCountInput{Config: withShardCount, Nodes: 1000, Current: 3, Now: now},
			want: ShardCountDecision{Total: 7, Source: SourceShardCount},
		},
		{
			name: "explicit shardCount is not damped",
			in:   ShardCountInput{Config: withShardCount, Nodes: 10, Current: 2, PendingRecommendation: 3, PendingSince: now, Now: now},
			want: ShardCountDecision{Total: 7, Source: SourceShardCount},
		},
		{
			name: "default 3 without nodesPerMonitor",
			in:   ShardCountInput{Config: noNPM, Nodes: 1000, Current: 5, Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceDefault},
		},
		{
			name: "first decision is immediate",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 0, Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "clamped up to 2: one node",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 1, Now: now},
			want: ShardCountDecision{Total: 2, Source: SourceNodesPerMonitor},
		},
		{
			name: "clamped down to 10: 1000 nodes",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 1000, Now: now},
			want: ShardCountDecision{Total: 10, Source: SourceNodesPerMonitor},
		},
		{
			name: "recommendation equals the current count",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 5, PendingRecommendation: 4, PendingSince: now.Add(-time.Hour), Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "recommendation equals the current count: nothing pending",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 5, Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "back at the current count: a pending shrink is dropped",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 5, PendingRecommendation: 4, PendingSince: now.Add(-100 * time.Second), Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "spec change is immediate, growing",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 180, Current: 3, SpecChanged: true, Now: now},
			want: ShardCountDecision{Total: 6, Source: SourceNodesPerMonitor},
		},
		{
			name: "spec change is immediate, shrinking",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 30, Current: 8, SpecChanged: true, PendingRecommendation: 7, PendingSince: now, Now: now},
			want: ShardCountDecision{Total: 2, Source: SourceNodesPerMonitor},
		},
		{
			name: "growth starts the scale-up window",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 3, Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceNodesPerMonitor, Recommended: 5, Since: now, RequeueAfter: 60 * time.Second},
		},
		{
			name: "growth inside the window keeps the current count",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 3, PendingRecommendation: 5, PendingSince: now.Add(-20 * time.Second), Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceNodesPerMonitor, Recommended: 5, Since: now.Add(-20 * time.Second), RequeueAfter: 40 * time.Second},
		},
		{
			name: "growth adopted when the window ends",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 3, PendingRecommendation: 5, PendingSince: now.Add(-60 * time.Second), Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "growing keeps the smallest recommendation seen",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 180, Current: 3, PendingRecommendation: 4, PendingSince: now.Add(-30 * time.Second), Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceNodesPerMonitor, Recommended: 4, Since: now.Add(-30 * time.Second), RequeueAfter: 30 * time.Second},
		},
		{
			name: "growing: a smaller recommendation replaces the pending one",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 120, Current: 3, PendingRecommendation: 6, PendingSince: now.Add(-30 * time.Second), Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceNodesPerMonitor, Recommended: 4, Since: now.Add(-30 * time.Second), RequeueAfter: 30 * time.Second},
		},
		{
			name: "growing adopts the smallest recommendation seen",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 180, Current: 3, PendingRecommendation: 4, PendingSince: now.Add(-61 * time.Second), Now: now},
			want: ShardCountDecision{Total: 4, Source: SourceNodesPerMonitor},
		},
		{
			name: "shrink starts the scale-down window",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 120, Current: 6, Now: now},
			want: ShardCountDecision{Total: 6, Source: SourceNodesPerMonitor, Recommended: 4, Since: now, RequeueAfter: 300 * time.Second},
		},
		{
			name: "shrink is not adopted after the scale-up window",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 120, Current: 6, PendingRecommendation: 4, PendingSince: now.Add(-61 * time.Second), Now: now},
			want: ShardCountDecision{Total: 6, Source: SourceNodesPerMonitor, Recommended: 4, Since: now.Add(-61 * time.Second), RequeueAfter: 239 * time.Second},
		},
		{
			name: "shrinking keeps the largest recommendation seen",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 120, Current: 8, PendingRecommendation: 5, PendingSince: now.Add(-100 * time.Second), Now: now},
			want: ShardCountDecision{Total: 8, Source: SourceNodesPerMonitor, Recommended: 5, Since: now.Add(-100 * time.Second), RequeueAfter: 200 * time.Second},
		},
		{
			name: "shrinking: a larger recommendation replaces the pending one",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 180, Current: 8, PendingRecommendation: 5, PendingSince: now.Add(-100 * time.Second), Now: now},
			want: ShardCountDecision{Total: 8, Source: SourceNodesPerMonitor, Recommended: 6, Since: now.Add(-100 * time.Second), RequeueAfter: 200 * time.Second},
		},
		{
			name: "shrinking adopts the largest recommendation seen",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 60, Current: 8, PendingRecommendation: 5, PendingSince: now.Add(-300 * time.Second), Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor},
		},
		{
			name: "direction flips: the window restarts",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 180, Current: 5, PendingRecommendation: 4, PendingSince: now.Add(-299 * time.Second), Now: now},
			want: ShardCountDecision{Total: 5, Source: SourceNodesPerMonitor, Recommended: 6, Since: now, RequeueAfter: 60 * time.Second},
		},
		{
			name: "pending recommendation without a time: the window starts now",
			in:   ShardCountInput{Config: autoConfig(), Nodes: 150, Current: 3, PendingRecommendation: 5, Now: now},
			want: ShardCountDecision{Total: 3, Source: SourceNodesPerMonitor, Recommended: 5, Since: now, RequeueAfter: 60 * time.Second},
		},
		{
			name: "zero windows adopt at once",
			in:   ShardCountInput{Config: noWindow, Nodes: 120, Current: 6, Now: now},
			want: ShardCountDecision{Total: 4, Source: SourceNodesPerMonitor},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideShardCount(tc.in)
			if got.Message == "" {
				t.Errorf("Message is empty")
			}
			got.Message = ""
			if got.Total != tc.want.Total || got.Source != tc.want.Source || got.Recommended != tc.want.Recommended ||
				!got.Since.Equal(tc.want.Since) || got.RequeueAfter != tc.want.RequeueAfter {
				t.Errorf("DecideShardCount() =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

// step feeds a decision back as the next pass's status, as the reconciler
// does (status.shardingStatus.totalShards, recommendedShards, recommendedSince).
func step(c Config, current int32, prev ShardCountDecision, nodes int32, at time.Time) ShardCountDecision {
	return DecideShardCount(ShardCountInput{
		Config: c, Nodes: nodes, Current: current,
		PendingRecommendation: prev.Recommended, PendingSince: prev.Since, Now: at,
	})
}

func TestDecideShardCountHovering(t *testing.T) {
	tests := []struct {
		name string
		// nodes observed every 30s, starting at now with current shards.
		current int32
		nodes   func(i int) int32
		passes  int
		// wantChangeAt is the pass at which Total first differs from
		// current, -1 for never; wantTotal is the value then.
		wantChangeAt int
		wantTotal    int32
	}{
		{
			name:    "4,5,4,5 around current 5 for 10 minutes never reshards",
			current: 5,
			nodes: func(i int) int32 {
				if i%2 == 0 {
					return 120 // 4 shards
				}
				return 121 // 5 shards
			},
			passes:       21,
			wantChangeAt: -1,
		},
		{
			name:    "4,4,5 around current 5: dips shorter than the window never reshard",
			current: 5,
			nodes: func(i int) int32 {
				if i%3 == 2 {
					return 150 // 5 shards
				}
				return 100 // 4 shards
			},
			passes:       21,
			wantChangeAt: -1,
		},
		{
			name:    "6,5,6,5 around current 5 never reshards up",
			current: 5,
			nodes: func(i int) int32 {
				if i%2 == 0 {
					return 151 // 6 shards
				}
				return 150
			},
			passes:       21,
			wantChangeAt: -1,
		},
		{
			name:         "a lasting drop to 4 is adopted after the 5-minute window",
			current:      5,
			nodes:        func(int) int32 { return 120 },
			passes:       21,
			wantChangeAt: 10, // 10 * 30s = 300s
			wantTotal:    4,
		},
		{
			name:    "a drop to 3 then 4 shrinks to 4, the largest seen",
			current: 5,
			nodes: func(i int) int32 {
				if i < 4 {
					return 90 // 3 shards
				}
				return 100 // 4 shards
			},
			passes:       21,
			wantChangeAt: 10,
			wantTotal:    4,
		},
		{
			name:         "a lasting rise to 6 is adopted after the 1-minute window",
			current:      5,
			nodes:        func(int) int32 { return 170 },
			passes:       5,
			wantChangeAt: 2,
			wantTotal:    6,
		},
		{
			name:    "a rise to 8 then 7 grows to 7, the smallest seen",
			current: 5,
			nodes: func(i int) int32 {
				if i == 0 {
					return 240 // 8 shards
				}
				return 210 // 7 shards
			},
			passes:       5,
			wantChangeAt: 2,
			wantTotal:    7,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := autoConfig()
			current := tc.current
			var prev ShardCountDecision
			changedAt := -1
			for i := 0; i < tc.passes; i++ {
				at := now.Add(time.Duration(i) * 30 * time.Second)
				d := step(c, current, prev, tc.nodes(i), at)
				if d.Total != current && changedAt < 0 {
					changedAt = i
					if d.Total != tc.wantTotal {
						t.Errorf("pass %d: Total changed to %d, want %d", i, d.Total, tc.wantTotal)
					}
				}
				if changedAt < 0 && d.RequeueAfter < 0 {
					t.Errorf("pass %d: negative RequeueAfter %s", i, d.RequeueAfter)
				}
				current, prev = d.Total, d
			}
			if changedAt != tc.wantChangeAt {
				t.Errorf("Total first changed at pass %d, want %d", changedAt, tc.wantChangeAt)
			}
		})
	}
}
