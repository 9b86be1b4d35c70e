package main

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nearchat/central/store/etcdstore/etcdtest"
	"nearchat/pkg/centralapi"
	"nearchat/pkg/testkit"
)

// startBinary runs bin with args and returns its REST address once it logs
// that it runs; the process is SIGKILLed when the test ends.
func startBinary(t *testing.T, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if strings.Contains(line, "central running") {
			_, rest, _ := strings.Cut(line, "rest=")
			rest, _, _ = strings.Cut(rest, " ")
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, rest
		}
	}
	t.Fatal("Central did not start")
	return nil, ""
}

// TestSIGKILLedCentralKeepsRecordsInEtcd registers a chat server with a
// Central on -store etcd://, waits until the record is in etcd, SIGKILLs
// the Central, and checks that a new one on the same etcd (and new ports)
// knows the server: its heartbeat is taken without a new registration.
func TestSIGKILLedCentralKeepsRecordsInEtcd(t *testing.T) {
	ec := etcdtest.Start(t, 1)
	bin := testkit.BuildOnce(t, "nearchat/cmd/central")
	storeURL := "etcd://" + ec.Hosts() + "/killtest"
	args := []string{"-rest", "127.0.0.1:0", "-control", "127.0.0.1:0", "-secret", "s", "-store", storeURL}
	cmd, rest := startBinary(t, bin, args...)
	api := centralapi.NewClient("http://"+rest, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := api.Register(ctx, centralapi.RegisterServerRequest{ID: "serv1", Addr: ln.Addr().String(), Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	testkit.WaitFor(t, 10*time.Second, "serv1's record in etcd", func() bool {
		resp, err := cli.Get(ctx, "/killtest/servers/serv1")
		return err == nil && len(resp.Kvs) == 1
	})
	cmd.Process.Kill()
	cmd.Wait()

	_, rest2 := startBinary(t, bin, args...)
	api2 := centralapi.NewClient("http://"+rest2, nil)
	if _, err := api2.Heartbeat(ctx, "serv1", centralapi.HeartbeatRequest{Secret: "s"}); err != nil {
		t.Fatalf("heartbeat to the new Central: %v", err)
	}
}
