//go:build !linux

package linkdelay

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("linkdelay: only supported on Linux (needs AF_PACKET sockets)")

// Relay forwards frames between two interfaces with a delay (Linux only).
type Relay struct{}

// Open always fails on this platform.
func Open(Config) (*Relay, error) { return nil, errNotLinux }

// Run always fails on this platform.
func (*Relay) Run(context.Context) error { return errNotLinux }

// Close does nothing on this platform.
func (*Relay) Close() error { return nil }

// Stats returns zero counters on this platform.
func (*Relay) Stats() (ab, ba Stats) { return }

// WatchProcess always fails on this platform.
func WatchProcess(context.Context, int, bool) (<-chan struct{}, error) { return nil, errNotLinux }
