package localcluster

import (
	"fmt"
	"testing"
)

// StartT starts a cluster for a test, failing it if the cluster cannot
// start, and stops every process of the cluster by its PID when the test
// ends, also when it fails.
func StartT(t testing.TB, o Options) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop the cluster: %v", err)
		}
	})
	return c
}

// NodeNames are the names of the kwok nodes Start and AddNodes added to this
// cluster, in order; nodes deleted since are still listed.
func (c *Cluster) NodeNames() []string {
	c.mu.Lock()
	n := c.nextNode
	c.mu.Unlock()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf(NodeNameFormat, i)
	}
	return names
}
