package approver

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// NodeUserPrefix starts every node's user name and certificate CommonName.
const NodeUserPrefix = "system:node:"

// NodesGroup is the group every node belongs to, and the only Organization a
// kubelet certificate may carry.
const NodesGroup = "system:nodes"

// Kind is what sort of kubelet request a CSR is, decided by its signer.
type Kind int

const (
	// KindOther is a CSR for a signer this approver never touches.
	KindOther Kind = iota
	// KindNodeClient is a kubelet client certificate request
	// (kubernetes.io/kube-apiserver-client-kubelet), bootstrap or renewal.
	KindNodeClient
	// KindServing is a kubelet serving certificate request
	// (kubernetes.io/kubelet-serving).
	KindServing
)

func (k Kind) String() string {
	switch k {
	case KindNodeClient:
		return "node-client"
	case KindServing:
		return "kubelet-serving"
	default:
		return "other"
	}
}

// KindOf classifies a signer name.
func KindOf(signerName string) Kind {
	switch signerName {
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		return KindNodeClient
	case certificatesv1.KubeletServingSignerName:
		return KindServing
	default:
		return KindOther
	}
}

// MaxRequestBytes bounds spec.request. A kubelet's request is under 1 KiB
// and one with a 16384-bit RSA key about 5 KiB; anything larger is refused
// before it is parsed.
const MaxRequestBytes = 64 << 10

// Request is a CSR read once: the parsed x509 request and what it claims.
// Reading never fails; a request that cannot be parsed carries the reason in
// Problem and is denied by Evaluate. The signature is checked later, once,
// by the rules, after the cheap ones (the key's size among them): verifying
// costs more than everything else a request needs, and grows with the
// square of an RSA modulus.
type Request struct {
	CSR  *certificatesv1.CertificateSigningRequest
	Kind Kind
	// X509 is nil when the PEM could not be parsed.
	X509 *x509.CertificateRequest
	// Problem says why the request is unusable (reason and message), or is nil.
	Problem *Decision
	// NodeName is the node the CommonName names ("" when the CN is not a
	// node's).
	NodeName string

	// signature is the outcome of the signature check: unchecked, or the
	// error it gave (nil when it verified).
	signatureChecked bool
	signatureErr     error
}

// Read parses csr's request, bounded by MaxRequestBytes. It does not check
// the signature: the rules do, once (see SignatureVerified).
func Read(csr *certificatesv1.CertificateSigningRequest) *Request {
	r := &Request{CSR: csr, Kind: KindOf(csr.Spec.SignerName)}
	if n := len(csr.Spec.Request); n > MaxRequestBytes {
		d := deny(ReasonMalformedRequest, fmt.Sprintf("spec.request is %d bytes; a kubelet certificate request is under %d.", n, MaxRequestBytes))
		r.Problem = &d
		return r
	}
	x, err := ParsePEM(csr.Spec.Request)
	if err != nil {
		d := deny(ReasonMalformedRequest, fmt.Sprintf("spec.request is not a usable certificate request: %v.", err))
		r.Problem = &d
		return r
	}
	r.X509 = x
	r.NodeName = NodeNameFromCN(x.Subject.CommonName)
	return r
}

// MarkSignatureVerified records that the caller has verified these exact
// request bytes before (it remembers them by digest), so that a request
// retried while it waits for facts is verified once, not at every retry.
func (r *Request) MarkSignatureVerified() {
	r.signatureChecked, r.signatureErr = true, nil
}

// SignatureVerified reports whether the signature has been checked and
// verified (by the rules, or as MarkSignatureVerified says).
func (r *Request) SignatureVerified() bool { return r.signatureChecked && r.signatureErr == nil }

// checkSignature verifies the signature at most once per Request.
func (r *Request) checkSignature() error {
	if !r.signatureChecked {
		r.signatureChecked = true
		r.signatureErr = r.X509.CheckSignature()
	}
	return r.signatureErr
}

// ParsePEM decodes a PEM certificate request strictly: exactly one block of
// type CERTIFICATE REQUEST, no headers, nothing before its BEGIN line (not
// even white space) and nothing but white space after its END line. The API
// server only looks at the first block; anything hidden around it is
// refused here so that what is signed is what was reviewed, and the signer
// (signer.DecodeRequest) refuses what precedes the block just the same.
func ParsePEM(data []byte) (*x509.CertificateRequest, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("it is empty")
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN ")) {
		return nil, errors.New("data precedes the PEM block (it must start with its -----BEGIN line)")
	}
	if n := bytes.Count(data, []byte("-----BEGIN ")); n != 1 {
		return nil, fmt.Errorf("it holds %d PEM blocks, want exactly one", n)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("the PEM block does not decode")
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("the PEM block type is %q, want \"CERTIFICATE REQUEST\"", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("the PEM block has headers")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data follows the PEM block")
	}
	x, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	return x, nil
}

// NodeNameFromCN returns the node name in a "system:node:<name>" CommonName,
// or "" when cn is not of that form or the name is not a valid Node name.
func NodeNameFromCN(cn string) string {
	name, ok := strings.CutPrefix(cn, NodeUserPrefix)
	if !ok || len(validation.IsDNS1123Subdomain(name)) != 0 {
		return ""
	}
	return name
}

// CanonicalIP returns ip as an address that compares equal however it was
// spelled: IPv4-mapped IPv6 addresses become IPv4, zones are refused.
func CanonicalIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// ParseCanonicalIP parses s (as found in a Node's status.addresses) into its
// canonical form. s is taken as written: an address with white space around
// it is not one a kubelet writes, so it is no IP and matches nothing.
func ParseCanonicalIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// CanonicalDNS folds a DNS name for comparison: ASCII lower case, one trailing
// dot removed. DNS is case-insensitive only for ASCII letters (RFC 4343).
func CanonicalDNS(name string) string {
	return strings.TrimSuffix(asciiLower(name), ".")
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// CommonName returns the subject CommonName of a PEM certificate request
// without parsing the rest of it (public key, extensions) or checking its
// signature: cheap enough for cache indexes and queue priorities, which only
// group CSRs. It returns "" for anything it cannot read. Decisions use Read.
func CommonName(pemBytes []byte) string {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return ""
	}
	// CertificationRequest ::= SEQUENCE { certificationRequestInfo, ... }
	// CertificationRequestInfo ::= SEQUENCE { version INTEGER, subject Name, ... }
	var outer, info asn1.RawValue
	if _, err := asn1.Unmarshal(block.Bytes, &outer); err != nil {
		return ""
	}
	if _, err := asn1.Unmarshal(outer.Bytes, &info); err != nil {
		return ""
	}
	var version int
	rest, err := asn1.Unmarshal(info.Bytes, &version)
	if err != nil {
		return ""
	}
	return CommonNameOfName(rest)
}

// CommonNameOfName returns the CommonName of a DER-encoded X.509 Name (a
// request's or a certificate's subject), or "".
func CommonNameOfName(der []byte) string {
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(der, &rdns); err != nil {
		return ""
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdns)
	return name.CommonName
}
