package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestVersionFlag builds the manager with version and revision injected by
// -X, as the Makefile and the Dockerfile do, and runs --version outside any
// cluster: it must print what was injected and exit 0 without looking for a
// kubeconfig. It builds with the go command's default flags, not the static
// release flags, so every package comes from the cache `go test` already
// filled and only the link is new; make build-static checks the release
// flags.
func TestVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the manager binary")
	}
	bin := filepath.Join(t.TempDir(), "manager")
	const pkg = "github.com/ksmscale/ksm-scale-operator/internal/version"
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X "+pkg+".Version=v9.8.7-test -X "+pkg+".Revision=0123456789abcdef", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	run := exec.Command(bin, "--version")
	// No cluster anywhere: --version must not need one.
	run.Env = []string{"KUBECONFIG=/nonexistent", "HOME=" + t.TempDir()}
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("manager --version: %v\n%s", err, out)
	}
	want := "ksm-scale-operator v9.8.7-test\n" +
		"revision: 0123456789abcdef\n" +
		"go: " + runtime.Version() + "\n" +
		"platform: " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if string(out) != want {
		t.Errorf("manager --version printed\n%s\nwant\n%s", out, want)
	}
}
