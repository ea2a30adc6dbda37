package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// CA is a loaded certificate authority: the signing certificate, the
// certificates that follow it in the file (its issuers), and its key.
type CA struct {
	Cert *x509.Certificate
	// Issuers are the certificates after Cert in the file, each issuing the
	// one before it.
	Issuers []*x509.Certificate
	Key     crypto.Signer
	// Next are CA certificates published beside this one that never sign:
	// the next CA of a rotation, read from the optional trust file.
	Next []*x509.Certificate
	// chainPEM is what IncludeChain appends to a leaf: Cert and Issuers, less
	// a self-signed root (a trust anchor is not sent by the holder).
	chainPEM []byte
	// digest identifies the files' content, to tell a real change from a
	// touch.
	digest [sha256.Size]byte
}

// LoadCA reads a CA from a PEM certificate file and a PEM key file.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile) //nolint:gosec // operator-configured path
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile) //nolint:gosec // operator-configured path
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	return ParseCA(certPEM, keyPEM)
}

// ParseCA parses a CA certificate (optionally followed by its issuers) and
// its private key, and checks that they belong together and can sign.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	var certs []*x509.Certificate
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA certificate file holds a %q PEM block; want only CERTIFICATE blocks", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("CA certificate file holds no CERTIFICATE PEM block")
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: certs[0], Issuers: certs[1:], Key: key}
	if err := ca.check(); err != nil {
		return nil, err
	}
	chain := certs
	if last := chain[len(chain)-1]; isSelfSigned(last) {
		chain = chain[:len(chain)-1]
	}
	for _, c := range chain {
		ca.chainPEM = append(ca.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	ca.digest = sha256.Sum256(append(append([]byte{}, certPEM...), keyPEM...))
	return ca, nil
}

func (ca *CA) check() error {
	c := ca.Cert
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("certificate %q is not a CA (basic constraints CA:TRUE missing)", c.Subject)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q may not sign certificates (key usage lacks certSign)", c.Subject)
	}
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.Key.Public()) {
		return fmt.Errorf("the CA key does not match certificate %q", c.Subject)
	}
	prev := c
	for i, issuer := range ca.Issuers {
		if err := prev.CheckSignatureFrom(issuer); err != nil {
			return fmt.Errorf("certificate %d in the CA file (%q) did not issue the one before it (%q): %w", i+2, issuer.Subject, prev.Subject, err)
		}
		prev = issuer
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// parseKey reads a PKCS#8, PKCS#1 RSA or SEC 1 EC private key.
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("CA key file holds no PEM block")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("CA key file holds a %q PEM block; want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("CA key of type %T is not supported; use RSA, ECDSA or Ed25519", key)
}

// ParseTrust parses a trust file: CA certificates to publish beside the
// signing CA (the next CA of a rotation). Each must be a CA, as a
// ClusterTrustBundle requires; an empty file holds none.
func ParseTrust(trustPEM []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := trustPEM; len(bytes.TrimSpace(rest)) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("trust file: data after certificate %d is not PEM", len(certs))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("trust file holds a %q PEM block; want only CERTIFICATE blocks", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust file: parse certificate %d: %w", len(certs)+1, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("trust file: certificate %d (%q) is not a CA (basic constraints CA:TRUE missing)", len(certs)+1, c.Subject)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// Anchors are the certificates a verifier of this CA's certificates should
// trust: the top of the signing chain (its root, or the topmost certificate
// of the file when the root is kept elsewhere), then the Next ones, each
// once.
func (ca *CA) Anchors() []*x509.Certificate {
	top := ca.Cert
	if n := len(ca.Issuers); n > 0 {
		top = ca.Issuers[n-1]
	}
	out := []*x509.Certificate{top}
	for _, c := range ca.Next {
		if !slices.ContainsFunc(out, c.Equal) {
			out = append(out, c)
		}
	}
	return out
}

// ErrCAExpired and ErrCANotYetValid mean the CA cannot sign now; they are
// retried, so that fixing the files recovers without a restart.
var (
	ErrCAExpired     = errors.New("the CA certificate has expired")
	ErrCANotYetValid = errors.New("the CA certificate is not valid yet")
)

// Usable reports whether the CA can sign at now.
func (ca *CA) Usable(now time.Time) error {
	if !now.Before(ca.Cert.NotAfter) {
		return fmt.Errorf("%w (NotAfter %s)", ErrCAExpired, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(ca.Cert.NotBefore) {
		return fmt.Errorf("%w (NotBefore %s)", ErrCANotYetValid, ca.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}
