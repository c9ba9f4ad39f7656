package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// TLS for a node: one CA, and one certificate per node valid for both
// server and client authentication (`reconfctl tls cert create --node`).
//
//   - The HTTP API serves HTTPS and requires a client certificate signed by
//     the CA (mutual TLS): operators use `reconfctl tls cert create --client`
//     certificates (or node certificates).
//   - The Raft port (Raft RPCs and forwarded requests alike) requires mutual
//     TLS with the same CA, and on top of that a node certificate: an
//     operator's client-only certificate cannot speak Raft. A node dials its
//     peers with its own certificate as the client certificate and checks the
//     peer's certificate against the CA and the host name of the address it
//     dials (a node certificate must name every address peers use for it).
//
// The node certificate and key can be reloaded (SIGHUP) without a restart;
// the CA cannot.

// TLSFiles names a node's PEM files.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// NodeTLS holds a node's TLS material.
type NodeTLS struct {
	files TLSFiles
	pool  *x509.CertPool
	cert  atomic.Pointer[tls.Certificate]
}

// LoadNodeTLS reads and checks a node's certificate, key and CA: the key
// must match the certificate, the certificate must chain to the CA, be
// valid now, and be usable for server and client authentication.
func LoadNodeTLS(files TLSFiles) (*NodeTLS, error) {
	if files.CertFile == "" || files.KeyFile == "" || files.CAFile == "" {
		return nil, errors.New("TLS needs all three of --tls-cert, --tls-key and --tls-ca")
	}
	pem, err := os.ReadFile(files.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found", files.CAFile)
	}
	t := &NodeTLS{files: files, pool: pool}
	if err := t.ReloadCert(); err != nil {
		return nil, err
	}
	return t, nil
}

// ReloadCert re-reads the certificate and key. On error the old pair stays.
func (t *NodeTLS) ReloadCert() error {
	pair, err := tls.LoadX509KeyPair(t.files.CertFile, t.files.KeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("--tls-cert %s: %w", t.files.CertFile, err)
		}
		pair.Leaf = leaf
	}
	inter := x509.NewCertPool()
	for _, c := range pair.Certificate[1:] {
		if ic, err := x509.ParseCertificate(c); err == nil {
			inter.AddCert(ic)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: t.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return fmt.Errorf("--tls-cert %s (CN %q) is not a node certificate of the CA in --tls-ca %s: %v (make one with: reconfctl tls cert create --node NAME)",
				t.files.CertFile, leaf.Subject.CommonName, t.files.CAFile, err)
		}
	}
	t.cert.Store(&pair)
	return nil
}

// Leaf is the node's current certificate.
func (t *NodeTLS) Leaf() *x509.Certificate { return t.cert.Load().Leaf }

// Expires is when the node's certificate stops being valid.
func (t *NodeTLS) Expires() time.Time { return t.Leaf().NotAfter }

func (t *NodeTLS) getCert(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.cert.Load(), nil }

func (t *NodeTLS) getClientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return t.cert.Load(), nil
}

// APIServerConfig is the HTTP API's: HTTPS, client certificates required
// and verified against the CA.
func (t *NodeTLS) APIServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: t.getCert,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      t.pool,
	}
}

// PeerServerConfig is the Raft port's: like the API's, and the client must
// present a node certificate.
func (t *NodeTLS) PeerServerConfig() *tls.Config {
	cfg := t.APIServerConfig()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !isNodeCert(cs.PeerCertificates[0]) {
			return errors.New("the Raft port accepts node certificates only (valid for server and client auth)")
		}
		return nil
	}
	return cfg
}

// ClientConfig is for dialing peers and for the node's own API calls (join,
// healthcheck): the node's certificate as the client certificate, and the
// peer verified against the CA. The server name is the dialed host.
func (t *NodeTLS) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              t.pool,
		GetClientCertificate: t.getClientCert,
	}
}

// isNodeCert: a certificate valid for both server and client auth is a
// node's (operator certificates are client-only).
func isNodeCert(c *x509.Certificate) bool {
	return slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) &&
		slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
}
