package signer

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// ValidationError is a request this signer will never sign. It becomes the
// Failed condition with reason SignerValidationFailure; retrying cannot help.
type ValidationError struct{ msg string }

func (e *ValidationError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &ValidationError{msg: fmt.Sprintf(format, args...)}
}

// IsValidationError reports whether err is permanent.
func IsValidationError(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}

// ParseRequest decodes the first PEM block of a CSR's spec.request, as the
// API server does, and checks its signature.
func ParseRequest(pemBytes []byte) (*x509.CertificateRequest, error) {
	req, err := DecodeRequest(pemBytes)
	if err != nil {
		return nil, err
	}
	if err := CheckSignature(req); err != nil {
		return nil, err
	}
	return req, nil
}

// MaxRSABits bounds the RSA keys whose signature the signer checks: the
// cost of a check grows with the square of the modulus, and a request
// approved by someone else has not had its key bounded by this approver.
const MaxRSABits = 16384

// CheckSignature verifies a decoded request's signature; a request that
// does not verify can never be signed.
func CheckSignature(req *x509.CertificateRequest) error {
	if k, ok := req.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() > MaxRSABits {
		return invalid("the request's RSA key has %d bits; this signer verifies at most %d", k.N.BitLen(), MaxRSABits)
	}
	if err := req.CheckSignature(); err != nil {
		return invalid("the request's signature does not verify: %v", err)
	}
	return nil
}

// DecodeRequest is ParseRequest without the signature check, for a caller
// that has verified these exact bytes already. Like the approver, it refuses
// anything before the BEGIN line, white space included: pem.Decode would
// skip it, and what is signed should be what a reviewer read.
func DecodeRequest(pemBytes []byte) (*x509.CertificateRequest, error) {
	if !bytes.HasPrefix(pemBytes, []byte("-----BEGIN ")) {
		return nil, invalid("spec.request must start with its -----BEGIN CERTIFICATE REQUEST----- line")
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, invalid("spec.request does not hold a CERTIFICATE REQUEST PEM block")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalid("spec.request does not parse: %v", err)
	}
	return req, nil
}

// Validate applies the per-signer rules of Kubernetes' signer
// (k8s.io/kubernetes v1.37.2, pkg/controller/certificates/signer and
// pkg/apis/certificates/helpers.go), so that this signer fails exactly what
// Kubernetes' would, with the same messages.
func Validate(signerName string, req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	switch signerName {
	case certificatesv1.KubeletServingSignerName:
		return validateKubeletServing(req, usages)
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		return validateKubeletClient(req, usages)
	case certificatesv1.KubeAPIServerClientSignerName:
		return validateAPIServerClient(usages)
	}
	return invalid("signer %q is not known to this signer", signerName)
}

var (
	kubeletServingUsages      = []string{"digital signature", "key encipherment", "server auth"}
	kubeletServingUsagesNoRSA = []string{"digital signature", "server auth"}
	kubeletClientUsages       = []string{"client auth", "digital signature", "key encipherment"}
	kubeletClientUsagesNoRSA  = []string{"client auth", "digital signature"}
)

func validateKubeletServing(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	if !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return invalid("subject organization is not system:nodes")
	}
	if len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return invalid("DNS or IP subjectAltName is required")
	}
	if len(req.EmailAddresses) > 0 {
		return invalid("Email subjectAltNames are not allowed")
	}
	if len(req.URIs) > 0 {
		return invalid("URI subjectAltNames are not allowed")
	}
	if set := usageSet(usages); !slices.Equal(set, kubeletServingUsages) && !slices.Equal(set, kubeletServingUsagesNoRSA) {
		return invalid("usages did not match %v", kubeletServingUsages)
	}
	if !strings.HasPrefix(req.Subject.CommonName, "system:node:") {
		return invalid("subject common name does not begin with system:node:")
	}
	return nil
}

func validateKubeletClient(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	if !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return invalid("subject organization is not system:nodes")
	}
	if len(req.DNSNames) > 0 {
		return invalid("DNS subjectAltNames are not allowed")
	}
	if len(req.EmailAddresses) > 0 {
		return invalid("Email subjectAltNames are not allowed")
	}
	if len(req.IPAddresses) > 0 {
		return invalid("IP subjectAltNames are not allowed")
	}
	if len(req.URIs) > 0 {
		return invalid("URI subjectAltNames are not allowed")
	}
	if !strings.HasPrefix(req.Subject.CommonName, "system:node:") {
		return invalid("subject common name does not begin with system:node:")
	}
	if set := usageSet(usages); !slices.Equal(set, kubeletClientUsages) && !slices.Equal(set, kubeletClientUsagesNoRSA) {
		return invalid("usages did not match %v", kubeletClientUsages)
	}
	return nil
}

func validateAPIServerClient(usages []certificatesv1.KeyUsage) error {
	hasClientAuth := false
	for _, u := range usages {
		switch u {
		case certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment:
		case certificatesv1.UsageClientAuth:
			hasClientAuth = true
		default:
			return invalid("invalid usage for client certificate: %s", u)
		}
	}
	if !hasClientAuth {
		return invalid("missing required usage for client certificate: %s", certificatesv1.UsageClientAuth)
	}
	return nil
}

// usageSet returns the distinct usages, sorted, to compare as sets.
func usageSet(usages []certificatesv1.KeyUsage) []string {
	out := make([]string, 0, len(usages))
	for _, u := range usages {
		if !slices.Contains(out, string(u)) {
			out = append(out, string(u))
		}
	}
	sort.Strings(out)
	return out
}
