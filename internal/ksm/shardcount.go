package ksm

import (
	"fmt"
	"time"
)

// Sources of the shard count, reported in status.shardingStatus.shardCountSource.
const (
	SourceShardCount      = "ShardCount"
	SourceNodesPerMonitor = "NodesPerMonitor"
	SourceDefault         = "Default"
)

// ShardCountInput is what the shard-count policy looks at.
type ShardCountInput struct {
	Config Config
	Nodes  int32
	// Current is the shard count in force (status.shardingStatus.totalShards),
	// 0 when there is none yet.
	Current int32
	// PendingRecommendation and PendingSince are the recommendation held back
	// by a stabilization window on the previous pass (status fields
	// recommendedShards and recommendedSince).
	PendingRecommendation int32
	PendingSince          time.Time
	// SpecChanged is true when the spec changed since the status was written:
	// a user's own change takes effect at once, only cluster growth is damped.
	SpecChanged bool
	Now         time.Time
}

// ShardCountDecision is the shard count to run and why.
type ShardCountDecision struct {
	Total   int32
	Source  string
	Message string
	// Recommended and Since describe a pending change (zero when none).
	Recommended int32
	Since       time.Time
	// RequeueAfter is when the pending change's window ends.
	RequeueAfter time.Duration
}

// RecommendedShards is ceil(nodes / nodesPerMonitor) clamped to 2..10.
func RecommendedShards(nodes, nodesPerMonitor int32) int32 {
	n := int32(1)
	if nodesPerMonitor > 0 && nodes > 0 {
		n = ceilDiv(nodes, nodesPerMonitor)
	}
	return min(max(n, MinShards), MaxShards)
}

// Bounds of an automatically derived shard count (the CRD's bounds of shardCount).
const (
	MinShards     = 2
	MaxShards     = 10
	DefaultShards = 3
)

// DecideShardCount applies the shard-count policy: an explicit shardCount
// wins; else nodesPerMonitor derives it, damped so that a node count hovering
// at a boundary never reshards back and forth; else 3.
//
// Damping works like the HorizontalPodAutoscaler's stabilization window: a
// change must hold for the window (shorter for growing than for shrinking)
// before it is adopted. While it holds, the pending recommendation follows the
// most conservative value seen (the largest when shrinking, the smallest when
// growing), so a dip that does not last never shrinks the shards.
func DecideShardCount(in ShardCountInput) ShardCountDecision {
	c := in.Config
	if c.ShardCount > 0 {
		return ShardCountDecision{Total: c.ShardCount, Source: SourceShardCount,
			Message: fmt.Sprintf("spec.sharding.shardCount is %d", c.ShardCount)}
	}
	if c.NodesPerMonitor <= 0 {
		return ShardCountDecision{Total: DefaultShards, Source: SourceDefault,
			Message: fmt.Sprintf("neither shardCount nor nodesPerMonitor is set; running the default %d shards", DefaultShards)}
	}
	rec := RecommendedShards(in.Nodes, c.NodesPerMonitor)
	why := fmt.Sprintf("ceil(%d nodes / %d nodesPerMonitor) clamped to %d..%d is %d", in.Nodes, c.NodesPerMonitor, MinShards, MaxShards, rec)
	d := ShardCountDecision{Source: SourceNodesPerMonitor}
	if in.Current == 0 || in.SpecChanged || rec == in.Current {
		d.Total, d.Message = rec, why
		return d
	}
	growing := rec > in.Current
	window := time.Duration(c.ScaleDownStabilizationSeconds) * time.Second
	if growing {
		window = time.Duration(c.ScaleUpStabilizationSeconds) * time.Second
	}
	pending, since := rec, in.Now
	if p := in.PendingRecommendation; p != 0 && !in.PendingSince.IsZero() && (p > in.Current) == growing && p != in.Current {
		since = in.PendingSince
		if growing {
			pending = min(p, rec)
		} else {
			pending = max(p, rec)
		}
	}
	if left := since.Add(window).Sub(in.Now); left > 0 {
		d.Total, d.Recommended, d.Since, d.RequeueAfter = in.Current, pending, since, left
		d.Message = fmt.Sprintf("%s; keeping %d shards until the change has held for %s (since %s)",
			why, in.Current, window, since.UTC().Format(time.RFC3339))
		return d
	}
	d.Total = pending
	d.Message = fmt.Sprintf("%s; %d shards held for the %s stabilization window", why, pending, window)
	return d
}
