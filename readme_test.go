package backend_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinkerbell/backend/internal/testenv"
)

// snippet is one ```go block of README.md.
type snippet struct {
	line int // of the first code line, 1-based
	code string
}

// readmeSnippets returns the ```go blocks of the README.
func readmeSnippets(t *testing.T) []snippet {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out  []snippet
		cur  *snippet
		code strings.Builder
		n    int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &snippet{line: n + 1}
			code.Reset()
		case cur != nil && strings.TrimSpace(line) == "```":
			cur.code = code.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			code.WriteString(line)
			code.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: ```go block never closed", cur.line-1)
	}
	return out
}

// TestReadmeSnippetsCompile checks that every ```go block of README.md is
// gofmt-formatted, and builds and vets it, each as a complete program in a module of its own that uses
// this checkout (a replace directive), so that the README never shows code
// that does not compile against the current API.
func TestReadmeSnippetsCompile(t *testing.T) {
	goTool := testenv.Command(t, "go")[0]
	snippets := readmeSnippets(t)
	if len(snippets) == 0 {
		t.Fatal("README.md has no ```go blocks; the test would prove nothing")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	// The snippets' module: this module's requirements (so that nothing is
	// fetched) plus this checkout under its own path.
	first, rest, _ := bytes.Cut(gomod, []byte("\n"))
	if !bytes.HasPrefix(first, []byte("module github.com/tinkerbell/backend")) {
		t.Fatalf("go.mod starts with %q", first)
	}
	mod := "module readmesnippets\n" + string(rest) +
		"\nrequire github.com/tinkerbell/backend v0.0.0\n" +
		"\nreplace github.com/tinkerbell/backend => " + root + "\n"
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "go.mod"), []byte(mod))
	sum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "go.sum"), sum)
	for i, s := range snippets {
		if !strings.HasPrefix(s.code, "package ") {
			t.Errorf("README.md:%d: a ```go block must be a complete program, starting with its package clause", s.line)
			continue
		}
		if formatted, err := format.Source([]byte(s.code)); err == nil && string(formatted) != s.code {
			t.Errorf("README.md:%d: the ```go block is not gofmt-formatted; gofmt gives:\n%s", s.line, formatted)
		}
		name := fmt.Sprintf("snippet%d", i+1)
		// The line directive makes compiler errors name README.md's lines.
		write(filepath.Join(dir, name, "main.go"), fmt.Appendf(nil, "//line README.md:%d\n%s", s.line, s.code))
	}
	for _, args := range [][]string{{"build", "./..."}, {"vet", "./..."}} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s of the README's snippets: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Logf("compiled %d README snippets", len(snippets))
}
