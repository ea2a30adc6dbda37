package approver

import "time"

// Verdict is what the approver wants done with a CSR.
type Verdict int

const (
	// Ignore leaves the CSR alone: it is not ours, or policy says to leave it
	// pending for another approver.
	Ignore Verdict = iota
	// Approve adds the Approved condition.
	Approve
	// Deny adds the Denied condition; the kubelet gives up on the CSR and files
	// a new one after a back-off.
	Deny
	// Retry decides nothing yet: a fact the decision needs is not there yet (a
	// Node not registered, a DNS timeout). Ask again after RetryAfter.
	Retry
)

func (v Verdict) String() string {
	switch v {
	case Approve:
		return "Approve"
	case Deny:
		return "Deny"
	case Retry:
		return "Retry"
	default:
		return "Ignore"
	}
}

// Decision is the outcome of Evaluate. Reason is a CamelCase constant that
// goes into the CSR condition and metrics; Message is one sentence a cluster
// administrator can act on.
type Decision struct {
	Verdict    Verdict
	Reason     string
	Message    string
	RetryAfter time.Duration // with Retry only
	// Missing names the fact Evaluate needs next, when every rule before it
	// has passed (Retry with ReasonWaitingForFacts). A reconciler gathers it
	// and evaluates again, so that the costly SubjectAccessReview is made
	// only for requests that pass everything else.
	Missing Fact
	// ConfirmNode says the verdict rests on the Node as Facts held it: a
	// denial for its absence or addresses, or a bootstrap approval for a
	// node not yet registered. A reconciler reading Nodes from a cache that
	// may lag reads them from the API server and evaluates again before it
	// acts. (A serving approval does not ask: its Node, read moments ago,
	// listed every SAN, and confirming would double the API calls per CSR.)
	ConfirmNode bool
	// Suspicion says the request looks like an attempt on another node's
	// credentials, not a kubelet's mistake: the reconciler counts it
	// (suspicious_requests_total) and records a Warning Event. "" for none.
	Suspicion Suspicion
}

// Suspicion is what makes a request suspicious; its value is the kind label
// of the suspicious_requests_total metric.
type Suspicion string

// Suspicions. NodeRestriction guards only node identities: these are what
// it lets through.
const (
	// SuspicionNotNodeOrBootstrap: a kubelet-signer request from an identity
	// that is neither a node (system:node:<name> in system:nodes) nor a
	// bootstrapper (group system:bootstrappers).
	SuspicionNotNodeOrBootstrap Suspicion = "not-node-or-bootstrap"
	// SuspicionOtherNodesAddress: a serving request for an address that
	// another Node lists.
	SuspicionOtherNodesAddress Suspicion = "other-nodes-address"
)

// Suspicions lists every Suspicion, for metrics that start at zero.
var Suspicions = []Suspicion{SuspicionNotNodeOrBootstrap, SuspicionOtherNodesAddress}

// Fact is a fact Evaluate may ask for.
type Fact int

// Facts that Evaluate may report Missing.
const (
	FactNone Fact = iota
	FactAuthorization
	FactLookup
	FactClaimants
)

// Reasons written into CSR conditions, Events and metric labels. Details go
// into the message, never into the reason.
const (
	ReasonAutoApproved = "AutoApproved"

	// The request itself.
	ReasonMalformedRequest = "MalformedRequest"
	ReasonSignatureInvalid = "SignatureInvalid"
	ReasonKeyNotAllowed    = "KeyNotAllowed"

	// The kubelet shape.
	ReasonOrganizationNotSystemNodes = "OrganizationNotSystemNodes"
	ReasonCommonNameNotNode          = "CommonNameNotNode"
	ReasonUsagesNotAllowed           = "UsagesNotAllowed"
	ReasonSANsNotAllowed             = "SANsNotAllowed"

	// Who asked.
	ReasonRequesterNotNode = "RequesterNotNode"
	// ReasonRequesterNotNodeOrBootstrap: the requester is neither a node nor
	// a bootstrapper (SuspicionNotNodeOrBootstrap).
	ReasonRequesterNotNodeOrBootstrap = "RequesterNotNodeOrBootstrap"
	ReasonRequesterNotInSystemNodes   = "RequesterNotInSystemNodes"
	ReasonNotAuthorized               = "NotAuthorized"
	ReasonAuthorizationError          = "AuthorizationError" // Retry only
	ReasonBootstrapForExistingNode    = "BootstrapForExistingNode"

	// Serving names and addresses.
	ReasonNoSANs              = "NoSANs"
	ReasonNoIPAddress         = "NoIPAddress"
	ReasonSANTypeNotAllowed   = "SANTypeNotAllowed"
	ReasonTooManySANs         = "TooManySANs"
	ReasonSANInvalid          = "SANInvalid"
	ReasonSANForbidden        = "SANForbidden"
	ReasonSANOutsideRequired  = "SANOutsideRequiredCIDRs"
	ReasonSANNotOwnedByNode   = "SANNotOwnedByNode"
	ReasonSANOwnedByOtherNode = "SANOwnedByOtherNode"
	ReasonNodeNotFound        = "NodeNotFound"
	ReasonNodeHasNoAddresses  = "NodeHasNoAddresses"
	ReasonDNSResolutionFailed = "DNSResolutionFailed"

	// Floods.
	ReasonSuperseded     = "Superseded"
	ReasonTooManyPending = "TooManyPending"

	// Not ours (Ignore).
	ReasonSignerNotHandled = "SignerNotHandled"
	ReasonApprovalDisabled = "ApprovalDisabled"
	ReasonLeftPending      = "LeftPending"
	ReasonAlreadyDecided   = "AlreadyDecided"
	ReasonWaitingForFacts  = "WaitingForFacts"
	// ReasonNonNodeRequester: a serving CSR from an identity that is not a
	// node, left alone under approver.kubeletServing.nonNodeRequesters=ignore.
	ReasonNonNodeRequester = "NonNodeRequester"

	// ReasonQueuedBehindOlder (Retry): an older request of the same node,
	// signer and requester has not been looked at yet. A node's requests are
	// decided in the order they were made.
	ReasonQueuedBehindOlder = "QueuedBehindOlderRequest"
)

func approve(msg string) Decision {
	return Decision{Verdict: Approve, Reason: ReasonAutoApproved, Message: msg}
}

func deny(reason, msg string) Decision { return Decision{Verdict: Deny, Reason: reason, Message: msg} }

func ignore(reason, msg string) Decision {
	return Decision{Verdict: Ignore, Reason: reason, Message: msg}
}
