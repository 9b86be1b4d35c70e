// Command certs makes what a TLS deployment of nearchat needs for local
// use: a development CA with a server certificate (Central and chat
// servers) and a client certificate (chat servers to Central), and the
// Ed25519 key pair Central signs room tickets with.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nearchat/pkg/bounds"
	"nearchat/pkg/proto"
	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// checkArgs refuses a host, server id or validity WriteDev or
// WriteServerClient would refuse, naming the flag.
func checkArgs(dir, hosts, ids string, validity time.Duration) error {
	if dir == "" {
		return bounds.Fail("dir", dir, "a directory")
	}
	if tlsconfig.CheckValidity(validity) != nil {
		return bounds.Range("validity", validity, tlsconfig.MinValidity, tlsconfig.MaxValidity)
	}
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" && tlsconfig.CheckHost(h) != nil {
			return bounds.Fail("hosts", h, "IP addresses or DNS names of ASCII letters, digits, '-' and '.', at most 253 bytes, comma-separated")
		}
	}
	for _, id := range strings.Split(ids, ",") {
		if id = strings.TrimSpace(id); id != "" && proto.CheckServer(id) != nil {
			return bounds.Fail("server-ids", id, fmt.Sprintf("ids of 1 to %d ASCII letters, digits, '.', '_' or '-', comma-separated", proto.MaxServer))
		}
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("certs", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: certs [flags]   a development CA, certificates and ticket keys for nearchat's TLS mode\n\nflags:\n")
		fl.PrintDefaults()
	}
	dir := fl.String("dir", "certs", "output `directory` (made if missing)")
	hosts := fl.String("hosts", "", "extra comma-separated `names or IPs` for the server certificate: IP addresses, or DNS names of ASCII letters, digits, '-' and '.' (optionally *.name), at most 253 bytes (localhost, 127.0.0.1 and ::1 are always in)")
	validity := fl.Duration("validity", 90*24*time.Hour, "how long the certificates stay valid, 1m to 87600h (ten years)")
	ids := fl.String("server-ids", "", "comma-separated chat server `ids`, each 1 to 32 ASCII letters, digits, '.', '_' or '-': also issue each a client certificate naming it (client-ID.pem), with which Central lets it register and speak for that id only; with an existing CA, only these are made")
	force := fl.Bool("force", false, "replace an existing CA and ticket key (every running server, client and ticket made with the old ones stops being trusted)")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "certs: unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	// Every argument is checked before the first file is written, so a
	// bad one leaves the directory as it was.
	if err := checkArgs(*dir, *hosts, *ids, *validity); err != nil {
		fmt.Fprintln(stderr, "certs:", err)
		return 2
	}
	var extra []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			extra = append(extra, h)
		}
	}
	priv, pub := filepath.Join(*dir, "ticket.key"), filepath.Join(*dir, "ticket.pub")
	var servers []string
	for _, id := range strings.Split(*ids, ",") {
		if id = strings.TrimSpace(id); id != "" {
			servers = append(servers, id)
		}
	}
	issue := func(f tlsconfig.Files) int {
		for _, id := range servers {
			cert, key, err := tlsconfig.WriteServerClient(f, id, *validity)
			if err != nil {
				fmt.Fprintln(stderr, "certs:", err)
				return 1
			}
			fmt.Fprintf(stdout, "  client for %s: %s %s\n", id, cert, key)
		}
		return 0
	}
	if _, err := os.Stat(tlsconfig.DevFiles(*dir).CAKey); err == nil && len(servers) > 0 && !*force {
		return issue(tlsconfig.DevFiles(*dir)) // more servers for an existing CA
	}
	if !*force {
		for _, p := range []string{tlsconfig.DevFiles(*dir).CA, tlsconfig.DevFiles(*dir).CAKey, priv} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(stderr, "certs: %s already exists: a new CA or ticket key would break the trust of everything made with it.\n"+
					"Use it as it is, or run again with -force to replace it (then restart Central, the chat servers and the clients).\n", p)
				return 1
			}
		}
	}
	f, err := tlsconfig.WriteDev(*dir, extra, *validity)
	if err != nil {
		fmt.Fprintln(stderr, "certs:", err)
		return 1
	}
	if err := ticket.GenerateFiles(priv, pub); err != nil {
		fmt.Fprintln(stderr, "certs:", err)
		return 1
	}
	fmt.Fprintf(stdout, "development CA in %s:\n  CA           %s\n  server       %s %s\n  client       %s %s\n  ticket keys  %s (Central) %s (chat servers)\n",
		f.Dir, f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey, priv, pub)
	if rc := issue(f); rc != 0 {
		return rc
	}
	fmt.Fprintf(stdout, "next: see \"Run it by hand\" in README.md (TLS), or: NEARCHAT_CA=%s bin/chat\n", f.CA)
	return 0
}
