package signer

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"time"
)

// shortLived is the lifetime below which NotAfter is not backdated, as in
// Kubernetes: backdating 5 minutes is about 1% of 8 hours.
const shortLived = 8 * time.Hour

// Lifetime is a certificate's validity period.
type Lifetime struct {
	NotBefore, NotAfter time.Time
	// Requested is the lifetime asked for after clamping, before the jitter
	// and the CA cap.
	Requested time.Duration
	// Jitter is how much the signer's jitter took off Requested.
	Jitter time.Duration
	// Capped is set when the CA's own expiry shortened the certificate.
	Capped bool
}

// ComputeLifetime decides the validity of a certificate for subject (the
// request's CommonName) issued at now:
//
//   - the lifetime is the signer's Duration, or spec.expirationSeconds
//     clamped to [MinDuration, Duration];
//   - Jitter shortens it by the subject's own fraction of Jitter (see
//     JitterFraction), never below MinDuration, so that nodes that joined
//     together do not all renew in the same minute;
//   - NotBefore is now - Backdate;
//   - NotAfter is now + lifetime, less Backdate when the lifetime is 8h or
//     more (so that NotAfter - NotBefore is the lifetime), as Kubernetes does;
//   - NotAfter never passes the CA's NotAfter.
//
// A CA that has expired or is not valid yet is an error (ErrCAExpired,
// ErrCANotYetValid).
func ComputeLifetime(now time.Time, expirationSeconds *int32, subject string, c Config, ca *CA) (Lifetime, error) {
	if err := ca.Usable(now); err != nil {
		return Lifetime{}, err
	}
	requested := c.Duration
	if expirationSeconds != nil {
		requested = min(max(time.Duration(*expirationSeconds)*time.Second, c.MinDuration), c.Duration)
	}
	ttl := requested
	if c.Jitter > 0 {
		// Whole seconds: a certificate's times have no finer grain, and a
		// retry must get the very same lifetime.
		cut := (time.Duration(float64(requested)*c.Jitter*JitterFraction(subject, c.Name)) / time.Second) * time.Second
		ttl = max(requested-cut, min(c.MinDuration, requested))
	}
	l := Lifetime{NotBefore: now.Add(-c.Backdate), NotAfter: now.Add(ttl), Requested: requested, Jitter: requested - ttl}
	if ttl >= shortLived {
		l.NotAfter = l.NotAfter.Add(-c.Backdate)
	}
	if caEnd := ca.Cert.NotAfter; l.NotAfter.After(caEnd) {
		l.NotAfter, l.Capped = caEnd, true
	}
	return l, nil
}

// JitterFraction is a fraction in [0, 1) fixed for one node and signer: a
// hash of the node name (taken from a system:node:<name> subject, else the
// subject itself) and the signer name. Every certificate of that node and
// signer gets the same one, a retry included, and different nodes spread
// evenly.
func JitterFraction(subject, signerName string) float64 {
	node := strings.TrimPrefix(subject, "system:node:")
	sum := sha256.Sum256([]byte(signerName + "\x00" + node))
	// The top 53 bits, the precision of a float64, over 2^53.
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
