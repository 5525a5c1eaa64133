// Package wait holds the polling helper the test suites share: on a small,
// shared machine tests wait for a condition with a generous deadline instead
// of sleeping a fixed time.
package wait

import (
	"testing"
	"time"
)

// Eventually calls cond every interval until it returns nil, and fails the
// test with cond's last error once timeout has passed.
func Eventually(t testing.TB, interval, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}
