package central

import (
	"net/netip"
	"testing"
	"time"
)

// Addresses of one IPv6 /64 share a registration bucket, so walking the
// prefix buys nothing; other prefixes, and IPv4 addresses (mapped or not),
// keep their own.
func TestSourceBucketsGroupIPv6Prefixes(t *testing.T) {
	var s sourceBuckets
	now := time.Unix(1000, 0)
	allow := func(addr string) bool { return s.allow(netip.MustParseAddr(addr), now, 0.001, 2) }
	if !allow("2001:db8:1:2::1") || !allow("2001:db8:1:2::ffff:1") {
		t.Fatal("the first two registrations of a /64 refused")
	}
	if allow("2001:db8:1:2:abcd::7") {
		t.Error("a third address of the same /64 got a token of its own")
	}
	if !allow("2001:db8:1:3::1") {
		t.Error("another /64 was refused")
	}
	if !allow("192.0.2.1") || !allow("::ffff:192.0.2.1") || allow("192.0.2.1") {
		t.Error("an IPv4 address and its mapped form are not one bucket of 2")
	}
	if !allow("192.0.2.2") {
		t.Error("the next IPv4 address was refused")
	}
}
