package signer

import (
	"time"
)

// shortLived is the lifetime below which NotAfter is not backdated, as in
// Kubernetes: backdating 5 minutes is about 1% of 8 hours.
const shortLived = 8 * time.Hour

// Lifetime is a certificate's validity period.
type Lifetime struct {
	NotBefore, NotAfter time.Time
	// Requested is the lifetime asked for after clamping, before the CA cap.
	Requested time.Duration
	// Capped is set when the CA's own expiry shortened the certificate.
	Capped bool
}

// ComputeLifetime decides the validity of a certificate issued at now:
//
//   - the lifetime is the signer's Duration, or spec.expirationSeconds
//     clamped to [MinDuration, Duration];
//   - NotBefore is now - Backdate;
//   - NotAfter is now + lifetime, less Backdate when the lifetime is 8h or
//     more (so that NotAfter - NotBefore is the lifetime), as Kubernetes does;
//   - NotAfter never passes the CA's NotAfter.
//
// A CA that has expired or is not valid yet is an error (ErrCAExpired,
// ErrCANotYetValid).
func ComputeLifetime(now time.Time, expirationSeconds *int32, c Config, ca *CA) (Lifetime, error) {
	if err := ca.Usable(now); err != nil {
		return Lifetime{}, err
	}
	ttl := c.Duration
	if expirationSeconds != nil {
		ttl = min(max(time.Duration(*expirationSeconds)*time.Second, c.MinDuration), c.Duration)
	}
	l := Lifetime{NotBefore: now.Add(-c.Backdate), NotAfter: now.Add(ttl), Requested: ttl}
	if ttl >= shortLived {
		l.NotAfter = l.NotAfter.Add(-c.Backdate)
	}
	if caEnd := ca.Cert.NotAfter; l.NotAfter.After(caEnd) {
		l.NotAfter, l.Capped = caEnd, true
	}
	return l, nil
}
