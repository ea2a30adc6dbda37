package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// Resolver looks up host names; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ApproverOptions configure the ApproverReconciler.
type ApproverOptions struct {
	Policy approver.Policy
	// DryRun decides and reports but writes nothing to CSRs.
	DryRun  bool
	Workers int
	// Resolver and DNSTimeout serve approver.kubeletServing.dnsResolution.
	Resolver   Resolver
	DNSTimeout time.Duration
	// AuthorizationCacheTTL keeps allowed SubjectAccessReview answers this
	// long (0: never).
	AuthorizationCacheTTL time.Duration
	Now                   func() time.Time
}

// ApproverReconciler approves or denies kubelet CSRs: it gathers the facts
// the approver package asks for (Node, SubjectAccessReview, sibling CSRs, DNS)
// and writes the decision through the /approval subresource.
type ApproverReconciler struct {
	Client   client.Client // reads from the cache, writes to the API server
	Live     client.Reader // reads from the API server, to confirm a denial
	Recorder events.EventRecorder
	Metrics  *Metrics
	Options  ApproverOptions

	guard    writeGuard
	queues   *queueDepth
	verified *recentSet // shared with the signer; may be nil
	allowed  authzCache
}

// SetupWithManager registers the reconciler. It watches kubelet CSRs and,
// when the policy reads Nodes, Nodes whose addresses change, so that a CSR
// waiting for its Node is decided as soon as the Node is there.
func (r *ApproverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("csr-approver").
		WithOptions(controllerOptions(mgr, "csr-approver", r.Options.Workers, r.queues)).
		Watches(&certificatesv1.CertificateSigningRequest{}, &csrHandler{r: r})
	p := &r.Options.Policy
	if p.Serving.Enabled || (p.NodeClient.Enabled && !p.NodeClient.AllowBootstrapForExistingNode) {
		b = b.Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.waitingOnNode), builder.WithPredicates(nodeAddressesChanged()))
	}
	return b.Complete(r)
}

// handles reports whether this approver decides CSRs of csr's signer.
func (r *ApproverReconciler) handles(csr *certificatesv1.CertificateSigningRequest) bool {
	switch approver.KindOf(csr.Spec.SignerName) {
	case approver.KindNodeClient:
		return r.Options.Policy.NodeClient.Enabled
	case approver.KindServing:
		return r.Options.Policy.Serving.Enabled
	}
	return false
}

// Reconcile decides one CSR.
func (r *ApproverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !r.handles(csr) || !approver.StateOf(csr).Pending() || r.guard.stale(csr) {
		return ctrl.Result{}, nil
	}
	in := approver.Read(csr)
	if in.Problem == nil && r.verified != nil {
		r.verified.add(csr.Spec.Request)
	}
	plan := approver.PlanFor(in, &r.Options.Policy)
	facts := &approver.Facts{Now: r.Options.Now()}
	if err := r.gather(ctx, in, plan, facts, r.Client); err != nil {
		return ctrl.Result{}, err
	}
	d, err := r.decide(ctx, in, plan, facts)
	if err != nil {
		return ctrl.Result{}, err
	}
	if plan.Node != "" && (d.Verdict == approver.Deny || d.Verdict == approver.Retry) {
		// The Node came from a cache that may lag the kubelet's own status
		// update by a moment: confirm with the API server before a denial
		// becomes final.
		if err := r.gatherNode(ctx, in, plan, facts, r.Live); err != nil {
			return ctrl.Result{}, err
		}
		if d, err = r.decide(ctx, in, plan, facts); err != nil {
			return ctrl.Result{}, err
		}
	}
	return r.act(ctx, csr, in, d, facts.Now)
}

// decide evaluates the request, asking the API server for the
// SubjectAccessReview only when every rule the cache can answer has passed:
// a request denied for its shape, its siblings or its Node costs no API call.
func (r *ApproverReconciler) decide(ctx context.Context, in *approver.Request, plan approver.Plan, facts *approver.Facts) (approver.Decision, error) {
	d := approver.Evaluate(in, facts, &r.Options.Policy)
	if d.Missing != approver.FactAuthorization || plan.Permission == nil || facts.Authorization != nil {
		return d, nil
	}
	a, err := r.authorize(ctx, in.CSR, plan.Permission)
	if err != nil {
		return d, err
	}
	facts.Authorization = a
	return approver.Evaluate(in, facts, &r.Options.Policy), nil
}

// gather collects the facts plan asks for that the cache (or reader, for the
// Node) can answer; the SubjectAccessReview comes later, if still needed.
func (r *ApproverReconciler) gather(ctx context.Context, in *approver.Request, plan approver.Plan, f *approver.Facts, reader client.Reader) error {
	if plan.Siblings {
		csrs, err := csrsOfNode(ctx, r.Client, in.NodeName)
		if err != nil {
			return fmt.Errorf("list CSRs of node %q: %w", in.NodeName, err)
		}
		key := approver.SiblingKey(in.CSR, in.NodeName)
		for i := range csrs {
			if approver.SiblingKey(&csrs[i], in.NodeName) == key {
				f.Siblings = append(f.Siblings, approver.SiblingOf(&csrs[i]))
			}
		}
	}
	return r.gatherNode(ctx, in, plan, f, reader)
}

// gatherNode reads the Node and, when needed, resolves DNS names.
func (r *ApproverReconciler) gatherNode(ctx context.Context, in *approver.Request, plan approver.Plan, f *approver.Facts, reader client.Reader) error {
	if plan.Node == "" {
		return nil
	}
	node := &corev1.Node{}
	switch err := reader.Get(ctx, client.ObjectKey{Name: plan.Node}, node); {
	case apierrors.IsNotFound(err):
		f.Node = nil
	case err != nil:
		return fmt.Errorf("get node %q: %w", plan.Node, err)
	default:
		f.Node = node
	}
	if plan.ResolveDNS {
		f.Lookups = Resolve(ctx, r.Options.Resolver, r.Options.DNSTimeout, approver.DNSNamesToResolve(in, f.Node, &r.Options.Policy))
	}
	return nil
}

// authorize asks the API server whether the CSR's requester holds the
// permission, with the requester's user, UID, groups and extra.
func (r *ApproverReconciler) authorize(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, attrs *authorizationv1.ResourceAttributes) (*approver.Authorization, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(csr.Spec.Extra))
	for k, v := range csr.Spec.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	spec := authorizationv1.SubjectAccessReviewSpec{
		User:               csr.Spec.Username,
		UID:                csr.Spec.UID,
		Groups:             csr.Spec.Groups,
		Extra:              extra,
		ResourceAttributes: attrs.DeepCopy(),
	}
	now := r.Options.Now()
	if r.allowed.hit(spec, now) {
		return &approver.Authorization{Allowed: true, Reason: "allowed by a SubjectAccessReview moments ago"}, nil
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: spec}
	if err := r.Client.Create(ctx, sar); err != nil {
		return nil, fmt.Errorf("create SubjectAccessReview for %q: %w", csr.Spec.Username, err)
	}
	if sar.Status.Allowed {
		r.allowed.store(spec, now, r.Options.AuthorizationCacheTTL)
	}
	return &approver.Authorization{Allowed: sar.Status.Allowed, Reason: sar.Status.Reason, EvaluationError: sar.Status.EvaluationError}, nil
}

// Resolve looks names up, each with its own timeout, and tells timeouts and
// server failures (temporary) from names that do not exist.
func Resolve(ctx context.Context, resolver Resolver, timeout time.Duration, names []string) map[string]approver.Lookup {
	out := make(map[string]approver.Lookup, len(names))
	for _, name := range names {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := resolver.LookupNetIP(lctx, "ip", name)
		cancel()
		l := approver.Lookup{Addrs: addrs, Err: err}
		if err != nil {
			var dnsErr *net.DNSError
			l.Temporary = errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &dnsErr) && (dnsErr.IsTimeout || dnsErr.IsTemporary))
		}
		out[name] = l
	}
	return out
}

// act carries a decision out: the condition, the Event, the metrics.
func (r *ApproverReconciler) act(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, in *approver.Request, d approver.Decision, now time.Time) (ctrl.Result, error) {
	signer := csr.Spec.SignerName
	logger := log.FromContext(ctx)
	// Every line names the CSR, its node and signer, the requester and the
	// decision; passed per line rather than with WithValues, which copies.
	logDecision := func(msg string, v int) {
		logger.V(v).Info(msg, "csr", csr.Name, "signer", signer, "node", in.NodeName, "requester", csr.Spec.Username,
			"reason", d.Reason, "message", d.Message, "retryAfter", d.RetryAfter)
	}
	mode := "enforce"
	if r.Options.DryRun {
		mode = "dryRun"
	}
	count := func(verdict string) { r.Metrics.Decisions.WithLabelValues(signer, verdict, d.Reason, mode).Inc() }

	switch d.Verdict {
	case approver.Ignore:
		if d.Reason == approver.ReasonLeftPending {
			count("ignore")
			r.event(csr, corev1.EventTypeNormal, EventLeftPending, d)
			logDecision("left pending", 0)
		}
		return ctrl.Result{}, nil
	case approver.Retry:
		count("retry")
		r.event(csr, corev1.EventTypeNormal, EventWaiting, d)
		logDecision("waiting", 1)
		return ctrl.Result{RequeueAfter: d.RetryAfter}, nil
	}

	verdict, condition, eventType, eventReason := "approve", certificatesv1.CertificateApproved, corev1.EventTypeNormal, EventApproved
	if d.Verdict == approver.Deny {
		verdict, condition, eventType, eventReason = "deny", certificatesv1.CertificateDenied, corev1.EventTypeWarning, EventDenied
	}
	if r.Options.DryRun {
		count(verdict)
		reason := EventWouldApprove
		if d.Verdict == approver.Deny {
			reason = EventWouldDeny
		}
		r.event(csr, eventType, reason, approver.Decision{Reason: d.Reason, Message: "Dry run, nothing written: would " + verdict + ". " + d.Message})
		logDecision("dry run: would "+verdict, 0)
		return ctrl.Result{}, nil
	}

	rv := csr.ResourceVersion
	updated := csr.DeepCopy()
	appendCondition(updated, condition, d.Reason, d.Message, now)
	if err := r.Client.SubResource("approval").Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Someone changed or deleted the CSR since the cache saw it; the
			// change's own event brings the CSR back if it still matters.
			logger.V(1).Info("CSR changed before the decision was written", "csr", csr.Name, "error", err.Error())
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("write %s condition: %w", condition, err)
	}
	r.guard.wrote(csr, rv, now)
	count(verdict)
	r.Metrics.DecisionLatency.WithLabelValues(signer, verdict).Observe(since(csr.CreationTimestamp.Time, now))
	r.event(csr, eventType, eventReason, d)
	logDecision(string(condition), 0)
	return ctrl.Result{}, nil
}

func (r *ApproverReconciler) event(csr *certificatesv1.CertificateSigningRequest, typ, reason string, d approver.Decision) {
	r.Recorder.Eventf(csr, nil, typ, reason, eventActionApprove, "%s: %s", d.Reason, d.Message)
}

// waitingOnNode maps a Node to the pending CSRs whose decision depends on it.
func (r *ApproverReconciler) waitingOnNode(ctx context.Context, o client.Object) []reconcile.Request {
	csrs, err := csrsOfNode(ctx, r.Client, o.GetName())
	if err != nil {
		log.FromContext(ctx).Error(err, "list CSRs of node", "node", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for i := range csrs {
		if r.handles(&csrs[i]) && approver.StateOf(&csrs[i]).Pending() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&csrs[i])})
		}
	}
	return reqs
}

// nodeAddressesChanged passes Node creations, deletions and address changes:
// the only Node events a decision depends on.
func nodeAddressesChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
