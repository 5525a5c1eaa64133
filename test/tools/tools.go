// Package tools finds the external programs the test suites run: the locally
// built binaries in bin/ and Debian's promtool. A suite that lacks one skips
// rather than fails, except promtool in CI, which .ci/run installs.
package tools

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BinDir is where the locally built binaries are: KUBEBUILDER_ASSETS (set by
// the Makefile) or the repository's bin/, seen from a package two levels
// below the root. The test is skipped, not failed, when any of binaries is
// missing there: they take a long build (hack/build-tools.sh).
func BinDir(t testing.TB, binaries ...string) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin")
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Skipf("no %s in %s (run hack/build-tools.sh): %v", b, dir, err)
		}
	}
	return dir
}

// Promtool is the path of promtool. Without it the test is skipped, or
// fails when CI is set: .ci/run installs it (Debian's prometheus package),
// so a CI run never skips the tests that need it.
func Promtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("promtool not found, and CI is set: .ci/run installs it (apt-get install prometheus); these tests must run in CI")
	}
	t.Skip("promtool not found: install Debian's prometheus package (apt-get install --no-install-recommends prometheus)")
	return ""
}
