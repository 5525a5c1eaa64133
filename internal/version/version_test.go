package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestInfoString(t *testing.T) {
	for _, tc := range []struct {
		name string
		info Info
		want string
	}{
		{
			name: "release build",
			info: Info{Version: "v0.1.0", Revision: "0123abc", GoVersion: "go1.26.8", Platform: "linux/arm64"},
			want: "ksm-scale-operator v0.1.0\nrevision: 0123abc\ngo: go1.26.8\nplatform: linux/arm64\n",
		},
		{
			name: "revision unknown is left out",
			info: Info{Version: DevVersion, GoVersion: "go1.26.8", Platform: "linux/amd64"},
			want: "ksm-scale-operator v0.0.0-dev\ngo: go1.26.8\nplatform: linux/amd64\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.info.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRevision(t *testing.T) {
	stamped := func(settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) { return &debug.BuildInfo{Settings: settings}, true }
	}
	for _, tc := range []struct {
		name     string
		injected string
		read     func() (*debug.BuildInfo, bool)
		want     string
	}{
		{"injected wins", "abc", stamped(debug.BuildSetting{Key: "vcs.revision", Value: "def"}), "abc"},
		{"vcs stamp", "", stamped(debug.BuildSetting{Key: "vcs.revision", Value: "def"}), "def"},
		{"vcs stamp of a dirty tree", "", stamped(
			debug.BuildSetting{Key: "vcs.revision", Value: "def"},
			debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "def-dirty"},
		{"no stamp", "", stamped(), ""},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := revision(tc.injected, tc.read); got != tc.want {
				t.Errorf("revision() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGetDefaults(t *testing.T) {
	i := Get()
	if i.Version != DevVersion {
		t.Errorf("Version = %q, want %q in a test binary (nothing injected)", i.Version, DevVersion)
	}
	if i.GoVersion != runtime.Version() || i.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Get() = %+v, want the running toolchain and platform", i)
	}
}
