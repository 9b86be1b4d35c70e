package bench

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(memChildEnv); kind != "" {
		os.Exit(memChild(kind))
	}
	// Members=4096 needs about 8,200 descriptors in this process, the idle
	// memory measurement 10,000 on the client side: the Go runtime raises
	// the soft RLIMIT_NOFILE to the hard limit at start-up (go.dev/issue/46279).
	os.Exit(m.Run())
}
