// Package testenv is the one gate for tests that need something outside Go:
// root, network namespaces, or an external program (ip, udhcpc, python3).
//
// Call [Require] first, before any setup: when a requirement is missing it
// skips the test with a message naming what is missing and how to get it,
// or fails the test when the environment variable BACKEND_REQUIRE_NETNS is
// "1" (CI sets it), so that a CI run never passes by silently skipping.
//
//	func TestWithUdhcpc(t *testing.T) {
//		testenv.Require(t, "netns", "udhcpc")
//		argv := testenv.Command(t, "udhcpc") // udhcpc, or busybox's applet
//		...
//	}
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// EnvRequire is the environment variable that turns [Require]'s skip into a
// failure when set to "1".
const EnvRequire = "BACKEND_REQUIRE_NETNS"

// Requirements [Require] knows besides program names.
const (
	// Root: the effective user id is 0.
	Root = "root"
	// Netns: this process can create network namespaces (root, the ip
	// program, and a working "ip netns add"/"ip netns del").
	Netns = "netns"
)

// packages names the Debian package that provides a program, for the skip
// message.
var packages = map[string]string{
	"ip":      "iproute2",
	"udhcpc":  "udhcpc or busybox",
	"busybox": "busybox",
	"python3": "python3",
}

// Require skips tb unless every requirement is met, or fails it when
// [EnvRequire] is "1". A requirement is [Root], [Netns], a program name
// looked up in PATH ("udhcpc" is also met by busybox's udhcpc applet), or
// alternatives separated by "|" ("udhcpc|busybox"), any one of which
// suffices. All requirements are checked, so the message lists everything
// that is missing at once.
func Require(tb testing.TB, requirements ...string) {
	tb.Helper()
	var missing []string
	for _, r := range requirements {
		if err := check(r); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := strings.Join(missing, "; ")
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("testenv: %s (and %s=1, so this is a failure; .ci/run installs everything)", msg, EnvRequire)
	}
	tb.Skipf("testenv: skipped: %s (set %s=1 to fail instead)", msg, EnvRequire)
}

// Command returns the argument vector prefix that runs the program name:
// its path, or for "udhcpc" without a udhcpc program, busybox and the
// applet name. It calls [Require] for name first.
func Command(tb testing.TB, name string) []string {
	tb.Helper()
	Require(tb, name)
	argv, err := lookup(name)
	if err != nil { // Require passed, so this cannot happen
		tb.Fatalf("testenv: %v", err)
	}
	return argv
}

func check(r string) error {
	switch r {
	case Root:
		if euid := os.Geteuid(); euid != 0 {
			return fmt.Errorf("needs root (euid %d)", euid)
		}
		return nil
	case Netns:
		return netns()
	}
	var errs []string
	for alt := range strings.SplitSeq(r, "|") {
		if _, err := lookup(alt); err == nil {
			return nil
		} else {
			errs = append(errs, err.Error())
		}
	}
	return fmt.Errorf("%s", strings.Join(errs, " and "))
}

// lookup finds a program; "udhcpc" falls back to busybox's applet.
func lookup(name string) ([]string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return []string{path}, nil
	}
	if name == "udhcpc" {
		if bb, berr := exec.LookPath("busybox"); berr == nil && hasApplet(bb, "udhcpc") {
			return []string{bb, "udhcpc"}, nil
		}
	}
	hint := ""
	if p, ok := packages[name]; ok {
		hint = " (Debian: apt-get install " + p + ")"
	}
	return nil, fmt.Errorf("needs %s, not found in PATH%s", name, hint)
}

func hasApplet(busybox, applet string) bool {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return false
	}
	for f := range bytes.FieldsSeq(out) {
		if string(f) == applet {
			return true
		}
	}
	return false
}

// probes numbers the namespace probes, so that tests running in parallel in
// one process never pick the same name.
var probes atomic.Uint32

// netns probes whether a namespace can be created.
func netns() error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("network namespaces need root (euid %d)", euid)
	}
	if _, err := lookup("ip"); err != nil {
		return fmt.Errorf("network namespaces: %w", err)
	}
	name := "ntprobe" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(uint64(probes.Add(1)), 10)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace: ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot delete a network namespace: ip netns del: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
