package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// securityFlags: TLS, tokens and the cluster token.
func securityFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-cert", EnvVars: env("TLS_CERT"), Usage: "PEM certificate `file` of this node (reconfctl tls cert create --node); with --tls-key and --tls-ca turns on mutual TLS for the API and the Raft port"},
		&cli.StringFlag{Name: "tls-key", EnvVars: env("TLS_KEY"), Usage: "PEM private key `file` of --tls-cert"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: env("TLS_CA"), Usage: "PEM `file` of the CA that signs every node's and client's certificate; API clients must present a certificate it signed"},
		&cli.StringFlag{Name: "token-file", EnvVars: env("TOKEN_FILE"), Usage: "`file` of bearer tokens, one \"TOKEN ROLE\" per line (role read, write or admin); reloaded on SIGHUP"},
		&cli.StringFlag{Name: "cluster-token", EnvVars: env("CLUSTER_TOKEN"), Usage: "shared secret of the cluster's nodes (16+ characters): proves a peer on the Raft port and on join; required with --token-file without TLS. Prefer --cluster-token-file or the environment variable: a flag shows in ps"},
		&cli.StringFlag{Name: "cluster-token-file", EnvVars: env("CLUSTER_TOKEN_FILE"), Usage: "`file` holding the cluster token (its first line); instead of --cluster-token"},
	}
}

// security is a node's TLS material and authenticator.
type security struct {
	tls          *transport.NodeTLS // nil: no TLS
	auth         *transport.Auth
	clusterToken string
	tokenFile    string
}

func loadSecurity(c *cli.Context, logger hclog.Logger) (*security, error) {
	clusterToken, err := clusterTokenOf(c, logger)
	if err != nil {
		return nil, err
	}
	sec := &security{clusterToken: clusterToken, tokenFile: c.String("token-file")}
	cert, key, ca := c.String("tls-cert"), c.String("tls-key"), c.String("tls-ca")
	if cert != "" || key != "" || ca != "" {
		t, err := transport.LoadNodeTLS(transport.TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca})
		if err != nil {
			return nil, err
		}
		sec.tls = t
	}
	if sec.tokenFile != "" && sec.tls == nil && sec.clusterToken == "" {
		return nil, errors.New("--token-file without TLS needs --cluster-token (RECONF_CLUSTER_TOKEN), the same on every node: " +
			"nodes must prove themselves to each other on the Raft port, or anyone who reaches it could bypass the tokens. Or turn on TLS (--tls-cert, --tls-key, --tls-ca)")
	}
	auth, err := transport.NewAuth(transport.AuthConfig{TokenFile: sec.tokenFile, ClusterToken: sec.clusterToken, ClientCerts: sec.tls != nil})
	if err != nil {
		return nil, err
	}
	sec.auth = auth
	if sec.tokenFile != "" {
		if fi, err := os.Stat(sec.tokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("the token file can be read by other users; chmod 600 it", "file", sec.tokenFile, "mode", fi.Mode().Perm().String())
		}
	}
	return sec, nil
}

// describe logs what protects this node.
func (sec *security) describe(logger hclog.Logger, httpAddr string) {
	peer := "none"
	switch {
	case sec.tls != nil && sec.clusterToken != "":
		peer = "mutual TLS and cluster token"
	case sec.tls != nil:
		peer = "mutual TLS"
	case sec.clusterToken != "":
		peer = "cluster token"
	}
	args := []any{"tls", sec.tls != nil, "peer_auth", peer}
	if ts := sec.auth.Tokens(); ts != nil {
		args = append(args, "tokens", ts.Len(), "roles", ts.Roles())
	}
	if sec.tls != nil {
		args = append(args, "cert_cn", sec.tls.Leaf().Subject.CommonName, "cert_expires", sec.tls.Expires().UTC().Format("2006-01-02"))
	}
	logger.Info("security", args...)
	if !sec.auth.Enabled() {
		if host, _, err := net.SplitHostPort(httpAddr); err == nil {
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				logger.Warn("the API is open: anyone who reaches it can read and change the state; set --token-file and/or --tls-*", "http", httpAddr)
			}
		}
	}
}

func (sec *security) muxConfig(cfg transport.MuxConfig) transport.MuxConfig {
	if sec.tls != nil {
		cfg.TLSServer, cfg.TLSClient = sec.tls.PeerServerConfig(), sec.tls.ClientConfig()
	}
	cfg.ClusterToken = sec.clusterToken
	return cfg
}

// client is a Go API client that speaks as this node: its certificate,
// and the cluster token as a bearer token.
func (sec *security) client(addrs []string) *transport.Client {
	var opts []transport.ClientOption
	if sec.tls != nil {
		opts = append(opts, transport.WithTLS(sec.tls.ClientConfig()))
	}
	cl := transport.NewClient(addrs, opts...)
	cl.Token = sec.clusterToken
	return cl
}

// reload re-reads the token file and the node certificate. A file that
// does not parse leaves what is in use in place.
func (sec *security) reload(logger hclog.Logger) {
	if sec.tokenFile != "" {
		old := sec.auth.Tokens()
		if ts, err := sec.auth.ReloadTokens(); err != nil {
			logger.Error("token file reload failed; keeping the tokens in use", "file", sec.tokenFile, "tokens_in_use", old.Len(), "error", err)
		} else {
			logger.Info("token file reloaded", "file", sec.tokenFile, "tokens", ts.Len(), "roles", ts.Roles())
		}
	}
	if sec.tls != nil {
		if err := sec.tls.ReloadCert(); err != nil {
			logger.Error("TLS certificate reload failed; keeping the one in use", "error", err)
		} else {
			logger.Info("TLS certificate reloaded", "cn", sec.tls.Leaf().Subject.CommonName, "expires", sec.tls.Expires().UTC().Format("2006-01-02"))
		}
	}
	if sec.tokenFile == "" && sec.tls == nil {
		logger.Info("SIGHUP: nothing to reload (no --token-file, no TLS)")
	}
}

// reloadOnHUP reloads on every SIGHUP until stop is closed.
func reloadOnHUP(sec *security, logger hclog.Logger, stop <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				sec.reload(logger)
			case <-stop:
				return
			}
		}
	}()
}

// clusterTokenOf reads the cluster token from --cluster-token-file, the
// environment or the flag. Given as a flag it shows in ps and in
// /proc/PID/cmdline to every user of the machine: warn.
func clusterTokenOf(c *cli.Context, logger hclog.Logger) (string, error) {
	file, tok := c.String("cluster-token-file"), c.String("cluster-token")
	switch {
	case file != "" && tok != "":
		return "", errors.New("--cluster-token-file and --cluster-token (or RECONF_CLUSTER_TOKEN) are both set: give one")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--cluster-token-file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		line = strings.TrimSpace(line)
		if line == "" {
			return "", fmt.Errorf("--cluster-token-file %s: the first line is empty", file)
		}
		if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("the cluster token file can be read by other users; chmod 600 it", "file", file, "mode", fi.Mode().Perm().String())
		}
		return line, nil
	case tok != "" && os.Getenv("RECONF_CLUSTER_TOKEN") != tok:
		logger.Warn("the cluster token was given as --cluster-token, which every user of this machine can read in ps; use --cluster-token-file or RECONF_CLUSTER_TOKEN")
	}
	return tok, nil
}
