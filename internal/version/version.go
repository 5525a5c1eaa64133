// Package version says which build of the operator is running, for the
// manager's --version flag, its start-up log line and the ksmscale_build_info
// metric.
//
// The release version lives in one place, the repository's VERSION file. The
// Makefile and the Dockerfile inject it, and the git commit, at link time:
//
//	go build -ldflags "-X github.com/ksmscale/ksm-scale-operator/internal/version.Version=$(cat VERSION) \
//	  -X github.com/ksmscale/ksm-scale-operator/internal/version.Revision=$(git rev-parse HEAD)" ./cmd
//
// A plain `go build` or `go run` injects nothing; the binary then reports
// DevVersion, which no release carries, rather than a copy of VERSION that
// would go stale.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// DevVersion is what a binary built without the Makefile's or the
// Dockerfile's flags reports.
const DevVersion = "v0.0.0-dev"

// Version and Revision are set with -ldflags -X; they are variables, not
// constants, because the linker can only overwrite variables.
var (
	// Version is the release version from the VERSION file, e.g. v0.1.0.
	Version = DevVersion
	// Revision is the git commit the binary was built from.
	Revision = ""
)

// Info describes the running build.
type Info struct {
	Version   string
	Revision  string
	GoVersion string
	Platform  string
}

// Get returns the running build's Info. When no revision was injected it
// falls back to the VCS revision the go command stamps into binaries built
// inside a git checkout (-buildvcs), so a developer build still names its
// commit; it stays empty when neither is known.
func Get() Info {
	return Info{
		Version:   Version,
		Revision:  revision(Revision, debug.ReadBuildInfo),
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// revision returns injected, or else the vcs.revision setting of the build
// info (with "-dirty" when the work tree had changes).
func revision(injected string, read func() (*debug.BuildInfo, bool)) string {
	if injected != "" {
		return injected
	}
	bi, ok := read()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// String is the --version output: one "key: value" line per field after the
// first, leaving out the revision when it is unknown, so scripts can grep it.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ksm-scale-operator %s\n", i.Version)
	if i.Revision != "" {
		fmt.Fprintf(&b, "revision: %s\n", i.Revision)
	}
	fmt.Fprintf(&b, "go: %s\n", i.GoVersion)
	fmt.Fprintf(&b, "platform: %s\n", i.Platform)
	return b.String()
}
