//go:build !linux

// Package netnstest builds network namespaces for tests; it exists on Linux
// only.
package netnstest
