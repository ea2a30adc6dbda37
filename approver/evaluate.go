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
// asked for by the Review's Plan and by the Missing facts of its decisions.
// Evaluate never looks anything up itself.
type Facts struct {
	Now time.Time
	// Node is the Node the CommonName names; nil when it does not exist.
	Node *corev1.Node
	// Authorization answers the SubjectAccessReview Plan asked for.
	Authorization *Authorization
	// Siblings are the other CSRs with the same SiblingKey.
	Siblings []Sibling
	// Lookups answers, per canonical DNS name, the resolutions asked for.
	Lookups map[string]Lookup
	// Claimants lists, per SAN of a serving request (by AddressKey), the
	// other Nodes whose status.addresses hold it; nil until gathered. A
	// kubelet writes its own Node's addresses: this is what stops one node
	// from claiming another's.
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
	// Claimants lists, per address the name resolved to (netip's form), the
	// other Nodes that list it; nil until gathered. A name is admitted
	// through an address only as an IP SAN would be: one of the Node's own
	// that no other Node lists.
	Claimants map[string][]string
}

// Plan lists the facts a Review gathers before it evaluates: those the
// cache answers (the Node, siblings, the other Nodes listing a SAN). It is
// empty when the request fails a rule that needs no facts, so that no API
// call is spent on a request that will be denied anyway. Costlier facts
// (the SubjectAccessReview, DNS) are asked for as Missing, last.
type Plan struct {
	// Permission is the SubjectAccessReview to ask, with the CSR's user.
	Permission *authorizationv1.ResourceAttributes
	// Node is the Node to read ("" for none).
	Node string
	// Siblings asks for the other CSRs with the same SiblingKey.
	Siblings bool
	// ResolveDNS says names will be resolved (NamesToResolve) once the Node
	// is known.
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
	// rules are checked in order; the first one that fails decides. Each
	// row ends with the signature, the costliest rule.
	rules []rule
	// permission is the SubjectAccessReview subresource to check, "" for none.
	permission string
	// node, when set, reads the Node the CN names and checks it; viaDNS
	// reports a name admitted by what it resolved to.
	node func(v *Review, f *Facts) (d *Decision, viaDNS bool)
	// approved is the message of the Approved condition.
	approved string
}

// rule returns a decision (Deny, or Ignore for a request policy leaves
// alone) when the request breaks it, else nil.
type rule func(r *Request, p *Policy) *Decision

// clientRules are the shape of a kubelet client request, renewal or
// bootstrap alike.
var clientRules = []rule{ruleNodeOrBootstrapRequester, ruleKey, ruleOrganization, ruleNoSANs, ruleNodeCommonName, ruleClientUsages, ruleSignature}

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
		rules: []rule{ruleNodeIdentity, ruleNodeOrBootstrapRequester, ruleKey, ruleNodeCommonName, ruleRequesterIsNode, ruleRequesterInNodesGroup,
			ruleOrganization, ruleServingUsages, ruleServingSANs, ruleSignature},
		node:     checkServingNode,
		approved: "Auto-approved kubelet serving certificate: every name and address belongs to the Node.",
	},
}

// Review is one request under one policy. NewReview applies every rule
// that needs no facts, once; Plan, Evaluate and the helpers that gather
// facts then reuse what it found, however often the request is evaluated
// while facts arrive.
type Review struct {
	Request *Request
	Policy  *Policy

	rec *recognizer
	// early is the decision of a request that no fact can change (not
	// ours, already decided, broken), or nil.
	early *Decision
	// claimKeys are the AddressKeys of the SANs no other Node may list.
	claimKeys []string
}

// NewReview applies p's fact-free rules to r.
func NewReview(r *Request, p *Policy) *Review {
	v := &Review{Request: r, Policy: p}
	v.rec, v.early = gate(r, p)
	if v.early == nil && r.Kind == KindServing {
		v.claimKeys = claimKeys(r, p)
	}
	return v
}

// Decided returns the decision of a request no fact can change, or nil.
func (v *Review) Decided() *Decision { return v.early }

// gate decides the CSRs that no fact can change: other signers, signers
// whose approval is off, CSRs already decided, and requests that break a
// rule of their own.
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

// onInvalid applies approver.nodeClient.onInvalid and
// approver.kubeletServing.onInvalid to a request that breaks a rule.
func onInvalid(r *Request, p *Policy, d Decision) *Decision {
	if d.Verdict != Deny {
		return &d
	}
	switch {
	case r.Kind == KindNodeClient && p.NodeClient.OnInvalid == LeavePending:
		return leftPending(d, "nodeClient.onInvalid")
	case r.Kind == KindServing && p.Serving.OnInvalid == LeavePending:
		return leftPending(d, "kubeletServing.onInvalid")
	}
	return &d
}

// leftPending is the denial d not written, under the setting that says so,
// for another approver to decide.
func leftPending(d Decision, setting string) *Decision {
	left := ignore(ReasonLeftPending, fmt.Sprintf("Would deny (%s): %s Left pending for another approver (approver.%s).", d.Reason, d.Message, setting))
	left.Suspicion = d.Suspicion // suspicious whoever decides it
	return &left
}

// Plan tells which facts to gather before evaluating.
func (v *Review) Plan() Plan {
	if v.early != nil {
		return Plan{}
	}
	r, p := v.Request, v.Policy
	plan := Plan{Siblings: true}
	if v.rec.permission != "" {
		plan.Permission = permission(v.rec.permission)
	}
	if v.readsNode() {
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

// Evaluate decides a CSR from the request, the facts and the policy. It is
// pure: no clock, no client, no randomness. Each call costs no more than
// the rules that read facts.
func (v *Review) Evaluate(f *Facts) Decision {
	if v.early != nil {
		return *v.early
	}
	r, p, rec := v.Request, v.Policy, v.rec
	if d := checkSiblings(r, f, p); d != nil {
		return *d
	}
	nodeRead := v.readsNode()
	resolved := false
	if nodeRead {
		d, viaDNS := rec.node(v, f)
		if d != nil {
			d.ConfirmNode = d.Missing == FactNone
			return *d
		}
		resolved = viaDNS
	}
	if rec.permission != "" {
		if d := checkAuthorization(r, f, p, rec.permission); d != nil {
			return *d
		}
	}
	approved := approve(rec.approved)
	// An approval that rests on the Nodes as the cache saw them is
	// confirmed live: a bootstrap one on "no such Node", a serving one on
	// the address a DNS name resolved to.
	approved.ConfirmNode = nodeRead && (r.Kind == KindNodeClient || resolved)
	return approved
}

// Evaluate is NewReview(r, p).Evaluate(f), for a request evaluated once.
func Evaluate(r *Request, f *Facts, p *Policy) Decision { return NewReview(r, p).Evaluate(f) }

// readsNode reports whether the decision reads the Node: serving requests
// always, bootstrap requests when existing nodes are refused (see
// ReadsNodes, the same rule for a whole policy).
func (v *Review) readsNode() bool {
	return v.rec.node != nil && (v.Request.Kind == KindServing || !v.Policy.NodeClient.AllowBootstrapForExistingNode)
}

// checkSiblings applies the ordering and flood rules to a node's requests
// of one signer and requester:
//
//   - they are decided in the order they were made (Newer): while an older
//     pending sibling has not been looked at, this one waits its turn, so
//     that no request is judged by a sibling nobody has judged;
//   - one whose newer sibling (of a later second) was approved is
//     Superseded: the kubelet waits only for its newest request;
//   - one that arrives while MaxPendingPerNode older siblings wait for
//     facts (their Node, its addresses, DNS) is TooManyPending: the flood a
//     kubelet makes, one request every 15 minutes, while it goes unanswered.
//
// A sibling pending for longer than the grace period counts for neither:
// the kubelet stopped waiting for it, and a node must not stay locked out
// until the cleaner deletes it.
func checkSiblings(r *Request, f *Facts, p *Policy) *Decision {
	self := SiblingOf(r.CSR)
	waitingOlder := 0
	var unseen *Sibling
	for i, s := range f.Siblings {
		if s.Name == self.Name {
			continue
		}
		if s.Created.After(self.Created) && s.State.Approved && !s.State.Denied {
			d := deny(ReasonSuperseded, fmt.Sprintf("A later request from %s for node %q, %s, was approved; this one is no longer needed.", r.CSR.Spec.Username, r.NodeName, s.Name))
			return &d
		}
		if !s.State.Pending() || Newer(s, self) || f.Now.Sub(s.Created) >= p.GracePeriod {
			continue
		}
		switch s.Progress {
		case NotLookedAt:
			if unseen == nil {
				unseen = &f.Siblings[i]
			}
		case WaitingForFacts:
			waitingOlder++
		}
	}
	if unseen != nil {
		return &Decision{Verdict: Retry, Reason: ReasonQueuedBehindOlder, RetryAfter: queuedRetry,
			Message: fmt.Sprintf("The older request %s of node %q is decided first.", unseen.Name, r.NodeName)}
	}
	if p.MaxPendingPerNode > 0 && waitingOlder >= p.MaxPendingPerNode {
		d := deny(ReasonTooManyPending, fmt.Sprintf("%d older requests from %s for node %q are still waiting for facts (approver.maxPendingPerNode=%d); newer ones are denied until they are decided.", waitingOlder, r.CSR.Spec.Username, r.NodeName, p.MaxPendingPerNode))
		return &d
	}
	return nil
}

// queuedRetry is how soon a request queued behind an older sibling is
// looked at again if nothing wakes it first: the reconciler requeues it as
// soon as the older one has been looked at.
const queuedRetry = 5 * time.Second

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
func checkBootstrapNode(v *Review, f *Facts) (*Decision, bool) {
	r := v.Request
	if f.Node == nil {
		return nil, false
	}
	d := deny(ReasonBootstrapForExistingNode, fmt.Sprintf("Node %q is already registered and %s is not that node; bootstrap credentials may only be used for new nodes (approver.nodeClient.bootstrap.allowExistingNode).", r.NodeName, r.CSR.Spec.Username))
	return &d, false
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

// ruleSignature comes last in every row: it is the costliest rule, and the
// key's size has been bounded before it.
func ruleSignature(r *Request, _ *Policy) *Decision {
	if err := r.checkSignature(); err != nil {
		d := deny(ReasonSignatureInvalid, fmt.Sprintf("The request's signature does not verify with the public key it carries: %v.", err))
		return &d
	}
	return nil
}

// IsNodeIdentity reports whether a requester is a node as NodeRestriction
// knows one: user system:node:<name> in group system:nodes.
func IsNodeIdentity(username string, groups []string) bool {
	return strings.HasPrefix(username, NodeUserPrefix) && slices.Contains(groups, NodesGroup)
}

// ruleNodeIdentity leaves alone, without a word, a serving request from an
// identity that is not a node's, when approver.kubeletServing.
// nonNodeRequesters says to ignore them (virtual kubelets and some charts
// use this signer, with an approver of their own). Under the default, deny,
// the rules after it name what is wrong.
func ruleNodeIdentity(r *Request, p *Policy) *Decision {
	if p.Serving.NonNodeRequesters != IgnoreNonNodeRequesters || IsNodeIdentity(r.CSR.Spec.Username, r.CSR.Spec.Groups) {
		return nil
	}
	d := ignore(ReasonNonNodeRequester, fmt.Sprintf("Requested by %q, which is not a node; left alone (approver.kubeletServing.nonNodeRequesters=ignore).", r.CSR.Spec.Username))
	return &d
}

// Bootstrap identities: a bootstrap token authenticates as
// system:bootstrap:<token id> in group system:bootstrappers; static
// bootstrap identities (kubelet-bootstrap in some installers) join the group.
const (
	BootstrapUserPrefix = "system:bootstrap:"
	BootstrappersGroup  = "system:bootstrappers"
)

// IsBootstrapIdentity reports whether a requester is a bootstrapper. It
// grants nothing: the SubjectAccessReview still decides.
func IsBootstrapIdentity(username string, groups []string) bool {
	return strings.HasPrefix(username, BootstrapUserPrefix) || slices.Contains(groups, BootstrappersGroup)
}

// ruleNodeOrBootstrapRequester denies, as suspicious, a request from an
// identity that is neither a node nor a bootstrapper: kubelets make every
// request as one of the two, and NodeRestriction checks only the first.
// (Under nonNodeRequesters=ignore, ruleNodeIdentity has left serving
// requests from such identities alone before this rule.)
func ruleNodeOrBootstrapRequester(r *Request, _ *Policy) *Decision {
	u, g := r.CSR.Spec.Username, r.CSR.Spec.Groups
	if IsNodeIdentity(u, g) || IsBootstrapIdentity(u, g) {
		return nil
	}
	d := deny(ReasonRequesterNotNodeOrBootstrap, fmt.Sprintf("Requested by %q, which is neither a node (%s<name> in group %s) nor a bootstrapper (group %s); kubelets request their certificates only as one of these.", u, NodeUserPrefix, NodesGroup, BootstrappersGroup))
	d.Suspicion = SuspicionNotNodeOrBootstrap
	return &d
}

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
