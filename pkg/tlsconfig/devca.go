package tlsconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"nearchat/pkg/atomicfile"
	"nearchat/pkg/proto"
)

// Files names the PEM files of a development CA, as written by WriteDev.
type Files struct {
	Dir                   string
	CA                    string // the CA certificate every peer trusts
	CAKey                 string
	ServerCert, ServerKey string // for Central and chat servers
	ClientCert, ClientKey string // for chat servers dialing Central with mTLS
}

// DevFiles returns the file names WriteDev uses in dir.
func DevFiles(dir string) Files {
	p := func(n string) string { return filepath.Join(dir, n) }
	return Files{Dir: dir, CA: p("ca.pem"), CAKey: p("ca.key"), ServerCert: p("server.pem"), ServerKey: p("server.key"),
		ClientCert: p("client.pem"), ClientKey: p("client.key")}
}

// Validity bounds of the certificates WriteDev and WriteServerClient make.
const (
	MinValidity = time.Minute
	// MaxValidity is ten years: a development CA has no business lasting
	// longer.
	MaxValidity = 10 * 365 * 24 * time.Hour
)

// CheckValidity reports whether d is a validity WriteDev accepts, from
// MinValidity to MaxValidity.
func CheckValidity(d time.Duration) error {
	if d < MinValidity || d > MaxValidity {
		return fmt.Errorf("tlsconfig: validity %v: want %v to %v", d, MinValidity, MaxValidity)
	}
	return nil
}

// CheckHost reports whether h can name a server in a certificate: an IP
// address, or a DNS name of labels of 1 to 63 ASCII letters, digits and
// '-' (not first or last), at most 253 bytes, optionally with "*." first.
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	bad := func(why string) error { return fmt.Errorf("tlsconfig: host %q: %s", h, why) }
	if name == "" || len(name) > 253 {
		return bad("want an IP address or a DNS name of 1 to 253 bytes")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return bad("each dot-separated label needs 1 to 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("a label may not begin or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("character %q: want ASCII letters, digits, '-' and '.'", c))
			}
		}
	}
	return nil
}

// WriteDev creates a development CA in dir with a server certificate valid
// for hosts (plus localhost, 127.0.0.1 and ::1) and a client certificate,
// each valid for validity. Keys are ECDSA P-256, written 0600. Hosts and
// validity are checked (CheckHost, CheckValidity) and everything is made
// in memory before the first file is written, and each file is written
// atomically, so a failed run leaves no half-made set or truncated file.
func WriteDev(dir string, hosts []string, validity time.Duration) (Files, error) {
	f := DevFiles(dir)
	if err := CheckValidity(validity); err != nil {
		return f, err
	}
	for _, h := range hosts {
		if err := CheckHost(h); err != nil {
			return f, err
		}
	}
	type file struct {
		path string
		pem  []byte
		mode os.FileMode
	}
	var out []file
	addCert := func(path string, der []byte) {
		out = append(out, file{path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644})
	}
	addKey := func(path string, k *ecdsa.PrivateKey) error {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return err
		}
		out = append(out, file{path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600})
		return nil
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "nearchat development CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	addCert(f.CA, caDER)
	if err := addKey(f.CAKey, caKey); err != nil {
		return f, err
	}
	leaf := func(certPath, keyPath, cn string, usage x509.ExtKeyUsage, hosts []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(validity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		addCert(certPath, der)
		return addKey(keyPath, key)
	}
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if err := leaf(f.ServerCert, f.ServerKey, "nearchat server", x509.ExtKeyUsageServerAuth, all); err != nil {
		return f, fmt.Errorf("server certificate: %w", err)
	}
	if err := leaf(f.ClientCert, f.ClientKey, "nearchat chat server", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return f, fmt.Errorf("client certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	set := make([]atomicfile.File, 0, len(out))
	for _, o := range out {
		set = append(set, atomicfile.File{Path: o.path, Data: o.pem, Perm: o.mode})
	}
	// All or nothing: a CA beside certificates another CA signed trusts
	// nothing (abuse probe, 2026-12-02: a failed -force run left that).
	return f, atomicfile.WriteAll(set)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// ServerIDURI is the URI SAN by which a client certificate names the chat
// server id it belongs to: Central lets such a certificate register, and
// speak for, that id only. A client certificate naming no id stands for
// the whole cluster, as the cluster secret does.
func ServerIDURI(id string) *url.URL { return &url.URL{Scheme: "nearchat", Opaque: "server:" + id} }

// ServerIDs returns the chat server ids cert names (see ServerIDURI). A
// nearchat URI that is not a well-formed ServerIDURI is an error: it was
// skipped, and a certificate whose one id was misspelt so stood for the
// whole cluster (abuse sweep, 2026-12-03).
func ServerIDs(cert *x509.Certificate) ([]string, error) {
	var ids []string
	for _, u := range cert.URIs {
		if !strings.EqualFold(u.Scheme, "nearchat") {
			continue
		}
		id, ok := strings.CutPrefix(u.Opaque, "server:")
		if !ok || proto.CheckServer(id) != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("tls: certificate URI %.80q is not nearchat:server:ID with a valid id", u.String())
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ServerClientFiles names the client certificate and key WriteServerClient
// makes for chat server id in dir.
func ServerClientFiles(dir, id string) (cert, key string) {
	return filepath.Join(dir, "client-"+id+".pem"), filepath.Join(dir, "client-"+id+".key")
}

// WriteServerClient issues, from the development CA in f, a client
// certificate naming chat server id alone, valid for validity. The id must
// be a valid server id (proto.CheckServer): it names the files too.
func WriteServerClient(f Files, id string, validity time.Duration) (cert, key string, err error) {
	if err := proto.CheckServer(id); err != nil {
		return "", "", err
	}
	if err := CheckValidity(validity); err != nil {
		return "", "", err
	}
	caCert, caKey, err := loadCA(f)
	if err != nil {
		return "", "", err
	}
	cert, key = ServerClientFiles(f.Dir, id)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "nearchat chat server " + id},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{ServerIDURI(id)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	if err := writePEM(cert, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return cert, key, writeKey(key, k)
}

// loadCA reads the CA certificate and key WriteDev wrote.
func loadCA(f Files) (*x509.Certificate, crypto.Signer, error) {
	read := func(path, typ string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			return nil, fmt.Errorf("%s: no PEM block of type %q", path, typ)
		}
		return blk.Bytes, nil
	}
	der, err := read(f.CA, "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if der, err = read(f.CAKey, "PRIVATE KEY"); err != nil {
		return nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", f.CAKey)
	}
	return cert, s, nil
}
