//go:build !linux

package linkdelay

import "testing"

func TestRelayIntegration(t *testing.T) {
	t.Skip("skipping: the relay and its integration tests need Linux (network namespaces, AF_PACKET sockets)")
}
