package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// controllerOptions are the options of the controllers: workers, a
// back-off, one logger built once (controller-runtime's default builds a
// logger with the request's name for every reconcile, which with zap costs a
// buffer per CSR; our log lines name the CSR themselves), and a priority
// queue whose depth queues, if not nil, can tell.
func controllerOptions(mgr ctrl.Manager, name string, workers int, queues *queueDepth) controller.Options {
	logger := mgr.GetLogger().WithValues("controller", name)
	o := controller.Options{
		MaxConcurrentReconciles: workers,
		RateLimiter:             rateLimiter(),
		LogConstructor:          func(*reconcile.Request) logr.Logger { return logger },
	}
	if queues != nil {
		o.NewQueue = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			q := priorityqueue.New(name, func(o *priorityqueue.Opts[reconcile.Request]) {
				o.Log = logger
				o.RateLimiter = rl
			})
			queues.add(q)
			return q
		}
	}
	return o
}

// rateLimiter backs off failed reconciles from 50ms up to 2 minutes, so that
// a CA that is fixed or an API server that comes back is used again soon.
func rateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](50*time.Millisecond, 2*time.Minute)
}

// queueDepth tells whether work is waiting in the approver's and the
// signer's queues: the Event recorder holds Events back while it is.
type queueDepth struct {
	mu     sync.Mutex
	queues []interface{ Len() int }
}

func (d *queueDepth) add(q interface{ Len() int }) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queues = append(d.queues, q)
}

// waiting reports whether any queue holds work ready for a worker.
func (d *queueDepth) waiting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queues {
		if q.Len() > 0 {
			return true
		}
	}
	return false
}

// Queue priorities. A CSR from a node that already has MaxPendingPerNode
// older pending siblings waits behind everyone else's, so one noisy node
// cannot delay the others; CSRs found at start-up come last, as
// controller-runtime does.
const (
	priorityNormal = 0
	priorityNoisy  = -10
	priorityResync = handler.LowPriority
)

// csrHandler enqueues pending kubelet CSRs for the approver and, when a CSR
// is decided, the siblings that were waiting for it: its older pending
// siblings once it is approved (they are now Superseded), and the next
// newer one (a node's requests are decided in order).
type csrHandler struct {
	r *ApproverReconciler
}

var _ handler.EventHandler = &csrHandler{}

func (h *csrHandler) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	csr, ok := e.Object.(*certificatesv1.CertificateSigningRequest)
	if !ok || !h.r.pendingOurs(csr) {
		return
	}
	priority := priorityResync
	if !e.IsInInitialList {
		priority = h.priority(ctx, csr)
	}
	add(q, priority, csr.Name)
}

func (h *csrHandler) Update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	csr, ok := e.ObjectNew.(*certificatesv1.CertificateSigningRequest)
	if !ok || !h.r.handles(csr) {
		return
	}
	state := approver.StateOf(csr)
	if state.Pending() {
		add(q, h.priority(ctx, csr), csr.Name)
		return
	}
	old, ok := e.ObjectOld.(*certificatesv1.CertificateSigningRequest)
	if !ok || !approver.StateOf(old).Pending() {
		return
	}
	// The node is read from the old, pending object: the cache keeps no
	// request of a denied CSR (slimCSR), so the new one may not name it.
	siblings := h.siblingsOfNode(ctx, csr, nodeNameOf(old))
	self := approver.SiblingOf(csr)
	if state.Approved && !state.Denied {
		// Just approved: the pending siblings created before it are no
		// longer needed (see approver's checkSiblings).
		for i := range siblings {
			if st := approver.SiblingOf(&siblings[i]); st.State.Pending() && st.Created.Before(self.Created) {
				add(q, priorityNormal, siblings[i].Name)
			}
		}
	}
	h.wakeNext(q, self, siblings)
}

// Delete wakes the next sibling of a pending CSR that went away: it may
// have been queued behind it.
func (h *csrHandler) Delete(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	csr, ok := e.Object.(*certificatesv1.CertificateSigningRequest)
	if !ok || !h.r.pendingOurs(csr) {
		return
	}
	h.wakeNext(q, approver.SiblingOf(csr), h.siblings(ctx, csr))
}

// Generic enqueues a CSR the approver asks to look at again: the next
// sibling of one it has just looked at without writing to it.
func (h *csrHandler) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	add(q, priorityNormal, e.Object.GetName())
}

// wakeNext enqueues the pending sibling that comes right after self in
// the order a node's requests are decided.
func (h *csrHandler) wakeNext(q workqueue.TypedRateLimitingInterface[reconcile.Request], self approver.Sibling, siblings []certificatesv1.CertificateSigningRequest) {
	sibs := make([]approver.Sibling, len(siblings))
	for i := range siblings {
		sibs[i] = approver.SiblingOf(&siblings[i])
	}
	if next := nextPending(self, sibs); next != "" {
		add(q, priorityNormal, next)
	}
}

// nextPending names the pending sibling that comes right after self
// (approver.Newer), or "".
func nextPending(self approver.Sibling, siblings []approver.Sibling) string {
	var next *approver.Sibling
	for i, s := range siblings {
		if s.Name == self.Name || !s.State.Pending() || !approver.Newer(s, self) {
			continue
		}
		if next == nil || approver.Newer(*next, s) {
			next = &siblings[i]
		}
	}
	if next == nil {
		return ""
	}
	return next.Name
}

// priority lowers the priority of a CSR whose node already has the maximum
// of older pending siblings: it will most likely be denied, and that can wait
// for other nodes' CSRs.
func (h *csrHandler) priority(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) int {
	limit := h.r.Options.Policy.MaxPendingPerNode
	if limit == 0 {
		return priorityNormal
	}
	pending := 0
	for _, s := range h.siblings(ctx, csr) {
		if s.Name != csr.Name && approver.StateOf(&s).Pending() {
			pending++
		}
	}
	if pending >= limit {
		return priorityNoisy
	}
	return priorityNormal
}

// siblings returns the cached CSRs with the same signer, node and requester
// as csr, csr included.
func (h *csrHandler) siblings(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) []certificatesv1.CertificateSigningRequest {
	return h.siblingsOfNode(ctx, csr, nodeNameOf(csr))
}

// siblingsOfNode is siblings for a CSR whose node is known.
func (h *csrHandler) siblingsOfNode(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, node string) []certificatesv1.CertificateSigningRequest {
	if node == "" {
		return nil
	}
	csrs, err := siblingsOf(ctx, h.r.Client, csr, node)
	if err != nil {
		return nil
	}
	return csrs
}

// add enqueues the CSR of that name with a priority when the queue
// supports priorities.
func add(q workqueue.TypedRateLimitingInterface[reconcile.Request], priority int, name string) {
	req := reconcile.Request{NamespacedName: client.ObjectKey{Name: name}}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
		return
	}
	q.Add(req)
}
