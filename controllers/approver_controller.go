package controllers

import (
	"context"
	"slices"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

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
	// StartupTaint, when set, is the taint a Node keeps until its serving
	// certificate is issued: a denial says so on the Node too.
	StartupTaint *corev1.Taint
	Now          func() time.Time
}

// ApproverReconciler approves or denies kubelet CSRs: it gathers the facts
// the approver package asks for (Node, SubjectAccessReview, sibling CSRs,
// DNS) through Decide, and writes the decision through the /approval
// subresource. A node's CSRs of one signer are decided in the order they
// were made.
type ApproverReconciler struct {
	Client   client.Client // reads from the cache, writes to the API server
	Live     client.Reader // reads from the API server, to confirm a decision
	Recorder events.EventRecorder
	Metrics  *Metrics
	Options  ApproverOptions
	// SignedHere lists the signers this process signs for. An approval of
	// theirs gets no Event or info log line of its own: the signer's, a
	// moment later, say it was approved and why (one Event write per issued
	// CSR instead of two; the Approved condition keeps the reason either
	// way, and the debug level logs the approval too).
	SignedHere []string

	guard    writeGuard
	queues   *queueDepth
	verified *recentSet // request digests whose signature verified; shared with the signer
	auth     *authorizer
	sources  *Sources
	progress progressTable
	// wake receives the next sibling of a CSR looked at without a write
	// (which would have woken it through its own watch event).
	wake chan event.GenericEvent
	// dryRunSeen remembers the dry-run outcomes already reported.
	dryRunSeen *recentSet
	// nodeEvents bounds the Events about one node's CSRs.
	nodeEvents *nodeEventLimiter
}

// SetupWithManager registers the reconciler. It watches kubelet CSRs and,
// when the policy reads Nodes, Nodes whose addresses change, so that a CSR
// waiting for its Node is decided as soon as the Node is there.
func (r *ApproverReconciler) SetupWithManager(mgr ctrl.Manager) error {
	o := &r.Options
	if o.DryRun && r.dryRunSeen == nil {
		r.dryRunSeen = newRecentSet(4096)
	}
	if r.verified == nil {
		r.verified = newRecentSet(4096)
	}
	r.wake = make(chan event.GenericEvent, 1024)
	r.nodeEvents = newNodeEventLimiter(r.Metrics.EventsRateLimited.Inc)
	r.auth = &authorizer{client: r.Client, ready: o.APIServerReady, ttl: o.AuthorizationCacheTTL, grace: o.Policy.GracePeriod, now: o.Now, reviews: r.Metrics}
	r.sources = &Sources{
		Nodes:     cachedNodes{r.Client},
		Live:      cachedNodes{r.Live},
		Siblings:  r.siblings,
		Authorize: r.auth.authorize,
		Resolve: func(ctx context.Context, names []string) map[string]approver.Lookup {
			return Resolve(ctx, o.Resolver, o.DNSTimeout, names)
		},
	}
	h := &csrHandler{r: r}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("csr-approver").
		WithOptions(controllerOptions(mgr, "csr-approver", o.Workers, r.queues)).
		Watches(&certificatesv1.CertificateSigningRequest{}, h).
		WatchesRawSource(source.Channel(r.wake, h))
	if approver.ReadsNodes(&o.Policy) {
		b = b.Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.waitingOnNode), builder.WithPredicates(nodeAddressesChanged()))
	}
	return b.Complete(r)
}

// handles reports whether this approver decides CSRs of csr's signer.
func (r *ApproverReconciler) handles(csr *certificatesv1.CertificateSigningRequest) bool {
	return r.Options.Policy.Handles(approver.KindOf(csr.Spec.SignerName))
}

// pendingOurs reports whether csr is this approver's to decide now: of a
// signer it approves, and neither approved nor denied.
func (r *ApproverReconciler) pendingOurs(csr *certificatesv1.CertificateSigningRequest) bool {
	return r.handles(csr) && approver.StateOf(csr).Pending()
}

// Reconcile decides one CSR.
func (r *ApproverReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return csrReconcile(ctx, r.Client, req, &r.guard, r.pendingOurs, r.decide)
}

func (r *ApproverReconciler) decide(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (ctrl.Result, error) {
	now := r.Options.Now()
	in := approver.Read(csr)
	if r.verified.has(csr.Spec.Request) {
		in.MarkSignatureVerified()
	}
	v := approver.NewReview(in, &r.Options.Policy)
	if in.SignatureVerified() {
		r.verified.add(csr.Spec.Request)
	}
	d, facts, err := Decide(ctx, r.sources, v, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	res, wrote, err := r.act(ctx, csr, in, d, now)
	if err != nil {
		return res, err
	}
	if p, ok := progressAfter(d); ok {
		r.progress.set(csr.UID, p, now, r.Options.Policy.GracePeriod)
		if !wrote {
			r.wakeNext(csr, facts.Siblings)
		}
	}
	return res, nil
}

// progressAfter says how far a decision takes a CSR, for its siblings'
// flood rules: false when it tells nothing (queued behind an older one,
// or not ours).
func progressAfter(d approver.Decision) (approver.Progress, bool) {
	switch {
	case d.Verdict == approver.Retry && d.Reason == approver.ReasonQueuedBehindOlder:
		return 0, false
	case d.Verdict == approver.Retry:
		return approver.WaitingForFacts, true
	case d.Verdict == approver.Ignore && d.Reason != approver.ReasonLeftPending && d.Reason != approver.ReasonNonNodeRequester:
		return 0, false
	}
	return approver.LookedAt, true
}

// wakeNext asks for the sibling after csr to be decided now: csr has been
// looked at without a write, so no watch event will say so.
func (r *ApproverReconciler) wakeNext(csr *certificatesv1.CertificateSigningRequest, siblings []approver.Sibling) {
	next := nextPending(approver.SiblingOf(csr), siblings)
	if next == "" {
		return
	}
	select {
	case r.wake <- event.GenericEvent{Object: &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: next}}}:
	default: // full: the sibling looks again on its own within seconds
	}
}

// siblings lists the cached CSRs of the request's signer, node and
// requester, with how far this process has got with each.
func (r *ApproverReconciler) siblings(ctx context.Context, in *approver.Request) ([]approver.Sibling, error) {
	csrs, err := siblingsOf(ctx, r.Client, in.CSR, in.NodeName)
	if err != nil {
		return nil, err
	}
	out := make([]approver.Sibling, len(csrs))
	for i := range csrs {
		out[i] = approver.SiblingOf(&csrs[i])
		out[i].Progress = r.progress.of(csrs[i].UID)
	}
	return out, nil
}

// leftPendingOnPurpose reports a pending CSR this controller has looked at
// and leaves for someone else (leavePending, nonNodeRequesters: ignore, a
// dry run): the pending-age metric leaves it out.
func (r *ApproverReconciler) leftPendingOnPurpose(csr *certificatesv1.CertificateSigningRequest) bool {
	return !r.handles(csr) || r.progress.of(csr.UID) == approver.LookedAt
}

// act carries a decision out: the condition, the Event, the metrics. wrote
// tells whether the CSR was written (its watch event then follows).
func (r *ApproverReconciler) act(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, in *approver.Request, d approver.Decision, now time.Time) (res ctrl.Result, wrote bool, err error) {
	o := outcome{r: r, ctx: ctx, csr: csr, in: in, d: d}
	switch d.Verdict {
	case approver.Ignore:
		if d.Reason == approver.ReasonLeftPending {
			o.count("ignore")
			r.event(csr, in, corev1.EventTypeNormal, EventLeftPending, d)
			o.log("left pending", 0)
			o.flag()
		}
		return ctrl.Result{}, false, nil
	case approver.Retry:
		if d.Reason == approver.ReasonQueuedBehindOlder {
			o.log("queued behind an older request", 1)
			return ctrl.Result{RequeueAfter: d.RetryAfter}, false, nil
		}
		o.count("retry")
		r.event(csr, in, corev1.EventTypeNormal, EventWaiting, d)
		o.log("waiting", 1)
		return ctrl.Result{RequeueAfter: d.RetryAfter}, false, nil
	}
	if r.Options.DryRun {
		r.reportDryRun(o)
		return ctrl.Result{}, false, nil
	}
	wrote, err = r.writeDecision(o, now)
	return ctrl.Result{}, wrote, err
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
	verdict, _, eventType, eventReason := o.verdict()
	if !r.dryRunSeen.add([]byte(string(o.csr.UID) + "\x00" + verdict + "\x00" + o.d.Reason)) {
		return
	}
	o.count(verdict)
	reason := EventWouldApprove
	if eventReason == EventDenied {
		reason = EventWouldDeny
	}
	r.event(o.csr, o.in, eventType, reason, approver.Decision{Reason: o.d.Reason, Message: "Dry run, nothing written: would " + verdict + ". " + o.d.Message})
	o.log("dry run: would "+verdict, 0)
	o.flag()
}

// writeDecision writes the Approved or Denied condition.
func (r *ApproverReconciler) writeDecision(o outcome, now time.Time) (bool, error) {
	verdict, condition, eventType, eventReason := o.verdict()
	csr := o.csr
	wrote, err := writeCondition(o.ctx, r.Client, &r.guard, csr, condition, o.d.Reason, o.d.Message, now)
	if !wrote || err != nil {
		return false, err
	}
	o.count(verdict)
	r.Metrics.DecisionLatency.WithLabelValues(csr.Spec.SignerName, verdict).Observe(since(csr.CreationTimestamp.Time, now))
	if o.d.Verdict == approver.Deny || !slices.Contains(r.SignedHere, csr.Spec.SignerName) {
		r.event(csr, o.in, eventType, eventReason, o.d)
		o.log(string(condition), 0)
	} else {
		o.log(string(condition), 1) // the signer's "issued" line says it
	}
	o.flag()
	if t := r.Options.StartupTaint; t != nil && o.d.Verdict == approver.Deny && o.in.Kind == approver.KindServing && o.in.NodeName != "" {
		warnTainted(o.ctx, r.Client, r.Recorder, t, o.in.NodeName, csr.Name, o.d.Reason)
	}
	return true, nil
}

// flag reports a suspicious request, once per decision reported: the
// metric, a Warning Event of its own (the decision's Event says what was
// decided, this one that someone may be after a node's credentials) and a
// log line.
func (o outcome) flag() {
	if o.d.Suspicion == "" {
		return
	}
	o.r.Metrics.Suspicious.WithLabelValues(o.csr.Spec.SignerName, string(o.d.Suspicion)).Inc()
	if o.r.eventAllowed(o.csr, o.in) {
		o.r.Recorder.Eventf(o.csr, nil, corev1.EventTypeWarning, EventSuspiciousRequest, eventActionApprove,
			"%s: requested by %q (groups %q) for node %q: %s", o.d.Suspicion, o.csr.Spec.Username, o.csr.Spec.Groups, o.in.NodeName, o.d.Message)
	}
	o.log("suspicious request", 0)
}

// event records the Event of a decision about csr, within its node's
// allowance (nodeEventLimiter).
func (r *ApproverReconciler) event(csr *certificatesv1.CertificateSigningRequest, in *approver.Request, typ, reason string, d approver.Decision) {
	if r.eventAllowed(csr, in) {
		r.Recorder.Eventf(csr, nil, typ, reason, eventActionApprove, "%s: %s", d.Reason, d.Message)
	}
}

// eventAllowed takes one Event from the allowance of the node csr is for
// or, when it names none, of its requester.
func (r *ApproverReconciler) eventAllowed(csr *certificatesv1.CertificateSigningRequest, in *approver.Request) bool {
	key := "user:" + csr.Spec.Username
	if in != nil && in.NodeName != "" {
		key = "node:" + in.NodeName
	}
	return r.nodeEvents.allow(key, r.Options.Now())
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
		if r.pendingOurs(&csrs[i]) {
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

// progressTable remembers how far the approver has got with each pending
// CSR it looked at, for the flood rules of its siblings. Entries last the
// grace period: after it, the flood rules ignore the CSR anyway.
type progressTable struct {
	mu      sync.Mutex
	m       map[types.UID]progressEntry
	pruneAt int
}

type progressEntry struct {
	p       approver.Progress
	expires time.Time
}

func (t *progressTable) set(uid types.UID, p approver.Progress, now time.Time, ttl time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[types.UID]progressEntry{}
	}
	pruneWhenGrown(t.m, &t.pruneAt, func(e progressEntry) bool { return now.After(e.expires) })
	t.m[uid] = progressEntry{p: p, expires: now.Add(ttl)}
}

func (t *progressTable) of(uid types.UID) approver.Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[uid].p // NotLookedAt when absent
}
