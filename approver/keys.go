package approver

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
)

// checkKey returns a KeyNotAllowed decision when the request's public key is
// not one the policy accepts, or nil. It runs before the signature is
// checked, so that an oversized key costs nothing.
func checkKey(x *x509.CertificateRequest, p KeyPolicy) *Decision {
	var problem string
	switch k := x.PublicKey.(type) {
	case *rsa.PublicKey:
		switch bits := k.N.BitLen(); {
		case bits < p.RSAMinBits:
			problem = fmt.Sprintf("The request's RSA key has %d bits; approver.keys.rsaMinBits requires at least %d.", bits, p.RSAMinBits)
		case p.RSAMaxBits > 0 && bits > p.RSAMaxBits:
			problem = fmt.Sprintf("The request's RSA key has %d bits; approver.keys.rsaMaxBits allows at most %d.", bits, p.RSAMaxBits)
		}
	case *ecdsa.PublicKey:
		if curve := k.Curve.Params().Name; !slices.Contains(p.ECDSACurves, curve) {
			problem = fmt.Sprintf("The request's ECDSA key uses curve %s; approver.keys.ecdsaCurves allows %v.", curve, p.ECDSACurves)
		}
	case ed25519.PublicKey:
		if !p.Ed25519 {
			problem = "The request's key is Ed25519, which approver.keys.ed25519 does not allow."
		}
	default:
		problem = fmt.Sprintf("The request's public key algorithm %s is not supported.", x.PublicKeyAlgorithm)
	}
	if problem == "" {
		return nil
	}
	d := deny(ReasonKeyNotAllowed, problem)
	return &d
}
