package nats

import "testing"

func TestInsecureURL(t *testing.T) {
	tests := []struct {
		url  string
		tls  bool
		warn bool
	}{
		{url: "nats://127.0.0.1:4222"},
		{url: "nats://[::1]:4222"},
		{url: "nats://localhost:4222"},
		{url: "nats://127.3.4.5:4222"},
		{url: "nats://198.18.0.1:4222", warn: true},
		{url: "nats://nats.lab:4222", warn: true},
		{url: "nats://user:xxxxx@nats.lab:4222", warn: true},
		{url: "nats://nats.lab:4222", tls: true},
		{url: "tls://nats.lab:4222"},
		{url: ""},
	}
	for _, tc := range tests {
		got := insecureURL(tc.url, tc.tls) != ""
		if got != tc.warn {
			t.Errorf("insecureURL(%q, tls=%v) warns: %v, want %v", tc.url, tc.tls, got, tc.warn)
		}
	}
}
