package controller

import (
	"testing"
	"time"
)

func TestDeletionsUntilTheCacheShowsThem(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var d deletions
	if d.pending("a", false, now) {
		t.Fatal("a pod never deleted is pending")
	}
	d.deleted("a", now)
	d.deleted("b", now)
	if !d.pending("a", false, now.Add(time.Second)) {
		t.Error("a deleted pod the cache still shows unchanged is not pending")
	}
	// The cache shows it terminating: settled, and forgotten.
	if d.pending("a", true, now.Add(2*time.Second)) || d.pending("a", false, now.Add(3*time.Second)) {
		t.Error("a deletion stayed pending after the cache showed it")
	}
	// Never confirmed: trusted only for the TTL.
	if !d.pending("b", false, now.Add(deleteExpectationTTL-time.Second)) {
		t.Error("b expired early")
	}
	if d.pending("b", false, now.Add(deleteExpectationTTL)) {
		t.Error("b still pending after the TTL")
	}
	// Old entries are dropped as new ones come.
	d.deleted("c", now)
	d.deleted("e", now.Add(deleteExpectationTTL))
	if _, ok := d.uids["c"]; ok || len(d.uids) != 1 {
		t.Errorf("expired entries kept: %v", d.uids)
	}
}
