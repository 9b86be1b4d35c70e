package loopback

import "testing"

func TestHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST:8088": true, "localhost.": true, "view.localhost:8088": true,
		"127.0.0.1": true, "127.1.2.3:80": true, "[::1]:8088": true, "[::1]": true, "::1": true,

		"": false, "evil.com": false, "evil.com:80": false, "localhost.evil.com": false,
		"localhost.example": false, "127.0.0.1.evil.com": false, "127.1": false, "127.1:80": false,
		"2130706433": false, "0x7f000001": false, "0177.0.0.1": false, "127.000.000.001": false,
		"10.0.0.1:8088": false, "[::2]": false, "0.0.0.0": false,
	} {
		if got := Host(host); got != want {
			t.Errorf("Host(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "localhost:9090": true, "[::1]:9090": true, "unix:/run/x.sock": true,
		":9090": false, "0.0.0.0:9090": false, "10.0.0.1:9090": false, "127.0.0.1": false,
	} {
		if got := Addr(addr); got != want {
			t.Errorf("Addr(%q) = %v, want %v", addr, got, want)
		}
	}
}
