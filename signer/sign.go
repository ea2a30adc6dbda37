package signer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// Issued is a signed certificate.
type Issued struct {
	Cert *x509.Certificate
	// PEM is what goes into status.certificate: the leaf, then the chain when
	// IncludeChain is set.
	PEM      []byte
	Lifetime Lifetime
}

// Sign issues a certificate for an approved CSR: it validates the request for
// the signer, computes the lifetime and builds the template as Kubernetes
// does (random 128-bit serial, subject and SANs from the request, requested
// extensions dropped, key usages only from spec.usages, CA:FALSE), plus
// subject and authority key identifiers.
//
// A *ValidationError means the CSR can never be signed; any other error
// (an expired CA) may heal and is worth retrying.
func Sign(ca *CA, csr *certificatesv1.CertificateSigningRequest, c Config, now time.Time) (*Issued, error) {
	req, err := ParseRequest(csr.Spec.Request)
	if err != nil {
		return nil, err
	}
	return SignParsed(ca, csr, req, c, now)
}

// SignParsed is Sign for a request already parsed from csr's spec.request
// and whose signature the caller has checked.
func SignParsed(ca *CA, csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest, c Config, now time.Time) (*Issued, error) {
	if err := Validate(c.Name, req, csr.Spec.Usages); err != nil {
		return nil, err
	}
	keyUsage, extKeyUsage, err := keyUsages(csr.Spec.Usages)
	if err != nil {
		return nil, err
	}
	life, err := ComputeLifetime(now, csr.Spec.ExpirationSeconds, req.Subject.CommonName, c, ca)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(req.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               req.Subject,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		EmailAddresses:        req.EmailAddresses,
		URIs:                  req.URIs,
		NotBefore:             life.NotBefore,
		NotAfter:              life.NotAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           extKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
	}
	if len(ca.Cert.SubjectKeyId) == 0 {
		// Go takes the AKI from the parent's SKID; an old CA without one gets
		// an AKI computed from its key.
		if tmpl.AuthorityKeyId, err = keyID(ca.Cert.RawSubjectPublicKeyInfo); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, req.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if c.IncludeChain {
		out = append(out, ca.chainPEM...)
	}
	return &Issued{Cert: cert, PEM: out, Lifetime: life}, nil
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// newSerial returns a random positive serial of up to 128 bits.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// keyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bit string.
func keyID(spki []byte) ([]byte, error) {
	var info struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

var keyUsageOf = map[certificatesv1.KeyUsage]x509.KeyUsage{
	certificatesv1.UsageSigning:           x509.KeyUsageDigitalSignature,
	certificatesv1.UsageDigitalSignature:  x509.KeyUsageDigitalSignature,
	certificatesv1.UsageContentCommitment: x509.KeyUsageContentCommitment,
	certificatesv1.UsageKeyEncipherment:   x509.KeyUsageKeyEncipherment,
	certificatesv1.UsageKeyAgreement:      x509.KeyUsageKeyAgreement,
	certificatesv1.UsageDataEncipherment:  x509.KeyUsageDataEncipherment,
	certificatesv1.UsageCertSign:          x509.KeyUsageCertSign,
	certificatesv1.UsageCRLSign:           x509.KeyUsageCRLSign,
	certificatesv1.UsageEncipherOnly:      x509.KeyUsageEncipherOnly,
	certificatesv1.UsageDecipherOnly:      x509.KeyUsageDecipherOnly,
}

var extKeyUsageOf = map[certificatesv1.KeyUsage]x509.ExtKeyUsage{
	certificatesv1.UsageAny:             x509.ExtKeyUsageAny,
	certificatesv1.UsageServerAuth:      x509.ExtKeyUsageServerAuth,
	certificatesv1.UsageClientAuth:      x509.ExtKeyUsageClientAuth,
	certificatesv1.UsageCodeSigning:     x509.ExtKeyUsageCodeSigning,
	certificatesv1.UsageEmailProtection: x509.ExtKeyUsageEmailProtection,
	certificatesv1.UsageSMIME:           x509.ExtKeyUsageEmailProtection,
	certificatesv1.UsageIPsecEndSystem:  x509.ExtKeyUsageIPSECEndSystem,
	certificatesv1.UsageIPsecTunnel:     x509.ExtKeyUsageIPSECTunnel,
	certificatesv1.UsageIPsecUser:       x509.ExtKeyUsageIPSECUser,
	certificatesv1.UsageTimestamping:    x509.ExtKeyUsageTimeStamping,
	certificatesv1.UsageOCSPSigning:     x509.ExtKeyUsageOCSPSigning,
	certificatesv1.UsageMicrosoftSGC:    x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	certificatesv1.UsageNetscapeSGC:     x509.ExtKeyUsageNetscapeServerGatedCrypto,
}

// keyUsages translates spec.usages (the mapping of Kubernetes'
// authority.keyUsagesFromStrings, k8s.io/kubernetes v1.37.2). An unknown
// usage can never be signed.
func keyUsages(usages []certificatesv1.KeyUsage) (x509.KeyUsage, []x509.ExtKeyUsage, error) {
	var ku x509.KeyUsage
	var eku []x509.ExtKeyUsage
	var unknown []string
	for _, u := range usages {
		if v, ok := keyUsageOf[u]; ok {
			ku |= v
		} else if v, ok := extKeyUsageOf[u]; ok {
			if !slices.Contains(eku, v) {
				eku = append(eku, v)
			}
		} else {
			unknown = append(unknown, string(u))
		}
	}
	if len(unknown) > 0 {
		return 0, nil, invalid("unrecognized usage values: %q", unknown)
	}
	slices.Sort(eku)
	return ku, eku, nil
}
