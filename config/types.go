// Package config is the controller's configuration file: its versioned Go
// types, their defaults, validation that reports every problem with its field
// path, loading with strict decoding, and the conversion into the approver's
// Policy and the signers' settings. Process matters (kubeconfig, addresses,
// leader election on/off, logging) are flags, not configuration.
package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIVersion and Kind identify the configuration file format.
const (
	APIVersion = "config.nodecsr.io/v1alpha1"
	Kind       = "ControllerConfig"
)

// ControllerConfig is the whole configuration file.
type ControllerConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Approver decides which kubelet CSRs are approved or denied.
	Approver Approver `json:"approver"`
	// CA is the certificate authority of every signer that names none.
	CA *CAFiles `json:"ca,omitempty"`
	// Signers issue certificates for approved CSRs. Default: kubelet-serving
	// and kube-apiserver-client-kubelet. Listing signers replaces the default.
	Signers []Signer `json:"signers,omitempty"`
	// Cleaner deletes finished and abandoned CSRs.
	Cleaner Cleaner `json:"cleaner"`
	// Manager tunes the controller process.
	Manager Manager `json:"manager"`
	// Audit dials each Node's kubelet and checks the certificate it serves.
	Audit Audit `json:"audit"`
}

// Audit configures the audit of the certificates kubelets serve: whether
// each chains to the kubelet-serving signer's CA, names system:node:<name>
// (what KEP-4872 will require) and covers the Node's addresses, and when it
// expires.
type Audit struct {
	Enabled bool `json:"enabled"`
	// Interval between passes; each Node is dialled at most once a pass.
	Interval metav1.Duration `json:"interval"`
	// Timeout bounds one connection and TLS handshake.
	Timeout metav1.Duration `json:"timeout"`
	// Concurrency bounds the connections in flight.
	Concurrency int `json:"concurrency"`
}

// Approver is the approval policy.
type Approver struct {
	// Mode is "enforce" (write Approved/Denied) or "dryRun" (decide, log,
	// emit the Event and metrics, write nothing to the CSR).
	Mode Mode `json:"mode"`
	// GracePeriod bounds how long after its creation a CSR waits for missing
	// facts (Node not registered, no addresses, DNS or authorizer trouble)
	// before it is denied.
	GracePeriod metav1.Duration `json:"gracePeriod"`
	// RetryInterval is how often a CSR waiting for facts is looked at again.
	RetryInterval metav1.Duration `json:"retryInterval"`
	// MaxPendingPerNode caps the older pending CSRs per node, signer and
	// requester; a new CSR beyond it is denied as TooManyPending. 0 disables.
	MaxPendingPerNode int `json:"maxPendingPerNode"`

	Keys           Keys           `json:"keys"`
	NodeClient     NodeClient     `json:"nodeClient"`
	KubeletServing KubeletServing `json:"kubeletServing"`
}

// Mode is the approver's mode.
type Mode string

// Approver modes.
const (
	ModeEnforce Mode = "enforce"
	ModeDryRun  Mode = "dryRun"
)

// Keys says which public keys a request may carry.
type Keys struct {
	// RSAMinBits is the smallest RSA modulus accepted (at least 2048).
	RSAMinBits int `json:"rsaMinBits"`
	// RSAMaxBits is the largest RSA modulus accepted (at most 16384),
	// checked before the signature: verifying costs the square of the
	// modulus, and a huge validly signed key is cheap to make.
	RSAMaxBits int `json:"rsaMaxBits"`
	// ECDSACurves lists the accepted curves: P-256, P-384, P-521.
	ECDSACurves []string `json:"ecdsaCurves"`
	// Ed25519 accepts Ed25519 keys.
	Ed25519 bool `json:"ed25519"`
}

// NodeClient governs kubernetes.io/kube-apiserver-client-kubelet CSRs.
type NodeClient struct {
	Enabled bool `json:"enabled"`
	// OnInvalid is what happens to a request that fails the kubelet-client
	// shape: "deny" or "leavePending" (for a second approver).
	OnInvalid string `json:"onInvalid"`
	// OnUnauthorized is what happens when the SubjectAccessReview says no:
	// "deny" or "leavePending".
	OnUnauthorized string `json:"onUnauthorized"`
	// AuthorizationCacheTTL remembers an allowed SubjectAccessReview answer
	// for the same requester this long, so that many CSRs made with one
	// bootstrap token cost one review. A denial is never remembered; 0
	// disables it.
	AuthorizationCacheTTL metav1.Duration `json:"authorizationCacheTTL"`
	Bootstrap             Bootstrap       `json:"bootstrap"`
}

// Bootstrap governs client CSRs made with bootstrap credentials.
type Bootstrap struct {
	// AllowExistingNode lets a bootstrap identity obtain a client certificate
	// for a Node that is already registered, as Kubernetes does. Set it to
	// false so that a leaked bootstrap token cannot impersonate running nodes.
	AllowExistingNode bool `json:"allowExistingNode"`
}

// KubeletServing governs kubernetes.io/kubelet-serving CSRs.
type KubeletServing struct {
	Enabled bool `json:"enabled"`
	// OnInvalid is what happens to a request that breaks a rule (its shape,
	// names or addresses): "deny" or "leavePending" (for a second approver).
	OnInvalid string `json:"onInvalid"`
	// NonNodeRequesters is what happens to a request from an identity that
	// is not a node (virtual kubelets, some charts): "deny" or "ignore"
	// (leave it alone, without an Event).
	NonNodeRequesters string `json:"nonNodeRequesters"`
	// RequireIP denies requests without an IP address: since Kubernetes
	// 1.31 a kubelet asks for a serving certificate only once it has one.
	RequireIP bool `json:"requireIP"`
	// MaxSANs bounds the DNS names and IP addresses in one request.
	MaxSANs int `json:"maxSANs"`
	// ClusterDomain is the service DNS domain; names under it are refused.
	ClusterDomain string `json:"clusterDomain"`
	// DNSSuffixes admits DNS names under these domains beyond the Node's own
	// addresses ("nodes.example.com" admits "a.nodes.example.com").
	DNSSuffixes []string `json:"dnsSuffixes,omitempty"`
	// DNSPatterns admits DNS names that match these regular expressions in
	// full (RE2 syntax, matched case-insensitively).
	DNSPatterns []string `json:"dnsPatterns,omitempty"`
	// IPCIDRs admits IP addresses inside these ranges beyond the Node's own.
	IPCIDRs []string `json:"ipCIDRs,omitempty"`
	// RequiredCIDRs confines every IP address of a request, whoever lists
	// it: each must lie inside one of them. Empty: no confinement.
	RequiredCIDRs []string `json:"requiredCIDRs,omitempty"`
	// DeniedNames are never approved, whichever Node lists them: the API
	// server's names (its load balancer, controlPlaneEndpoint) belong here.
	// A name with a leading dot denies every name under it.
	DeniedNames []string `json:"deniedNames,omitempty"`
	// DeniedCIDRs are never approved, whichever Node lists them: the
	// Service CIDR and the API server's virtual IP belong here.
	DeniedCIDRs []string `json:"deniedCIDRs,omitempty"`
	// SharedCIDRs hold addresses that several Nodes may list, such as a NAT
	// gateway's. Any other address listed by two Nodes is refused to both.
	SharedCIDRs []string `json:"sharedCIDRs,omitempty"`
	// DNSResolution requires names admitted by dnsSuffixes or dnsPatterns to
	// resolve to one of the Node's IP addresses.
	DNSResolution DNSResolution `json:"dnsResolution"`
	// StartupTaint, when set, is removed from a Node once its serving
	// certificate is issued (the kubelet's --register-with-taints or a
	// provisioner put it there), so that no pod lands before kubectl logs,
	// exec and metrics scraping work. It is never added. Needs nodes patch.
	StartupTaint *StartupTaint `json:"startupTaint,omitempty"`
}

// StartupTaint names a taint by its key and effect (any value matches).
type StartupTaint struct {
	Key    string `json:"key"`
	Effect string `json:"effect"`
}

// DNSResolution configures the optional DNS check.
type DNSResolution struct {
	Enabled bool            `json:"enabled"`
	Timeout metav1.Duration `json:"timeout"`
}

// CAFiles names a CA certificate file (the signing certificate, optionally
// followed by its issuers) and its private key file, both PEM.
type CAFiles struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// TrustFile optionally holds CA certificates that are published in the
	// trust bundle beside the signing CA but never sign: the next CA of a
	// rotation, announced before signing switches to it.
	TrustFile string `json:"trustFile,omitempty"`
}

// Signer configures one signer name.
type Signer struct {
	// Name is kubernetes.io/kubelet-serving,
	// kubernetes.io/kube-apiserver-client-kubelet or
	// kubernetes.io/kube-apiserver-client.
	Name string `json:"name"`
	// CA overrides the top-level ca for this signer.
	CA *CAFiles `json:"ca,omitempty"`
	// Duration is the certificate lifetime (default 8760h); a CSR's
	// spec.expirationSeconds may shorten it.
	Duration *metav1.Duration `json:"duration,omitempty"`
	// MinDuration is the shortest lifetime spec.expirationSeconds can ask
	// for (default 10m).
	MinDuration *metav1.Duration `json:"minDuration,omitempty"`
	// Backdate moves NotBefore into the past to absorb clock skew (default 5m).
	Backdate *metav1.Duration `json:"backdate,omitempty"`
	// IncludeChain appends the CA file's issuers after the leaf in
	// status.certificate.
	IncludeChain bool `json:"includeChain,omitempty"`
	// Jitter ("10%", at most "50%") shortens each node's certificates by a
	// fixed share of that fraction, a hash of the node name and the signer,
	// never below minDuration, so that nodes that joined together renew at
	// different times. Empty or "0%": every certificate lives duration.
	Jitter string `json:"jitter,omitempty"`
	// TrustBundle publishes the signer's CA certificates for verifiers.
	TrustBundle TrustBundle `json:"trustBundle"`
}

// TrustBundle publishes a signer's trust anchors as a ClusterTrustBundle
// (certificates.k8s.io/v1, Kubernetes 1.37) and optionally a ConfigMap.
type TrustBundle struct {
	// Enabled publishes the bundle. Default: true for
	// kubernetes.io/kubelet-serving, false for the client signers.
	Enabled *bool `json:"enabled,omitempty"`
	// Name follows the signer prefix in the bundle's name: the bundle of
	// kubernetes.io/kubelet-serving is kubernetes.io:kubelet-serving:<name>.
	// Default: kubelet-csr-controller.
	Name string `json:"name,omitempty"`
	// ConfigMap, when set, also writes the anchors to the key ca.crt of a
	// ConfigMap, for clients that cannot read ClusterTrustBundles.
	ConfigMap *TrustConfigMap `json:"configMap,omitempty"`
}

// TrustConfigMap names a ConfigMap.
type TrustConfigMap struct {
	Namespace string `json:"namespace"`
	// Name defaults to the signer's name after the slash with -ca
	// (kubelet-serving-ca).
	Name string `json:"name,omitempty"`
}

// Cleaner configures the deletion of old CSRs. Ages are measured from the
// decision (Approved, Denied, Failed) or, for pending CSRs, from creation.
type Cleaner struct {
	Enabled bool `json:"enabled"`
	// AllSigners cleans CSRs of every signer, not only those this controller
	// approves or signs.
	AllSigners                  bool            `json:"allSigners"`
	DeleteIssuedAfter           metav1.Duration `json:"deleteIssuedAfter"`
	DeleteDeniedAfter           metav1.Duration `json:"deleteDeniedAfter"`
	DeleteFailedAfter           metav1.Duration `json:"deleteFailedAfter"`
	DeletePendingAfter          metav1.Duration `json:"deletePendingAfter"`
	DeleteApprovedUnissuedAfter metav1.Duration `json:"deleteApprovedUnissuedAfter"`
	// DeleteExpired deletes CSRs whose certificate has expired.
	DeleteExpired bool `json:"deleteExpired"`
	// Interval is how often every CSR is looked at.
	Interval metav1.Duration `json:"interval"`
}

// Manager tunes the process.
type Manager struct {
	Workers Workers `json:"workers"`
	// ClientQPS and ClientBurst bound this process's requests to the API
	// server. Each CSR costs about five (SubjectAccessReview, approval,
	// certificate, two Events).
	ClientQPS      float32        `json:"clientQPS"`
	ClientBurst    int            `json:"clientBurst"`
	LeaderElection LeaderElection `json:"leaderElection"`
}

// Workers is the number of concurrent reconciles per controller.
type Workers struct {
	Approver int `json:"approver"`
	Signer   int `json:"signer"`
	Cleaner  int `json:"cleaner"`
}

// LeaderElection tunes the Lease (leader election itself is the
// --leader-elect flag).
type LeaderElection struct {
	LeaseName     string          `json:"leaseName"`
	LeaseDuration metav1.Duration `json:"leaseDuration"`
	RenewDeadline metav1.Duration `json:"renewDeadline"`
	RetryPeriod   metav1.Duration `json:"retryPeriod"`
}
