package main

// The testbed's PKI: one CA signs the apiserver's serving certificate and every client
// certificate; a separate key pair signs service-account tokens.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const certValidity = 10 * 365 * 24 * time.Hour

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func readPEM(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return block.Bytes, nil
}

// loadOrCreateCA keeps an existing CA NAME.crt/NAME.key so that kubeconfigs written earlier
// stay valid.
func loadOrCreateCA(dir, name string) (*authority, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if certDER, err := readPEM(certPath); err == nil {
		keyDER, err := readPEM(keyPath)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(certDER)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
		key, err := x509.ParseECPrivateKey(keyDER)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		return &authority{cert: cert, key: key}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "ferrofluid-testbed-" + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

// issue signs a leaf certificate and writes NAME.crt and NAME.key into dir.
func (ca *authority) issue(dir, name string, subject pkix.Name, usage x509.ExtKeyUsage, dnsNames []string, ips []net.IP) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber: sn,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, key.Public(), ca.key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

// serviceAccountKeys writes the token signing key pair once.
func serviceAccountKeys(dir string) error {
	keyPath := filepath.Join(dir, "sa.key")
	if _, err := os.Stat(keyPath); err == nil {
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644)
}

// writeKubeconfig writes a kubeconfig that authenticates with the certificate NAME.crt.
func writeKubeconfig(path, server, caPath, certPath, keyPath, user string) error {
	encode := func(p string) (string, error) {
		raw, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(raw), nil
	}
	ca, err := encode(caPath)
	if err != nil {
		return err
	}
	cert, err := encode(certPath)
	if err != nil {
		return err
	}
	key, err := encode(keyPath)
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: testbed
  context:
    cluster: testbed
    user: %s
current-context: testbed
`, server, ca, user, cert, key, user)
	return os.WriteFile(path, []byte(text), 0o600)
}

// runKubeconfig issues a client certificate for a user and writes a kubeconfig for it:
// the node agent asks for one per node (system:node:NAME in system:nodes), so the Node
// authorizer and NodeRestriction judge each node's requests as they would a kubelet's.
func runKubeconfig(args []string) int {
	flags := flag.NewFlagSet("kubeconfig", flag.ContinueOnError)
	dir := flags.String("dir", "", "the directory `up` wrote (required)")
	user := flags.String("user", "", "the certificate's common name, e.g. system:node:node-1 (required)")
	groups := flags.String("groups", "", "comma-separated organisations, e.g. system:nodes")
	out := flags.String("out", "", "where to write the kubeconfig (required)")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || *user == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "kubeconfig: --dir, --user and --out are required")
		return 2
	}
	server, err := os.ReadFile(filepath.Join(*dir, "server"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeconfig: %v (has `up` run with --dir %s?)\n", err, *dir)
		return 1
	}
	pki := filepath.Join(*dir, "pki")
	ca, err := loadOrCreateCA(pki, "ca")
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeconfig: %v\n", err)
		return 1
	}
	var orgs []string
	if *groups != "" {
		orgs = strings.Split(*groups, ",")
	}
	name := "user-" + strings.NewReplacer(":", "_", "/", "_").Replace(*user)
	if err := ca.issue(pki, name, pkix.Name{CommonName: *user, Organization: orgs}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		fmt.Fprintf(os.Stderr, "kubeconfig: %v\n", err)
		return 1
	}
	if err := writeKubeconfig(*out, strings.TrimSpace(string(server)), filepath.Join(pki, "ca.crt"),
		filepath.Join(pki, name+".crt"), filepath.Join(pki, name+".key"), *user); err != nil {
		fmt.Fprintf(os.Stderr, "kubeconfig: %v\n", err)
		return 1
	}
	return 0
}
