// Command certs makes what a TLS deployment of nearchat needs for local
// use: a development CA with a server certificate (Central and chat
// servers) and a client certificate (chat servers to Central), and the
// Ed25519 key pair Central signs room tickets with.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nearchat/pkg/ticket"
	"nearchat/pkg/tlsconfig"
)

func main() {
	dir := flag.String("dir", "certs", "output `directory`")
	hosts := flag.String("hosts", "", "extra comma-separated `names or IPs` for the server certificate (localhost, 127.0.0.1 and ::1 are always in)")
	validity := flag.Duration("validity", 90*24*time.Hour, "how long the certificates stay valid")
	force := flag.Bool("force", false, "replace keys and certificates already in -dir")
	flag.Parse()
	// A second run must not silently replace a CA (and the ticket key)
	// that a deployment already trusts.
	if !*force {
		for _, p := range []string{tlsconfig.DevFiles(*dir).CA, tlsconfig.DevFiles(*dir).CAKey, filepath.Join(*dir, "ticket.key")} {
			if _, err := os.Stat(p); err == nil {
				fmt.Fprintf(os.Stderr, "certs: %s exists; not replacing it (use -force to make a new CA and keys)\n", p)
				os.Exit(1)
			}
		}
	}
	var extra []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			extra = append(extra, h)
		}
	}
	f, err := tlsconfig.WriteDev(*dir, extra, *validity)
	if err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
	priv, pub := filepath.Join(*dir, "ticket.key"), filepath.Join(*dir, "ticket.pub")
	if err := ticket.GenerateFiles(priv, pub); err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
	fmt.Printf("development CA in %s:\n  CA           %s\n  server       %s %s\n  client       %s %s\n  ticket keys  %s (Central) %s (chat servers)\n",
		f.Dir, f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey, priv, pub)
}
