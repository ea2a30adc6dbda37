package signer

import (
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// Names of the signers this package knows.
var Names = []string{
	certificatesv1.KubeletServingSignerName,
	certificatesv1.KubeAPIServerClientKubeletSignerName,
	certificatesv1.KubeAPIServerClientSignerName,
}

// Config is one signer's settings, already validated.
type Config struct {
	// Name is the signer name, one of Names.
	Name string
	// CertFile holds the CA certificate, optionally followed by its issuers;
	// KeyFile its private key.
	CertFile, KeyFile string
	// TrustFile optionally holds CA certificates published beside the
	// signing CA that never sign (the next CA of a rotation).
	TrustFile string
	// Duration is the longest lifetime issued, MinDuration the shortest that
	// spec.expirationSeconds can ask for.
	Duration, MinDuration time.Duration
	// Backdate moves NotBefore into the past to absorb clock skew.
	Backdate time.Duration
	// Jitter is the largest fraction (0 to MaxJitter) by which a node's
	// certificates are shortened, each node by its own fixed share of it.
	Jitter float64
	// IncludeChain appends the CA file's issuers to status.certificate.
	IncludeChain bool
	// Bundle, when set, is where the signer's trust anchors are published.
	Bundle *Bundle
}

// Defaults of Config, as Kubernetes signs.
const (
	DefaultDuration    = 365 * 24 * time.Hour
	DefaultMinDuration = 10 * time.Minute
	DefaultBackdate    = 5 * time.Minute
	// MaxJitter bounds Jitter: beyond half a lifetime, spreading renewals
	// costs more in signing than it saves in bursts.
	MaxJitter = 0.5
)
