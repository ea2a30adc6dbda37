package approver

import (
	"net/netip"
	"regexp"
	"time"
)

// OnViolation says what to do with a CSR that a rule rejects, where the
// configuration allows a choice.
type OnViolation string

const (
	// DenyViolation writes the Denied condition (the default): the kubelet
	// stops waiting and the operator sees why.
	DenyViolation OnViolation = "deny"
	// LeavePending leaves the CSR untouched, for clusters that run a second
	// approver which may accept what this one does not.
	LeavePending OnViolation = "leavePending"
)

// Policy is the approver's whole configuration, already validated (the config
// package builds it from the configuration file).
type Policy struct {
	NodeClient NodeClientPolicy
	Serving    ServingPolicy
	Keys       KeyPolicy

	// GracePeriod is how long after a CSR's creation missing facts (a Node not
	// registered yet, no addresses, a DNS timeout, an authorizer error) are
	// waited for before the CSR is denied.
	GracePeriod time.Duration
	// RetryInterval is how long to wait before looking at missing facts again.
	RetryInterval time.Duration

	// MaxPendingPerNode caps, per node and signer, how many older CSRs from the
	// same requester may still be pending when a new one is decided; beyond
	// it the new one is denied as TooManyPending. Zero disables the cap.
	MaxPendingPerNode int
}

// NodeClientPolicy governs kubernetes.io/kube-apiserver-client-kubelet CSRs.
type NodeClientPolicy struct {
	Enabled bool
	// OnInvalid applies to requests that fail the kubelet-client shape.
	OnInvalid OnViolation
	// OnUnauthorized applies when the SubjectAccessReview says no.
	OnUnauthorized OnViolation
	// AllowBootstrapForExistingNode lets a bootstrap identity obtain a client
	// certificate for a Node that is already registered (Kubernetes does).
	AllowBootstrapForExistingNode bool
}

// NonNodeRequesters says what to do with a kubelet-serving CSR filed by an
// identity that is not a node's.
type NonNodeRequesters string

const (
	// DenyNonNodeRequesters denies them (the default): only a node's own
	// kubelet asks for its serving certificate.
	DenyNonNodeRequesters NonNodeRequesters = "deny"
	// IgnoreNonNodeRequesters leaves them alone, without an Event, for the
	// virtual kubelets and charts that use this signer with an identity of
	// their own and an approver of their own.
	IgnoreNonNodeRequesters NonNodeRequesters = "ignore"
)

// ServingPolicy governs kubernetes.io/kubelet-serving CSRs.
type ServingPolicy struct {
	Enabled bool
	// OnInvalid applies to requests that break a rule of their own (shape,
	// names, addresses), for clusters with a second approver.
	OnInvalid OnViolation
	// NonNodeRequesters applies to requests from identities that are not
	// nodes.
	NonNodeRequesters NonNodeRequesters
	// RequireIP denies requests without an IP address: since Kubernetes 1.31
	// a kubelet asks for a serving certificate only once it has one.
	RequireIP bool
	// MaxSANs bounds the number of DNS and IP SANs a request may carry.
	MaxSANs int
	// ClusterDomain is the cluster's service DNS domain; names under it are
	// service names and never belong to a node.
	ClusterDomain string

	// Names and addresses beyond the Node's status.addresses.
	DNSSuffixes []string         // canonical, without leading dot: "nodes.example.com"
	DNSPatterns []*regexp.Regexp // anchored by the config package
	IPPrefixes  []netip.Prefix
	// RequiredPrefixes, when set, confine every IP address of a request:
	// each must lie in one of them, whoever lists it.
	RequiredPrefixes []netip.Prefix
	// ResolveDNS requires DNS names admitted through DNSSuffixes or
	// DNSPatterns to resolve to one of the Node's IP addresses.
	ResolveDNS bool

	// DeniedNames and DeniedPrefixes are never approved, whoever lists them:
	// the API server's own names and addresses belong here. A name with a
	// leading dot denies the names under it.
	DeniedNames    []string
	DeniedPrefixes []netip.Prefix
	// SharedPrefixes hold addresses that several Nodes may list (a NAT
	// gateway's): the check that no other Node lists a SAN skips them.
	SharedPrefixes []netip.Prefix
}

// KeyPolicy says which public keys a request may carry.
type KeyPolicy struct {
	RSAMinBits int
	// RSAMaxBits bounds the modulus, checked before the signature: verifying
	// costs the square of the modulus, and a huge validly signed key is
	// cheap to make.
	RSAMaxBits  int
	ECDSACurves []string // "P-256", "P-384", "P-521"
	Ed25519     bool
}

// Handles reports whether p approves CSRs of kind k at all.
func (p *Policy) Handles(k Kind) bool {
	switch k {
	case KindNodeClient:
		return p.NodeClient.Enabled
	case KindServing:
		return p.Serving.Enabled
	}
	return false
}

// ReadsNodes reports whether decisions under p read Nodes: serving requests
// are checked against their Node, and bootstrap requests against the
// registered Nodes when existing nodes are refused.
func ReadsNodes(p *Policy) bool {
	return p.Serving.Enabled || (p.NodeClient.Enabled && !p.NodeClient.AllowBootstrapForExistingNode)
}

// DefaultPolicy is the policy of an empty configuration file: both kubelet
// signers approved, everything denied that the rules reject.
func DefaultPolicy() Policy {
	return Policy{
		NodeClient: NodeClientPolicy{
			Enabled:                       true,
			OnInvalid:                     DenyViolation,
			OnUnauthorized:                DenyViolation,
			AllowBootstrapForExistingNode: true,
		},
		Serving: ServingPolicy{
			Enabled:           true,
			OnInvalid:         DenyViolation,
			NonNodeRequesters: DenyNonNodeRequesters,
			RequireIP:         true,
			MaxSANs:           64,
			ClusterDomain:     "cluster.local",
		},
		Keys: KeyPolicy{
			RSAMinBits:  2048,
			RSAMaxBits:  8192,
			ECDSACurves: []string{"P-256", "P-384"},
		},
		GracePeriod:       15 * time.Minute,
		RetryInterval:     30 * time.Second,
		MaxPendingPerNode: 3,
	}
}
