package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// deleteExpectationTTL bounds how long a deletion is trusted without the
// cache confirming it; after that the pod is taken as the cache shows it
// (and deleted again if the plan still says so).
const deleteExpectationTTL = 2 * time.Minute

// deletions remembers the pods this operator deleted until its cache shows
// them terminating (the ReplicaSet controller's "expectations", for
// deletes). A pass that runs before the informer has delivered a deletion,
// because another pod's event triggered it, would otherwise see the pod
// unchanged and delete it again: a second write, log line and Event for
// nothing.
type deletions struct {
	mu   sync.Mutex
	uids map[types.UID]time.Time
}

// deleted records that the pod with uid was deleted at now.
func (d *deletions) deleted(uid types.UID, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.uids == nil {
		d.uids = map[types.UID]time.Time{}
	}
	for u, at := range d.uids {
		if now.Sub(at) >= deleteExpectationTTL {
			delete(d.uids, u)
		}
	}
	d.uids[uid] = now
}

// pending reports whether the pod with uid was deleted by this operator
// less than deleteExpectationTTL ago and the cache has not shown it yet;
// terminating says whether the cache shows it terminating, which settles
// the expectation.
func (d *deletions) pending(uid types.UID, terminating bool, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.uids[uid]
	if !ok {
		return false
	}
	if terminating || now.Sub(at) >= deleteExpectationTTL {
		delete(d.uids, uid)
		return false
	}
	return true
}
