package excerpt

import (
	"strings"
	"testing"
)

func TestCut(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc..."},
		{"aé", 2, "a..."}, // never splits a rune
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := Cut(tt.in, tt.n); got != tt.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	if got, want := Quote([]byte("a\x00\n")), `"a\x00\n"`; got != want {
		t.Errorf("Quote = %s, want %s", got, want)
	}
	long := []byte(strings.Repeat("x", 1000))
	got := Quote(long)
	if len(got) > Max+30 || !strings.HasSuffix(got, "(1000 bytes)") {
		t.Errorf("Quote of 1000 bytes = %q", got)
	}
}
