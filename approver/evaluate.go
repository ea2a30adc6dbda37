package approver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

// Facts are what the reconciler learned from the cluster for one CSR, as
// asked for by Plan. Evaluate never looks anything up itself.
type Facts struct {
	Now time.Time
	// Node is the Node the CommonName names; nil when it does not exist.
	Node *corev1.Node
	// Authorization answers the SubjectAccessReview Plan asked for.
	Authorization *Authorization
	// Siblings are the other CSRs with the same SiblingKey.
	Siblings []Sibling
	// Lookups answers, per canonical DNS name, the resolutions Plan asked for.
	Lookups map[string]Lookup
	// Claimants lists, per SAN of a serving request (by AddressKey), the
	// other Nodes whose status.addresses hold it. A kubelet writes its own
	// Node's addresses: this is what stops one node from claiming another's.
	Claimants map[string][]string
}

// Authorization is the outcome of a SubjectAccessReview.
type Authorization struct {
	Allowed bool
	Reason  string
	// EvaluationError is set when the authorizer could not decide; that is
	// retried, not taken as a no.
	EvaluationError string
}

// Lookup is the outcome of resolving one DNS name.
type Lookup struct {
	Addrs []netip.Addr
	// Err is set when the name could not be resolved. Temporary tells a
	// timeout or server failure (retried) from a name that does not exist.
	Err       error
	Temporary bool
}

// Plan lists the facts Evaluate will consult for a request. It is empty when
// the request fails a rule that needs no facts, so that no API call is spent
// on a request that will be denied anyway. The Permission may be asked for
// last, when Evaluate reports it Missing: rules that need only the cache
// (siblings, the Node) decide first.
type Plan struct {
	// Permission is the SubjectAccessReview to ask, with the CSR's user.
	Permission *authorizationv1.ResourceAttributes
	// Node is the Node to read ("" for none).
	Node string
	// Siblings asks for the other CSRs with the same SiblingKey.
	Siblings bool
	// ResolveDNS asks for DNSNamesToResolve once the Node is known.
	ResolveDNS bool
	// Claimants asks which other Nodes list each SAN (Facts.Claimants).
	Claimants bool
}

// recognizer is one kind of kubelet request: which requests it covers, the
// rules they must pass, and the permission their requester must hold. As in
// kube-controller-manager, adding a kind of CSR is adding a row.
type recognizer struct {
	// matches selects the requests of this row; the first row that matches
	// decides.
	matches func(r *Request) bool
	// rules are checked in order; the first one that fails decides.
	rules []rule
	// permission is the SubjectAccessReview subresource to check, "" for none.
	permission string
	// node, when set, reads the Node the CN names and checks it.
	node func(r *Request, f *Facts, p *Policy) *Decision
	// approved is the message of the Approved condition.
	approved string
}

// rule returns a decision (Deny) when the request breaks it, else nil.
type rule func(r *Request, p *Policy) *Decision

// clientRules are the shape of a kubelet client request, renewal or
// bootstrap alike.
var clientRules = []rule{ruleKey, ruleOrganization, ruleNoSANs, ruleNodeCommonName, ruleClientUsages}

var recognizers = []recognizer{
	{
		matches: func(r *Request) bool {
			return r.Kind == KindNodeClient && r.CSR.Spec.Username == r.X509.Subject.CommonName
		},
		rules:      clientRules,
		permission: "selfnodeclient",
		approved:   "Auto-approved kubelet client certificate renewal after SubjectAccessReview (selfnodeclient).",
	},
	{
		matches:    func(r *Request) bool { return r.Kind == KindNodeClient },
		rules:      clientRules,
		permission: "nodeclient",
		node:       checkBootstrapNode,
		approved:   "Auto-approved kubelet bootstrap client certificate after SubjectAccessReview (nodeclient).",
	},
	{
		matches: func(r *Request) bool { return r.Kind == KindServing },
		rules: []rule{ruleKey, ruleNodeCommonName, ruleRequesterIsNode, ruleRequesterInNodesGroup,
			ruleOrganization, ruleServingUsages, ruleServingSANs},
		node:     checkServingNode,
		approved: "Auto-approved kubelet serving certificate: every name and address belongs to the Node.",
	},
}

// gate decides the CSRs that no rule needs to look at: other signers, signers
// whose approval is off, CSRs already decided, and unreadable requests.
func gate(r *Request, p *Policy) (*recognizer, *Decision) {
	switch r.Kind {
	case KindOther:
		d := ignore(ReasonSignerNotHandled, fmt.Sprintf("Signer %q is not handled by this approver.", r.CSR.Spec.SignerName))
		return nil, &d
	case KindNodeClient:
		if !p.Handles(r.Kind) {
			d := ignore(ReasonApprovalDisabled, "Approval of kubelet client certificates is off (approver.nodeClient.enabled).")
			return nil, &d
		}
	case KindServing:
		if !p.Handles(r.Kind) {
			d := ignore(ReasonApprovalDisabled, "Approval of kubelet serving certificates is off (approver.kubeletServing.enabled).")
			return nil, &d
		}
	}
	if s := StateOf(r.CSR); !s.Pending() {
		d := ignore(ReasonAlreadyDecided, "The CSR is already approved or denied.")
		return nil, &d
	}
	if r.Problem != nil {
		return nil, onInvalid(r, p, *r.Problem)
	}
	for i := range recognizers {
		if recognizers[i].matches(r) {
			rec := &recognizers[i]
			for _, check := range rec.rules {
				if d := check(r, p); d != nil {
					return nil, onInvalid(r, p, *d)
				}
			}
			return rec, nil
		}
	}
	// Unreachable: every kubelet kind has a row. Deny rather than approve.
	d := deny(ReasonMalformedRequest, "No rule recognises this request.")
	return nil, &d
}

// onInvalid applies approver.nodeClient.onInvalid to a rejected client CSR.
func onInvalid(r *Request, p *Policy, d Decision) *Decision {
	if r.Kind == KindNodeClient && p.NodeClient.OnInvalid == LeavePending {
		return leftPending(d, "onInvalid")
	}
	return &d
}

// leftPending is the denial d not written, under the nodeClient setting
// that says so, for another approver to decide.
func leftPending(d Decision, setting string) *Decision {
	left := ignore(ReasonLeftPending, fmt.Sprintf("Would deny (%s): %s Left pending for another approver (approver.nodeClient.%s).", d.Reason, d.Message, setting))
	return &left
}

// PlanFor tells which facts Evaluate needs for r.
func PlanFor(r *Request, p *Policy) Plan {
	rec, d := gate(r, p)
	if d != nil {
		return Plan{}
	}
	plan := Plan{Siblings: true}
	if rec.permission != "" {
		plan.Permission = permission(rec.permission)
	}
	if readsNode(rec, r, p) {
		plan.Node = r.NodeName
	}
	plan.ResolveDNS = r.Kind == KindServing && p.Serving.ResolveDNS && len(r.X509.DNSNames) > 0
	plan.Claimants = r.Kind == KindServing
	return plan
}

func permission(subresource string) *authorizationv1.ResourceAttributes {
	return &authorizationv1.ResourceAttributes{
		Group:       certificatesv1.GroupName,
		Resource:    "certificatesigningrequests",
		Verb:        "create",
		Subresource: subresource,
		Version:     "*",
	}
}

// Evaluate decides a CSR from the request, the facts PlanFor asked for, and
// the policy. It is pure: no clock, no client, no randomness.
func Evaluate(r *Request, f *Facts, p *Policy) Decision {
	rec, d := gate(r, p)
	if d != nil {
		return *d
	}
	if d := checkSiblings(r, f, p); d != nil {
		return *d
	}
	nodeRead := readsNode(rec, r, p)
	if nodeRead {
		if d := rec.node(r, f, p); d != nil {
			d.ConfirmNode = d.Missing == FactNone
			return *d
		}
	}
	if rec.permission != "" {
		if d := checkAuthorization(r, f, p, rec.permission); d != nil {
			return *d
		}
	}
	approved := approve(rec.approved)
	// A bootstrap approval that rested on "no such Node" is confirmed live.
	approved.ConfirmNode = nodeRead && r.Kind == KindNodeClient
	return approved
}

// readsNode reports whether r's decision reads its Node under p: serving
// requests always, bootstrap requests when existing nodes are refused (see
// ReadsNodes, the same rule for a whole policy).
func readsNode(rec *recognizer, r *Request, p *Policy) bool {
	return rec.node != nil && (r.Kind == KindServing || !p.NodeClient.AllowBootstrapForExistingNode)
}

// checkSiblings applies the flood rules: a CSR with a sibling created
// later that was already approved is Superseded (the kubelet waits only for
// its newest request), and one that arrives while MaxPendingPerNode older
// siblings are still pending is TooManyPending. A sibling pending for longer
// than the grace period does not count: the kubelet stopped waiting for it
// (after 15 minutes), and a node must not stay locked out until the cleaner
// deletes it.
//
// Creation timestamps have one-second resolution. Two requests of the same
// second cannot be told apart, so neither supersedes the other; for the cap,
// their names order them, which only decides which of a flood is refused.
func checkSiblings(r *Request, f *Facts, p *Policy) *Decision {
	self := SiblingOf(r.CSR)
	pendingOlder := 0
	for _, s := range f.Siblings {
		if s.Name == self.Name {
			continue
		}
		if s.Created.After(self.Created) && s.State.Approved && !s.State.Denied {
			d := deny(ReasonSuperseded, fmt.Sprintf("A later request from %s for node %q, %s, was approved; this one is no longer needed.", r.CSR.Spec.Username, r.NodeName, s.Name))
			return &d
		}
		if s.State.Pending() && !newer(s, self) && f.Now.Sub(s.Created) < p.GracePeriod {
			pendingOlder++
		}
	}
	if p.MaxPendingPerNode > 0 && pendingOlder >= p.MaxPendingPerNode {
		d := deny(ReasonTooManyPending, fmt.Sprintf("%d older requests from %s for node %q are still pending (approver.maxPendingPerNode=%d); the newest are denied until they are decided.", pendingOlder, r.CSR.Spec.Username, r.NodeName, p.MaxPendingPerNode))
		return &d
	}
	return nil
}

func checkAuthorization(r *Request, f *Facts, p *Policy, subresource string) *Decision {
	a := f.Authorization
	if a == nil {
		return missingFact(FactAuthorization, "the SubjectAccessReview")
	}
	if a.Allowed {
		return nil
	}
	if a.EvaluationError != "" {
		if left := graceLeft(r, f, p); left > 0 {
			return &Decision{Verdict: Retry, Reason: ReasonAuthorizationError, RetryAfter: min(p.RetryInterval, left),
				Message: fmt.Sprintf("The authorizer could not decide whether %q may create certificatesigningrequests/%s: %s.", r.CSR.Spec.Username, subresource, a.EvaluationError)}
		}
	}
	msg := fmt.Sprintf("User %q is not allowed to create certificatesigningrequests/%s", r.CSR.Spec.Username, subresource)
	if a.Reason != "" {
		msg += " (" + a.Reason + ")"
	}
	if a.EvaluationError != "" {
		msg += " (authorizer error: " + a.EvaluationError + ")"
	}
	msg += "; grant it with RBAC as kubeadm does (ClusterRole system:certificates.k8s.io:certificatesigningrequests:" + subresource + ")."
	d := deny(ReasonNotAuthorized, msg)
	if p.NodeClient.OnUnauthorized == LeavePending {
		return leftPending(d, "onUnauthorized")
	}
	return &d
}

// checkBootstrapNode enforces approver.nodeClient.bootstrap.allowExistingNode
// = false: a bootstrap identity may not mint credentials for a running node.
func checkBootstrapNode(r *Request, f *Facts, p *Policy) *Decision {
	if f.Node == nil {
		return nil
	}
	d := deny(ReasonBootstrapForExistingNode, fmt.Sprintf("Node %q is already registered and %s is not that node; bootstrap credentials may only be used for new nodes (approver.nodeClient.bootstrap.allowExistingNode).", r.NodeName, r.CSR.Spec.Username))
	return &d
}

// waitOrDeny retries within the grace period after the CSR's creation, then
// denies with the same reason.
func waitOrDeny(r *Request, f *Facts, p *Policy, reason, msg string) Decision {
	if left := graceLeft(r, f, p); left > 0 {
		return Decision{Verdict: Retry, Reason: reason, Message: msg, RetryAfter: min(p.RetryInterval, left)}
	}
	return deny(reason, fmt.Sprintf("%s Gave up %s after the request was made (approver.gracePeriod).", strings.TrimSuffix(msg, "."), p.GracePeriod))
}

// graceLeft is how much of the grace period remains for r.
func graceLeft(r *Request, f *Facts, p *Policy) time.Duration {
	return p.GracePeriod - f.Now.Sub(r.CSR.CreationTimestamp.Time)
}

// missingFact asks for a fact that was not gathered. Retrying is safe;
// approving is not.
func missingFact(fact Fact, what string) *Decision {
	d := Decision{Verdict: Retry, Reason: ReasonWaitingForFacts, Message: "Waiting for " + what + ".", RetryAfter: time.Second, Missing: fact}
	return &d
}

// Rules of the kubelet shape. Messages say what is wrong and, where a setting
// could allow it, which one.

func ruleKey(r *Request, p *Policy) *Decision { return checkKey(r.X509, p.Keys) }

func ruleOrganization(r *Request, _ *Policy) *Decision {
	if o := r.X509.Subject.Organization; !slices.Equal(o, []string{NodesGroup}) {
		d := deny(ReasonOrganizationNotSystemNodes, fmt.Sprintf("The subject's Organization is %q; kubelet certificates must carry exactly [%q].", o, NodesGroup))
		return &d
	}
	return nil
}

func ruleNoSANs(r *Request, _ *Policy) *Decision {
	x := r.X509
	if n := len(x.DNSNames) + len(x.IPAddresses) + len(x.EmailAddresses) + len(x.URIs); n > 0 {
		d := deny(ReasonSANsNotAllowed, fmt.Sprintf("The request carries %d subject alternative names; kubelet client certificates carry none.", n))
		return &d
	}
	return nil
}

func ruleNodeCommonName(r *Request, _ *Policy) *Decision {
	if r.NodeName == "" {
		d := deny(ReasonCommonNameNotNode, fmt.Sprintf("The subject's CommonName %q is not %q followed by a valid node name.", r.X509.Subject.CommonName, NodeUserPrefix+"<node>"))
		return &d
	}
	return nil
}

func ruleRequesterIsNode(r *Request, _ *Policy) *Decision {
	if u := r.CSR.Spec.Username; u != r.X509.Subject.CommonName {
		d := deny(ReasonRequesterNotNode, fmt.Sprintf("Requested by %q for %q; a node may only request a serving certificate for itself.", u, r.X509.Subject.CommonName))
		return &d
	}
	return nil
}

func ruleRequesterInNodesGroup(r *Request, _ *Policy) *Decision {
	if !slices.Contains(r.CSR.Spec.Groups, NodesGroup) {
		d := deny(ReasonRequesterNotInSystemNodes, fmt.Sprintf("The requester %q is not in group %q.", r.CSR.Spec.Username, NodesGroup))
		return &d
	}
	return nil
}

var (
	clientUsages = [][]certificatesv1.KeyUsage{
		{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageClientAuth},
	}
	servingUsages = [][]certificatesv1.KeyUsage{
		{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth},
	}
)

func ruleClientUsages(r *Request, _ *Policy) *Decision { return checkUsages(r, clientUsages) }

func ruleServingUsages(r *Request, _ *Policy) *Decision { return checkUsages(r, servingUsages) }

// checkUsages compares usages as sets, as Kubernetes does: repeats are
// harmless, anything missing or extra is not.
func checkUsages(r *Request, allowed [][]certificatesv1.KeyUsage) *Decision {
	got := map[certificatesv1.KeyUsage]bool{}
	for _, u := range r.CSR.Spec.Usages {
		got[u] = true
	}
	for _, set := range allowed {
		if len(got) != len(set) {
			continue
		}
		if !slices.ContainsFunc(set, func(u certificatesv1.KeyUsage) bool { return !got[u] }) {
			return nil
		}
	}
	d := deny(ReasonUsagesNotAllowed, fmt.Sprintf("Usages %q are not one of the kubelet sets %q or %q.", r.CSR.Spec.Usages, allowed[0], allowed[1]))
	return &d
}
