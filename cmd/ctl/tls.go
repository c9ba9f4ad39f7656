package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// reconfctl tls: a development CA and certificates, with the standard
// library only. A newcomer makes a CA and a node certificate in two
// commands:
//
//	reconfctl tls ca create
//	reconfctl tls cert create --node n1
//
// Keys are ECDSA P-256. Node certificates are valid for server and client
// authentication (nodes dial each other with them) and name localhost,
// 127.0.0.1, ::1 and the node name, plus --dns and --ip; client
// certificates (--client) are for operators and valid for client
// authentication only, which the Raft port refuses.

func tlsCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:  "tls",
		Usage: "make a development CA and node and client certificates",
		Description: `Certificates for reconfd's mutual TLS (reconfd --tls-cert, --tls-key,
--tls-ca) and reconfctl's (--ca-file, --cert-file, --key-file). Files are
written to --dir; private keys with mode 0600. Existing files are never
overwritten.

Examples:
   reconfctl tls ca create
   reconfctl tls cert create --node n1 --dns n1.example.com --ip 10.0.0.1
   reconfctl tls cert create --client alice
   reconfctl --ca-file ca.pem --cert-file alice.pem --key-file alice-key.pem cluster status`,
		Subcommands: []*cli.Command{
			{
				Name:  "ca",
				Usage: "certificate authority",
				Description: `A development CA for the cluster.

Example:
   reconfctl tls ca create --dir pki`,
				Subcommands: []*cli.Command{{
					Name:      "create",
					Usage:     "create a CA: ca.pem and ca-key.pem",
					UsageText: "reconfctl tls ca create [--dir DIR] [--name NAME] [--days N]",
					Description: `Creates a self-signed CA (ECDSA P-256, 10 years by default) in --dir: ca.pem
(give it to every node as --tls-ca and to clients as --ca-file) and
ca-key.pem (keep it safe: it signs certificates).

Example:
   reconfctl tls ca create --dir pki --name acme-reconf-ca`,
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "dir", Value: ".", Usage: "output `dir`"},
						&cli.StringFlag{Name: "name", Value: "reconf-ca", Usage: "the CA's common `name`"},
						&cli.IntFlag{Name: "days", Value: 3650, Usage: "validity in `days`"},
					},
					Action: func(c *cli.Context) error {
						if c.Args().Present() {
							return usageErr(c, "unexpected argument %q", c.Args().First())
						}
						return createCA(s, c.String("dir"), c.String("name"), c.Int("days"))
					},
				}},
			},
			{
				Name:  "cert",
				Usage: "node and client certificates",
				Description: `Certificates signed by the CA: one per node, one per operator.

Example:
   reconfctl tls cert create --node n1`,
				Subcommands: []*cli.Command{{
					Name:      "create",
					Usage:     "create a certificate signed by the CA: NAME.pem and NAME-key.pem",
					UsageText: "reconfctl tls cert create (--node NAME [--dns HOST]... [--ip IP]... | --client NAME) [--ca ca.pem --ca-key ca-key.pem] [--dir DIR]",
					Description: `--node NAME: a node certificate (server and client auth) for reconfd
--tls-cert/--tls-key, naming localhost, 127.0.0.1, ::1 and NAME, plus every
--dns and --ip: add each address peers and clients use to reach the node.

--client NAME: an operator's certificate (client auth only) for reconfctl
--cert-file/--key-file. The API names it cert:NAME in its logs.

Examples:
   reconfctl tls cert create --node n1 --dns n1.internal --ip 10.0.0.1
   reconfctl tls cert create --client alice --dir pki`,
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "node", Usage: "node `NAME` (common name and DNS name)"},
						&cli.StringFlag{Name: "client", Usage: "client `NAME` (common name)"},
						&cli.StringSliceFlag{Name: "dns", Usage: "extra DNS `name` of the node (repeatable)"},
						&cli.StringSliceFlag{Name: "ip", Usage: "extra IP `address` of the node (repeatable)"},
						&cli.StringFlag{Name: "ca", Value: "ca.pem", Usage: "CA certificate `file` (default: in --dir)"},
						&cli.StringFlag{Name: "ca-key", Value: "ca-key.pem", Usage: "CA key `file` (default: in --dir)"},
						&cli.StringFlag{Name: "dir", Value: ".", Usage: "output `dir`"},
						&cli.IntFlag{Name: "days", Value: 825, Usage: "validity in `days`"},
					},
					Action: func(c *cli.Context) error {
						if c.Args().Present() {
							return usageErr(c, "unexpected argument %q", c.Args().First())
						}
						node, client := c.String("node"), c.String("client")
						if (node == "") == (client == "") {
							return usageErr(c, "give exactly one of --node NAME and --client NAME")
						}
						if client != "" && (len(c.StringSlice("dns")) > 0 || len(c.StringSlice("ip")) > 0) {
							return usageErr(c, "--dns and --ip are for node certificates")
						}
						req := certRequest{name: node, node: true, dns: c.StringSlice("dns"), days: c.Int("days")}
						if client != "" {
							req = certRequest{name: client, days: c.Int("days")}
						}
						for _, ip := range c.StringSlice("ip") {
							parsed := net.ParseIP(ip)
							if parsed == nil {
								return usageErr(c, "--ip %q is not an IP address", ip)
							}
							req.ips = append(req.ips, parsed)
						}
						if !certName.MatchString(req.name) {
							return usageErr(c, "name %q: use letters, digits, '.', '-' and '_' (it names the files too)", req.name)
						}
						caPath, caKey := c.String("ca"), c.String("ca-key")
						if !c.IsSet("ca") {
							caPath = filepath.Join(c.String("dir"), caPath)
						}
						if !c.IsSet("ca-key") {
							caKey = filepath.Join(c.String("dir"), caKey)
						}
						return createCert(s, c.String("dir"), caPath, caKey, req)
					},
				}},
			},
		},
	}
}

var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

type certRequest struct {
	name string
	node bool
	dns  []string
	ips  []net.IP
	days int
}

// newCertTemplate makes a fresh P-256 key and the part of a certificate
// that CA, node and client certificates share: a random 127-bit serial, the
// subject, validity from an hour ago (for clocks slightly behind) until
// notAfter, and the key's id. Callers add usages and CA fields.
func newCertTemplate(name string, notAfter time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	return key, &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"reconf"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		SubjectKeyId: keyID(&key.PublicKey),
	}, nil
}

func createCA(s *streams, dir, name string, days int) error {
	if days < 1 {
		return usageErr(nil, "--days must be at least 1")
	}
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := refuseExisting(certPath, keyPath); err != nil {
		return err
	}
	key, tmpl, err := newCertTemplate(name, time.Now().AddDate(0, 0, days))
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "wrote %s and %s (CA %q, valid until %s)\n", certPath, keyPath, name, tmpl.NotAfter.UTC().Format("2006-01-02"))
	return nil
}

func createCert(s *streams, dir, caPath, caKeyPath string, req certRequest) error {
	if req.days < 1 {
		return usageErr(nil, "--days must be at least 1")
	}
	ca, err := tls.LoadX509KeyPair(caPath, caKeyPath)
	if err != nil {
		return fmt.Errorf("CA (--ca %s, --ca-key %s): %w (make one with: reconfctl tls ca create)", caPath, caKeyPath, err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return fmt.Errorf("--ca %s: %w", caPath, err)
	}
	if !caCert.IsCA {
		return fmt.Errorf("--ca %s (%s) is not a CA certificate", caPath, caCert.Subject.CommonName)
	}
	certPath, keyPath := filepath.Join(dir, req.name+".pem"), filepath.Join(dir, req.name+"-key.pem")
	if err := refuseExisting(certPath, keyPath); err != nil {
		return err
	}
	notAfter := time.Now().AddDate(0, 0, req.days)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	key, tmpl, err := newCertTemplate(req.name, notAfter)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.AuthorityKeyId = caCert.SubjectKeyId
	kind := "client"
	if req.node {
		kind = "node"
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = dedupe(append([]string{"localhost", req.name}, req.dns...))
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, req.ips...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "wrote %s and %s (%s certificate %q signed by %q, valid until %s)\n",
		certPath, keyPath, kind, req.name, caCert.Subject.CommonName, notAfter.UTC().Format("2006-01-02"))
	if req.node {
		var ips []string
		for _, ip := range tmpl.IPAddresses {
			ips = append(ips, ip.String())
		}
		fmt.Fprintf(s.stdout, "names: %v %v\n", tmpl.DNSNames, ips)
	}
	return nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(der)
	return h[:20]
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists; not overwriting it (remove it first, or use another --dir)", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePair writes the certificate (0644) and key (0600), neither over an
// existing file.
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// tlsHint adds what to do to the TLS errors operators meet first.
func tlsHint(w io.Writer, err error) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "HTTP request to an HTTPS server"):
		fmt.Fprintln(w, "reconfctl: hint: the node speaks HTTPS with client certificates: give --ca-file, --cert-file and --key-file (or RECONF_CA_FILE, RECONF_CERT_FILE, RECONF_KEY_FILE)")
	case strings.Contains(msg, "tls: certificate required"), strings.Contains(msg, "tls: bad certificate"), strings.Contains(msg, "tls: unknown certificate authority"):
		fmt.Fprintln(w, "reconfctl: hint: the node wants a client certificate signed by its CA: --cert-file and --key-file (reconfctl tls cert create --client NAME)")
	case strings.Contains(msg, "certificate signed by unknown authority"):
		fmt.Fprintln(w, "reconfctl: hint: --ca-file must name the CA that signed the node's certificate")
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		fmt.Fprintln(w, "reconfctl: hint: the node speaks plain HTTP: drop --ca-file, --cert-file and --key-file")
	}
}
