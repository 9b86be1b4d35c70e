package bench

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(memChildEnv); kind != "" {
		os.Exit(memChild(kind))
	}
	// Members=4096 needs about 8,200 descriptors in this process, the idle
	// memory measurement 10,000 on the client side.
	if _, err := RaiseFileLimit(1 << 20); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(m.Run())
}
