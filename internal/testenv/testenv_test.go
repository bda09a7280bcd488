package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// recorder is a testing.TB whose Skipf and Fatalf record instead of
// stopping the goroutine, so Require's decision can be asserted.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

// fakePATH makes a directory holding executable scripts with the given
// names and makes it the whole PATH for the test.
func fakePATH(t *testing.T, programs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range programs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	return dir
}

func TestRequire(t *testing.T) {
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Fatalf("the fake programs need %s: %v", sh, err)
	}
	tests := []struct {
		name     string
		programs map[string]string
		require  []string
		ci       bool
		want     string // "" = passes, "skip: <substrings>", "fail: <substrings>"
	}{
		{name: "present", programs: map[string]string{"python3": ""}, require: []string{"python3"}},
		{name: "missing skips", require: []string{"python3"}, want: "skip: needs python3|apt-get install python3|BACKEND_REQUIRE_NETNS=1"},
		{name: "missing fails in CI", require: []string{"python3"}, ci: true, want: "fail: needs python3|.ci/run"},
		{name: "all missing listed", require: []string{"ip", "python3"}, want: "skip: needs ip|needs python3"},
		{name: "alternative", programs: map[string]string{"busybox": "echo sh udhcpc ls"}, require: []string{"udhcpc|busybox"}},
		{name: "busybox applet is udhcpc", programs: map[string]string{"busybox": "echo sh udhcpc ls"}, require: []string{"udhcpc"}},
		{name: "busybox without the applet", programs: map[string]string{"busybox": "echo sh ls"}, require: []string{"udhcpc"}, want: "skip: needs udhcpc"},
		{name: "netns without ip", require: []string{Netns}, want: "skip: network namespaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakePATH(t, tt.programs)
			if tt.ci {
				t.Setenv(EnvRequire, "1")
			} else {
				t.Setenv(EnvRequire, "")
			}
			r := &recorder{TB: t}
			Require(r, tt.require...)
			got := ""
			switch {
			case r.failed != "":
				got = "fail: " + r.failed
			case r.skipped != "":
				got = "skip: " + r.skipped
			}
			if tt.want == "" {
				if diff := cmp.Diff("", got); diff != "" {
					t.Errorf("Require(%q) (-want +got):\n%s", tt.require, diff)
				}
				return
			}
			kind, subs, _ := strings.Cut(tt.want, ": ")
			if !strings.HasPrefix(got, kind+": ") {
				t.Fatalf("Require(%q) = %q, want a %s", tt.require, got, kind)
			}
			for _, s := range strings.Split(subs, "|") {
				if !strings.Contains(got, s) {
					t.Errorf("Require(%q) = %q, want it to mention %q", tt.require, got, s)
				}
			}
		})
	}
}

func TestCommand(t *testing.T) {
	dir := fakePATH(t, map[string]string{"busybox": "echo sh udhcpc ls"})
	want := []string{filepath.Join(dir, "busybox"), "udhcpc"}
	if diff := cmp.Diff(want, Command(t, "udhcpc")); diff != "" {
		t.Errorf("Command(udhcpc) with busybox only (-want +got):\n%s", diff)
	}
	dir = fakePATH(t, map[string]string{"busybox": "echo sh udhcpc ls", "udhcpc": ""})
	want = []string{filepath.Join(dir, "udhcpc")}
	if diff := cmp.Diff(want, Command(t, "udhcpc")); diff != "" {
		t.Errorf("Command(udhcpc) with udhcpc (-want +got):\n%s", diff)
	}
}
