package signer_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func mustCA(t *testing.T, ca *pki.CA, issuers ...*pki.CA) *signer.CA {
	t.Helper()
	certs := append([]byte{}, ca.CertPEM...)
	for _, i := range issuers {
		certs = append(certs, i.CertPEM...)
	}
	c, err := signer.ParseCA(certs, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	kubeletServing = signer.Config{Name: certificatesv1.KubeletServingSignerName, Duration: 24 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}
	kubeletClient  = signer.Config{Name: certificatesv1.KubeAPIServerClientKubeletSignerName, Duration: 24 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}
	apiClient      = signer.Config{Name: certificatesv1.KubeAPIServerClientSignerName, Duration: 24 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}
)

func TestSignTemplate(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{pki.ECDSAP256, pki.RSA2048, pki.Ed25519} {
		t.Run("a serving certificate from a CA with an "+alg+" key carries exactly the request's identity", func(t *testing.T) {
			t.Parallel()
			root := pki.MustCA(t, pki.CAOptions{KeyAlg: alg})
			ca := mustCA(t, root)
			csr := pki.MustObject(t, pki.Serving("n1", []string{"n1.example.com"}, []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")}))
			issued, err := signer.Sign(ca, csr, kubeletServing, now)
			if err != nil {
				t.Fatal(err)
			}
			c := issued.Cert
			req, _ := pem.Decode(csr.Spec.Request)
			x, err := x509.ParseCertificateRequest(req.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(x.Subject.String(), c.Subject.String()); diff != "" {
				t.Errorf("subject (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"n1.example.com"}, c.DNSNames); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || !c.IPAddresses[1].Equal(net.ParseIP("2001:db8::1")) {
				t.Errorf("IP addresses = %v", c.IPAddresses)
			}
			if c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("want CA:FALSE with basic constraints, got IsCA=%v valid=%v", c.IsCA, c.BasicConstraintsValid)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage = %v, want digital signature only", c.KeyUsage)
			}
			if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, c.ExtKeyUsage); diff != "" {
				t.Errorf("ext key usage (-want +got):\n%s", diff)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v should be positive and at most 128 bits", c.SerialNumber)
			}
			if !c.NotBefore.Equal(now.Add(-5*time.Minute)) || !c.NotAfter.Equal(now.Add(24*time.Hour-5*time.Minute)) {
				t.Errorf("validity %v..%v", c.NotBefore, c.NotAfter)
			}
			if len(c.SubjectKeyId) != 20 || !bytes.Equal(c.AuthorityKeyId, root.Cert.SubjectKeyId) {
				t.Errorf("SKID %x (want 20 bytes), AKI %x want %x", c.SubjectKeyId, c.AuthorityKeyId, root.Cert.SubjectKeyId)
			}
			if !bytes.Equal(c.RawSubjectPublicKeyInfo, x.RawSubjectPublicKeyInfo) {
				t.Errorf("the certificate must carry the request's public key")
			}
			pool := x509.NewCertPool()
			pool.AddCert(root.Cert)
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("the certificate must verify against the CA: %v", err)
			}
			if n := bytes.Count(issued.PEM, []byte("BEGIN CERTIFICATE")); n != 1 {
				t.Errorf("status.certificate holds %d certificates, want the leaf only", n)
			}
		})
	}
}

func TestSignDropsRequestedExtensions(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, pki.MustCA(t, pki.CAOptions{}))
	// A request asking for CA:TRUE through an extension must not get it.
	key := pki.MustKey(t, pki.ECDSAP256)
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pki.NodeSubject("n1"),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	c := pki.ClientRenewal("n1")
	c.RequestPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	issued, err := signer.Sign(ca, pki.MustObject(t, c), kubeletClient, now)
	if err != nil {
		t.Fatal(err)
	}
	if issued.Cert.IsCA {
		t.Fatal("a requested CA:TRUE extension made it into the certificate")
	}
	for _, e := range issued.Cert.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) && bytes.Equal(e.Value, bc) {
			t.Fatal("the requested basic constraints extension was copied")
		}
	}
}

func TestSignIncludeChain(t *testing.T) {
	t.Parallel()
	root := pki.MustCA(t, pki.CAOptions{CommonName: "root"})
	inter := pki.MustCA(t, pki.CAOptions{CommonName: "intermediate", Parent: root})
	ca := mustCA(t, inter, root)
	cfg := kubeletClient
	cfg.IncludeChain = true
	issued, err := signer.Sign(ca, pki.MustObject(t, pki.ClientRenewal("n1")), cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := issued.PEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || certs[1].Subject.CommonName != "intermediate" {
		t.Fatalf("want leaf + intermediate (the root is a trust anchor and is not sent), got %d certificates", len(certs))
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf + chain must verify against the root: %v", err)
	}
	cfg.IncludeChain = false
	issued, err = signer.Sign(ca, pki.MustObject(t, pki.ClientRenewal("n1")), cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(issued.PEM, []byte("BEGIN CERTIFICATE")); n != 1 {
		t.Errorf("without includeChain want the leaf only, got %d certificates", n)
	}
}

func TestSignAKIWithoutCASKID(t *testing.T) {
	t.Parallel()
	// A CA certificate made without a subject key identifier (old tooling).
	root := pki.MustCA(t, pki.CAOptions{})
	ca := mustCA(t, root)
	ca.Cert.SubjectKeyId = nil
	issued, err := signer.Sign(ca, pki.MustObject(t, pki.ClientRenewal("n1")), kubeletClient, now)
	if err != nil {
		t.Fatal(err)
	}
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(root.Cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	if !bytes.Equal(issued.Cert.AuthorityKeyId, sum[:20]) {
		t.Errorf("AKI = %x, want %x", issued.Cert.AuthorityKeyId, sum[:20])
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	withReq := func(c pki.CSR, f func(*pki.Request)) pki.CSR { f(&c.Request); return c }
	clientPEM, err := pki.ClientRenewal("n1").Request.PEM()
	if err != nil {
		t.Fatal(err)
	}
	withUsages := func(c pki.CSR, u ...certificatesv1.KeyUsage) pki.CSR { c.Usages = u; return c }
	tests := []struct {
		name    string
		cfg     signer.Config
		csr     pki.CSR
		wantErr string // "" for success
	}{
		{"a kubelet serving request is signed", kubeletServing, pki.Serving("n1", []string{"n1"}, nil), ""},
		{"a serving request with key encipherment is signed", kubeletServing, withUsages(pki.Serving("n1", []string{"n1"}, nil), "digital signature", "key encipherment", "server auth"), ""},
		{"a serving request with the wrong organization fails", kubeletServing, withReq(pki.Serving("n1", []string{"n1"}, nil), func(r *pki.Request) { r.Subject.Organization = []string{"system:masters"} }), "subject organization is not system:nodes"},
		{"a serving request without SANs fails", kubeletServing, pki.Serving("n1", nil, nil), "DNS or IP subjectAltName is required"},
		{"a serving request with an email SAN fails", kubeletServing, withReq(pki.Serving("n1", []string{"n1"}, nil), func(r *pki.Request) { r.EmailAddresses = []string{"a@b.c"} }), "Email subjectAltNames are not allowed"},
		{"a serving request with a URI SAN fails", kubeletServing, withReq(pki.Serving("n1", []string{"n1"}, nil), func(r *pki.Request) { r.URIs = []*url.URL{{Scheme: "x", Host: "y"}} }), "URI subjectAltNames are not allowed"},
		{"a serving request with client auth fails", kubeletServing, withUsages(pki.Serving("n1", []string{"n1"}, nil), pki.ClientUsages...), "usages did not match"},
		{"a serving request whose CN is not a node fails", kubeletServing, withReq(pki.Serving("n1", []string{"n1"}, nil), func(r *pki.Request) { r.Subject.CommonName = "n1" }), "subject common name does not begin with system:node:"},
		{"a kubelet client request is signed", kubeletClient, pki.ClientRenewal("n1"), ""},
		{"a client request with a DNS SAN fails", kubeletClient, withReq(pki.ClientRenewal("n1"), func(r *pki.Request) { r.DNSNames = []string{"n1"} }), "DNS subjectAltNames are not allowed"},
		{"a client request with an IP SAN fails", kubeletClient, withReq(pki.ClientRenewal("n1"), func(r *pki.Request) { r.IPAddresses = []net.IP{net.ParseIP("10.0.0.1")} }), "IP subjectAltNames are not allowed"},
		{"a client request with server auth fails", kubeletClient, withUsages(pki.ClientRenewal("n1"), pki.ServingUsages...), "usages did not match"},
		{"a client request with system:masters fails", kubeletClient, withReq(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.Organization = []string{"system:masters"} }), "subject organization is not system:nodes"},
		{"an API server client request with client auth is signed", apiClient, withReq(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.CommonName = "alice" }), ""},
		{"an API server client request with server auth fails", apiClient, withUsages(pki.ClientRenewal("n1"), "client auth", "server auth"), "invalid usage for client certificate: server auth"},
		{"an API server client request without client auth fails", apiClient, withUsages(pki.ClientRenewal("n1"), "digital signature"), "missing required usage for client certificate: client auth"},
		{"an unparseable request fails", kubeletClient, pki.CSR{Name: "x", Usages: pki.ClientUsages, RequestPEM: []byte("junk")}, "must start with its -----BEGIN CERTIFICATE REQUEST----- line"},
		{"a request with white space before its BEGIN line fails, as in the approver", kubeletClient, pki.CSR{Name: "x", Usages: pki.ClientUsages, RequestPEM: append([]byte(" \n"), clientPEM...)}, "must start with its -----BEGIN CERTIFICATE REQUEST----- line"},
		{"a block of another type fails", kubeletClient, pki.CSR{Name: "x", Usages: pki.ClientUsages, RequestPEM: []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")}, "does not hold a CERTIFICATE REQUEST"},
	}
	ca := mustCA(t, pki.MustCA(t, pki.CAOptions{}))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := signer.Sign(ca, pki.MustObject(t, tc.csr), tc.cfg, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
			if !signer.IsValidationError(err) {
				t.Errorf("%v should be a permanent validation error", err)
			}
		})
	}
}

func TestUnknownUsageIsPermanent(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, pki.MustCA(t, pki.CAOptions{}))
	c := pki.ClientRenewal("n1")
	c.Usages = []certificatesv1.KeyUsage{"digital signature", "key encipherment", "client auth", "time travel"}
	_, err := signer.Sign(ca, pki.MustObject(t, c), apiClient, now)
	if err == nil || !signer.IsValidationError(err) || !strings.Contains(err.Error(), "time travel") {
		t.Fatalf("want a permanent error naming the usage, got %v", err)
	}
}

func TestExpiredCAIsNotPermanent(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}))
	_, err := signer.Sign(ca, pki.MustObject(t, pki.ClientRenewal("n1")), kubeletClient, now)
	if err == nil || signer.IsValidationError(err) {
		t.Fatalf("an expired CA must be a retryable error, got %v", err)
	}
}
