package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
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
	// APIServerReady reports whether the API server is ready; a refused
	// SubjectAccessReview counts only from a ready server. Setup fills it
	// with GET /readyz.
	APIServerReady func(ctx context.Context) error
	Now            func() time.Time
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
	// readinessUnknown logs, once, that /readyz cannot be read.
	readinessUnknown sync.Once
	// dryRunSeen remembers the dry-run outcomes already reported.
	dryRunSeen *recentSet
}

// SetupWithManager registers the reconciler. It watches kubelet CSRs and,
// when the policy reads Nodes, Nodes whose addresses change, so that a CSR
// waiting for its Node is decided as soon as the Node is there.
func (r *ApproverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.DryRun && r.dryRunSeen == nil {
		r.dryRunSeen = newRecentSet(4096)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("csr-approver").
		WithOptions(controllerOptions(mgr, "csr-approver", r.Options.Workers, r.queues)).
		Watches(&certificatesv1.CertificateSigningRequest{}, &csrHandler{r: r})
	if approver.ReadsNodes(&r.Options.Policy) {
		b = b.Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.waitingOnNode), builder.WithPredicates(nodeAddressesChanged()))
	}
	return b.Complete(r)
}

// handles reports whether this approver decides CSRs of csr's signer.
func (r *ApproverReconciler) handles(csr *certificatesv1.CertificateSigningRequest) bool {
	return r.Options.Policy.Handles(approver.KindOf(csr.Spec.SignerName))
}

// Reconcile decides one CSR.
func (r *ApproverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	return res, inCSR(req, err)
}

func (r *ApproverReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
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
	if err := r.gather(ctx, in, plan, facts); err != nil {
		return ctrl.Result{}, err
	}
	d, err := r.decide(ctx, in, plan, facts)
	if err != nil {
		return ctrl.Result{}, err
	}
	if d.ConfirmNode {
		// The decision rests on Nodes read from a cache that may lag the
		// kubelets' own status updates by a moment: read them from the API
		// server before it becomes final.
		if err := r.confirmNodes(ctx, in, plan, facts); err != nil {
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

// gather collects the facts plan asks for that the cache can answer; the
// SubjectAccessReview comes later, if still needed.
func (r *ApproverReconciler) gather(ctx context.Context, in *approver.Request, plan approver.Plan, f *approver.Facts) error {
	if plan.Siblings {
		csrs, err := siblingsOf(ctx, r.Client, in.CSR, in.NodeName)
		if err != nil {
			return err
		}
		for i := range csrs {
			s := approver.SiblingOf(&csrs[i])
			if r.Options.DryRun && s.State.Pending() {
				continue // pending because a dry run decides nothing: not a flood
			}
			f.Siblings = append(f.Siblings, s)
		}
	}
	if plan.Claimants {
		if err := r.gatherClaimants(ctx, in, f); err != nil {
			return err
		}
	}
	return r.gatherNode(ctx, in, plan, f, r.Client)
}

// gatherClaimants finds, through the cache's address index, the other Nodes
// that list a SAN of the request.
func (r *ApproverReconciler) gatherClaimants(ctx context.Context, in *approver.Request, f *approver.Facts) error {
	var others []*corev1.Node
	for _, key := range approver.ClaimKeys(in, &r.Options.Policy) {
		nodes, err := nodesListing(ctx, r.Client, key)
		if err != nil {
			return fmt.Errorf("list Nodes with address %s: %w", key, err)
		}
		others = append(others, nodes...)
	}
	f.Claimants = approver.ClaimantsOf(in, &r.Options.Policy, others)
	return nil
}

// confirmNodes reads from the API server the Node and the other Nodes the
// cache said list the request's SANs. (A Node that claimed an address a
// moment ago and is not in the cache yet is not looked for: that would
// mean listing every Node.)
func (r *ApproverReconciler) confirmNodes(ctx context.Context, in *approver.Request, plan approver.Plan, f *approver.Facts) error {
	if err := r.gatherNode(ctx, in, plan, f, r.Live); err != nil {
		return err
	}
	var others []*corev1.Node
	seen := map[string]bool{}
	for _, names := range f.Claimants {
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			n := &corev1.Node{}
			switch err := r.Live.Get(ctx, client.ObjectKey{Name: name}, n); {
			case apierrors.IsNotFound(err):
			case err != nil:
				return fmt.Errorf("get node %q: %w", name, err)
			default:
				others = append(others, n)
			}
		}
	}
	if f.Claimants != nil {
		f.Claimants = approver.ClaimantsOf(in, &r.Options.Policy, others)
	}
	return nil
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
	if r.Options.AuthorizationCacheTTL > 0 && r.allowed.hit(spec, now) {
		r.Metrics.Reviews.WithLabelValues("remembered").Inc()
		return &approver.Authorization{Allowed: true, Reason: "allowed by a SubjectAccessReview moments ago"}, nil
	}
	sar, err := r.review(ctx, spec)
	if err != nil {
		return nil, err
	}
	answer, note := "allowed", ""
	if !sar.Status.Allowed && r.Options.APIServerReady != nil {
		if sar, answer, note, err = r.confirmRefusal(ctx, csr, sar, now); err != nil {
			return nil, err
		}
	}
	if sar.Status.Allowed {
		r.allowed.store(spec, now, r.Options.AuthorizationCacheTTL)
	}
	r.Metrics.Reviews.WithLabelValues(answer).Inc()
	a := &approver.Authorization{Allowed: sar.Status.Allowed, Reason: sar.Status.Reason, EvaluationError: sar.Status.EvaluationError}
	if note != "" && a.EvaluationError == "" {
		a.EvaluationError = note
	}
	return a, nil
}

// confirmRefusal decides whether a refused review counts. A kube-apiserver
// that has just started answers from RBAC rules it has not finished loading:
// it refuses what it will allow a moment later, and /readyz fails until it
// has them. So a refusal counts when the server is ready afterwards and
// refuses again. While it is not ready the reconcile fails and is retried
// with back-off (from 50 ms), within the grace period after the CSR's
// creation; after that, or when readiness cannot be read at all (401, 403,
// 404), the refusal stands, with a note saying so: an unauthorized
// requester cannot make the controller retry forever.
func (r *ApproverReconciler) confirmRefusal(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, refused *authorizationv1.SubjectAccessReview, now time.Time) (sar *authorizationv1.SubjectAccessReview, answer, note string, err error) {
	spec := refused.Spec
	readyErr := r.Options.APIServerReady(ctx)
	switch {
	case readyErr == nil:
		if sar, err = r.review(ctx, spec); err != nil {
			return nil, "", "", err
		}
		if sar.Status.Allowed {
			return sar, "refused_then_allowed", "", nil
		}
		return sar, "refused", "", nil
	case errors.Is(readyErr, ErrReadinessUnknown):
		r.readinessUnknown.Do(func() {
			log.FromContext(ctx).Error(readyErr, "refused SubjectAccessReviews count without a readiness check; grant get on /readyz to tell a restarting API server from a refusal")
		})
		return refused, "refused", "", nil
	case now.Sub(csr.CreationTimestamp.Time) < r.Options.Policy.GracePeriod:
		r.Metrics.Reviews.WithLabelValues("api_server_not_ready").Inc()
		return nil, "", "", fmt.Errorf("a SubjectAccessReview refused %q, but the API server is not ready, so its authorizer may not have loaded its rules yet: %w", spec.User, readyErr)
	default:
		return refused, "refused", fmt.Sprintf("the API server was still not ready %s after the request was made: %v", r.Options.Policy.GracePeriod, readyErr), nil
	}
}

func (r *ApproverReconciler) review(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReview, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: spec}
	if err := r.Client.Create(ctx, sar); err != nil {
		return nil, fmt.Errorf("create SubjectAccessReview for %q: %w", spec.User, err)
	}
	return sar, nil
}

// ErrReadinessUnknown is returned by an APIServerReady check that could
// not read the API server's readiness (not allowed, or no such endpoint).
var ErrReadinessUnknown = errors.New("the API server's readiness cannot be read")

// readyzTimeout bounds one readiness check: the manager's HTTP client has
// no timeout of its own.
const readyzTimeout = 5 * time.Second

// apiServerReadyz returns a check of the API server's /readyz, which fails
// until the server has loaded what it authorizes from (its informer-sync
// check) among others.
func apiServerReadyz(cfg *rest.Config, hc *http.Client) (func(context.Context) error, error) {
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, readyzTimeout)
		defer cancel()
		res := dc.RESTClient().Get().AbsPath("/readyz").Do(ctx)
		err := res.Error()
		if err == nil {
			return nil
		}
		var code int
		switch res.StatusCode(&code); code {
		case 0:
			return fmt.Errorf("GET /readyz: %w", err)
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return fmt.Errorf("%w: GET /readyz answered %d: %w", ErrReadinessUnknown, code, err)
		}
		return fmt.Errorf("GET /readyz answered %d: %w", code, err)
	}, nil
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
	o := outcome{r: r, ctx: ctx, csr: csr, in: in, d: d}
	switch d.Verdict {
	case approver.Ignore:
		if d.Reason == approver.ReasonLeftPending {
			o.count("ignore")
			r.event(csr, corev1.EventTypeNormal, EventLeftPending, d)
			o.log("left pending", 0)
		}
		return ctrl.Result{}, nil
	case approver.Retry:
		o.count("retry")
		r.event(csr, corev1.EventTypeNormal, EventWaiting, d)
		o.log("waiting", 1)
		return ctrl.Result{RequeueAfter: d.RetryAfter}, nil
	}
	if r.Options.DryRun {
		r.reportDryRun(o)
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.writeDecision(o, now)
}

// outcome is one decision about one CSR, for the log and the metrics.
type outcome struct {
	r   *ApproverReconciler
	ctx context.Context
	csr *certificatesv1.CertificateSigningRequest
	in  *approver.Request
	d   approver.Decision
}

// log writes a line naming the CSR, its node and signer, the requester and
// the decision (passed per line rather than with WithValues, which copies).
func (o outcome) log(msg string, v int) {
	log.FromContext(o.ctx).V(v).Info(msg, "csr", o.csr.Name, "signer", o.csr.Spec.SignerName, "node", o.in.NodeName,
		"requester", o.csr.Spec.Username, "reason", o.d.Reason, "message", o.d.Message, "retryAfter", o.d.RetryAfter)
}

func (o outcome) count(verdict string) {
	mode := "enforce"
	if o.r.Options.DryRun {
		mode = "dryRun"
	}
	o.r.Metrics.Decisions.WithLabelValues(o.csr.Spec.SignerName, verdict, o.d.Reason, mode).Inc()
}

// verdict names an Approve or Deny for metrics, with its condition and
// Event.
func (o outcome) verdict() (name string, condition certificatesv1.RequestConditionType, eventType, eventReason string) {
	if o.d.Verdict == approver.Deny {
		return "deny", certificatesv1.CertificateDenied, corev1.EventTypeWarning, EventDenied
	}
	return "approve", certificatesv1.CertificateApproved, corev1.EventTypeNormal, EventApproved
}

// reportDryRun reports what would be written, once per CSR and outcome: a
// dry run leaves the CSR pending, so it comes back at every resync.
func (r *ApproverReconciler) reportDryRun(o outcome) {
	verdict, _, eventType, _ := o.verdict()
	if !r.dryRunSeen.add([]byte(string(o.csr.UID) + "\x00" + verdict + "\x00" + o.d.Reason)) {
		return
	}
	o.count(verdict)
	reason := EventWouldApprove
	if o.d.Verdict == approver.Deny {
		reason = EventWouldDeny
	}
	r.event(o.csr, eventType, reason, approver.Decision{Reason: o.d.Reason, Message: "Dry run, nothing written: would " + verdict + ". " + o.d.Message})
	o.log("dry run: would "+verdict, 0)
}

// writeDecision writes the Approved or Denied condition through the
// approval subresource.
func (r *ApproverReconciler) writeDecision(o outcome, now time.Time) error {
	verdict, condition, eventType, eventReason := o.verdict()
	csr := o.csr
	rv := csr.ResourceVersion
	updated := csr.DeepCopy()
	appendCondition(updated, condition, o.d.Reason, o.d.Message, now)
	if err := r.Client.SubResource("approval").Update(o.ctx, updated); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Someone changed or deleted the CSR since the cache saw it; the
			// change's own event brings the CSR back if it still matters.
			log.FromContext(o.ctx).V(1).Info("CSR changed before the decision was written", "csr", csr.Name, "error", err.Error())
			return nil
		}
		return fmt.Errorf("write %s condition: %w", condition, err)
	}
	r.guard.wrote(csr, rv, now)
	o.count(verdict)
	r.Metrics.DecisionLatency.WithLabelValues(csr.Spec.SignerName, verdict).Observe(since(csr.CreationTimestamp.Time, now))
	r.event(csr, eventType, eventReason, o.d)
	o.log(string(condition), 0)
	return nil
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
