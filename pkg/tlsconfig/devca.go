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

// WriteDev creates a development CA in dir with a server certificate valid
// for hosts (plus localhost, 127.0.0.1 and ::1) and a client certificate,
// each valid for validity. Keys are ECDSA P-256, written 0600.
func WriteDev(dir string, hosts []string, validity time.Duration) (Files, error) {
	f := DevFiles(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
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
	if err := writePEM(f.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return f, err
	}
	if err := writeKey(f.CAKey, caKey); err != nil {
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
		if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writeKey(keyPath, key)
	}
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if err := leaf(f.ServerCert, f.ServerKey, "nearchat server", x509.ExtKeyUsageServerAuth, all); err != nil {
		return f, fmt.Errorf("server certificate: %w", err)
	}
	if err := leaf(f.ClientCert, f.ClientKey, "nearchat chat server", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return f, fmt.Errorf("client certificate: %w", err)
	}
	return f, nil
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
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// ServerIDURI is the URI SAN by which a client certificate names the chat
// server id it belongs to: Central lets such a certificate register, and
// speak for, that id only. A client certificate naming no id stands for
// the whole cluster, as the cluster secret does.
func ServerIDURI(id string) *url.URL { return &url.URL{Scheme: "nearchat", Opaque: "server:" + id} }

// ServerIDs returns the chat server ids cert names (see ServerIDURI).
func ServerIDs(cert *x509.Certificate) []string {
	var ids []string
	for _, u := range cert.URIs {
		if id, ok := strings.CutPrefix(u.Opaque, "server:"); ok && u.Scheme == "nearchat" && id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// ServerClientFiles names the client certificate and key WriteServerClient
// makes for chat server id in dir.
func ServerClientFiles(dir, id string) (cert, key string) {
	return filepath.Join(dir, "client-"+id+".pem"), filepath.Join(dir, "client-"+id+".key")
}

// WriteServerClient issues, from the development CA in f, a client
// certificate naming chat server id alone, valid for validity.
func WriteServerClient(f Files, id string, validity time.Duration) (cert, key string, err error) {
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
