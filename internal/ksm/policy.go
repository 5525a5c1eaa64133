package ksm

// UnshardedReplicas is the replica count of the unsharded Deployment:
// ceil(nodes / nodesPerMonitor), at least one; one when nodesPerMonitor is
// unset.
func UnshardedReplicas(nodes, nodesPerMonitor int32) int32 {
	if nodesPerMonitor <= 0 || nodes <= 0 {
		return 1
	}
	return max(ceilDiv(nodes, nodesPerMonitor), 1)
}

func ceilDiv(a, b int32) int32 { return (a + b - 1) / b }
