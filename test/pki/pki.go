// Package pki generates the keys, certificate requests, CSR objects and CAs
// that every test, the demo and the benchmark use, with real randomness from
// crypto/rand. Functions return errors; the Must variants fail a test.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Key algorithms NewKey knows.
const (
	ECDSAP256 = "ecdsa-p256"
	ECDSAP384 = "ecdsa-p384"
	ECDSAP521 = "ecdsa-p521"
	ECDSAP224 = "ecdsa-p224"
	RSA1024   = "rsa-1024"
	RSA2048   = "rsa-2048"
	Ed25519   = "ed25519"
)

// NewKey returns a fresh private key of the given algorithm.
func NewKey(alg string) (crypto.Signer, error) {
	switch alg {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case ECDSAP521:
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case ECDSAP224:
		return ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case RSA1024:
		return rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // weak on purpose: tests that it is refused
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown key algorithm %q", alg)
}

// MustKey is NewKey for tests.
func MustKey(t testing.TB, alg string) crypto.Signer {
	t.Helper()
	k, err := NewKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Request describes an x509 certificate request.
type Request struct {
	Subject        pkix.Name
	DNSNames       []string
	IPAddresses    []net.IP
	EmailAddresses []string
	URIs           []*url.URL
	// Key signs the request; nil means a fresh ECDSA P-256 key, as a kubelet
	// makes for every request.
	Key crypto.Signer
}

// PEM returns the request, signed, as a PEM block.
func (r Request) PEM() ([]byte, error) {
	key := r.Key
	if key == nil {
		var err error
		if key, err = NewKey(ECDSAP256); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        r.Subject,
		DNSNames:       r.DNSNames,
		IPAddresses:    r.IPAddresses,
		EmailAddresses: r.EmailAddresses,
		URIs:           r.URIs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CSR describes a CertificateSigningRequest object as the API server stores
// it, with spec.username and groups as the authenticator set them.
type CSR struct {
	Name              string
	SignerName        string
	Username          string
	UID               string
	Groups            []string
	Extra             map[string]certificatesv1.ExtraValue
	Usages            []certificatesv1.KeyUsage
	ExpirationSeconds *int32
	Created           time.Time
	Request           Request
	// RequestPEM, when set, is used as spec.request instead of Request.
	RequestPEM []byte
}

// Object builds the CSR object.
func (c CSR) Object() (*certificatesv1.CertificateSigningRequest, error) {
	req := c.RequestPEM
	if req == nil {
		var err error
		if req, err = c.Request.PEM(); err != nil {
			return nil, err
		}
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: c.Name, CreationTimestamp: metav1.NewTime(c.Created)},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           req,
			SignerName:        c.SignerName,
			Username:          c.Username,
			UID:               c.UID,
			Groups:            c.Groups,
			Extra:             c.Extra,
			Usages:            c.Usages,
			ExpirationSeconds: c.ExpirationSeconds,
		},
	}, nil
}

// MustObject is Object for tests.
func MustObject(t testing.TB, c CSR) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	o, err := c.Object()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// Kubelet identities and usages, as the kubelet and the API server set them.
var (
	NodeGroups      = []string{"system:nodes", "system:authenticated"}
	BootstrapGroups = []string{"system:bootstrappers", "system:authenticated"}
	ClientUsages    = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	ServingUsages   = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
)

// NodeSubject is the subject a kubelet puts in its requests.
func NodeSubject(node string) pkix.Name {
	return pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}
}

// ClientRenewal is a kubelet client certificate renewal by the node itself.
func ClientRenewal(node string) CSR {
	return CSR{
		Name:       "csr-" + node + "-client",
		SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
		Username:   "system:node:" + node,
		Groups:     NodeGroups,
		Usages:     ClientUsages,
		Request:    Request{Subject: NodeSubject(node)},
	}
}

// ClientBootstrap is a kubelet's first client certificate request, made with
// bootstrap token tokenID.
func ClientBootstrap(node, tokenID string) CSR {
	c := ClientRenewal(node)
	c.Name = "csr-" + node + "-bootstrap"
	c.Username = "system:bootstrap:" + tokenID
	c.Groups = BootstrapGroups
	return c
}

// Serving is a kubelet serving certificate request for the given names and
// addresses.
func Serving(node string, dnsNames []string, ips []net.IP) CSR {
	return CSR{
		Name:       "csr-" + node + "-serving",
		SignerName: certificatesv1.KubeletServingSignerName,
		Username:   "system:node:" + node,
		Groups:     NodeGroups,
		Usages:     ServingUsages,
		Request:    Request{Subject: NodeSubject(node), DNSNames: dnsNames, IPAddresses: ips},
	}
}

// CA is a certificate authority for tests: a self-signed (or intermediate)
// certificate and its key, in parsed and PEM form.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// CAOptions describe a CA to make.
type CAOptions struct {
	CommonName string
	KeyAlg     string    // default ECDSAP256
	NotBefore  time.Time // default Now() - 1h
	NotAfter   time.Time // default Now() + 10 years
	// Parent signs the new CA; nil makes it self-signed.
	Parent *CA
}

// NewCA makes a CA certificate and key.
func NewCA(o CAOptions) (*CA, error) {
	if o.CommonName == "" {
		o.CommonName = "kubelet-csr-controller test CA"
	}
	if o.KeyAlg == "" {
		o.KeyAlg = ECDSAP256
	}
	now := Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(10 * 365 * 24 * time.Hour)
	}
	key, err := NewKey(o.KeyAlg)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	parent, parentKey := tmpl, key
	if o.Parent != nil {
		parent, parentKey = o.Parent.Cert, o.Parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// MustCA is NewCA for tests.
func MustCA(t testing.TB, o CAOptions) *CA {
	t.Helper()
	ca, err := NewCA(o)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// rawRequest is a CertificationRequest with its parts left encoded.
type rawRequest struct {
	Info      asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

func decodeRequest(reqPEM []byte) (*rawRequest, error) {
	block, _ := pem.Decode(reqPEM)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	var csr rawRequest
	if _, err := asn1.Unmarshal(block.Bytes, &csr); err != nil {
		return nil, err
	}
	return &csr, nil
}

// SignedByOtherKey returns reqPEM with its signature replaced by one made
// with other: the request still parses but its signature does not verify.
func SignedByOtherKey(reqPEM []byte, other crypto.Signer) ([]byte, error) {
	csr, err := decodeRequest(reqPEM)
	if err != nil {
		return nil, err
	}
	// Sign the same content with the other key, then keep the original
	// algorithm identifier so that only the key differs.
	sum := sha256.Sum256(csr.Info.FullBytes)
	sig, err := other.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	csr.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	out, err := asn1.Marshal(*csr)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: out}), nil
}

// ClientCert issues a client certificate for user (CN) in groups (O), signed
// by ca, as the API server's client certificate authenticator reads it. It
// returns the certificate and key in PEM.
func (ca *CA) ClientCert(user string, groups []string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	now := Now()
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(lifetime),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ServingCert issues a kubelet serving certificate with subject cn
// (O system:nodes) and the SANs given, valid from notBefore to notAfter,
// and returns it with its key for a TLS server.
func (ca *CA) ServingCert(cn string, dnsNames []string, ips []net.IP, notBefore, notAfter time.Time) (tls.Certificate, error) {
	certPEM, keyPEM, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// issue signs tmpl (a digital signature leaf with a fresh P-256 key and a
// random serial) and returns the certificate and key in PEM.
func (ca *CA) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey(ECDSAP256)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage, tmpl.BasicConstraintsValid = x509.KeyUsageDigitalSignature, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// WithPublicKey returns reqPEM carrying pub instead of its own public key,
// with its signature left as it was (so it no longer verifies): a request
// whose key rules must be applied before the costly signature check, such
// as an RSA modulus far too large to verify cheaply.
func WithPublicKey(reqPEM []byte, pub any) ([]byte, error) {
	csr, err := decodeRequest(reqPEM)
	if err != nil {
		return nil, err
	}
	// CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, [0] attributes }
	var fields []asn1.RawValue
	for rest := csr.Info.Bytes; len(rest) > 0; {
		var f asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &f); err != nil {
			return nil, err
		}
		fields = append(fields, f)
	}
	if len(fields) < 3 {
		return nil, fmt.Errorf("certification request info has %d fields", len(fields))
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fields[2] = asn1.RawValue{FullBytes: spki}
	var body []byte
	for _, f := range fields {
		body = append(body, f.FullBytes...)
	}
	info, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	if err != nil {
		return nil, err
	}
	csr.Info = asn1.RawValue{FullBytes: info}
	out, err := asn1.Marshal(*csr)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: out}), nil
}

// HugeRSAKey is an RSA public key with a modulus of bits bits (odd, not a
// product of two primes: nothing is ever signed with it).
func HugeRSAKey(bits int) (*rsa.PublicKey, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		return nil, err
	}
	n.SetBit(n, bits-1, 1)
	n.SetBit(n, 0, 1)
	return &rsa.PublicKey{N: n, E: 65537}, nil
}

// IPs parses addresses for a request's IP SANs; a string that is not an
// address panics (a test's own typo).
func IPs(s ...string) []net.IP {
	out := make([]net.IP, len(s))
	for i, a := range s {
		if out[i] = net.ParseIP(a); out[i] == nil {
			panic("pki.IPs: not an IP address: " + a)
		}
	}
	return out
}

// Name is a subject with a CommonName and Organizations.
func Name(cn string, o ...string) pkix.Name { return pkix.Name{CommonName: cn, Organization: o} }

// CheapHugeRSAKey makes a private RSA key of bits bits from many small
// primes: seconds to make and to sign with, where a two-prime key of that
// size takes minutes. It is how an attacker makes a validly signed request
// whose verification costs the verifier the square of the modulus.
func CheapHugeRSAKey(bits int) (*rsa.PrivateKey, error) {
	//nolint:staticcheck // multi-prime on purpose: the cheap way to a huge key
	return rsa.GenerateMultiPrimeKey(rand.Reader, max(2, bits/256), bits)
}

// CommonNames are the certificates' subject common names, in order: a
// readable form of a bundle in test messages.
func CommonNames(certs []*x509.Certificate) []string {
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}
