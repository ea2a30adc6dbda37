package controllers

import (
	"context"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

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
// is approved, its older pending siblings (which are now Superseded).
type csrHandler struct {
	r *ApproverReconciler
}

var _ handler.EventHandler = &csrHandler{}

func (h *csrHandler) Create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	csr, ok := e.Object.(*certificatesv1.CertificateSigningRequest)
	if !ok || !h.r.handles(csr) || !approver.StateOf(csr).Pending() {
		return
	}
	priority := priorityResync
	if !e.IsInInitialList {
		priority = h.priority(ctx, csr)
	}
	add(q, priority, csr)
}

func (h *csrHandler) Update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	csr, ok := e.ObjectNew.(*certificatesv1.CertificateSigningRequest)
	if !ok || !h.r.handles(csr) {
		return
	}
	state := approver.StateOf(csr)
	if state.Pending() {
		add(q, h.priority(ctx, csr), csr)
		return
	}
	old, ok := e.ObjectOld.(*certificatesv1.CertificateSigningRequest)
	if !ok || !state.Approved || state.Denied || approver.StateOf(old).Approved {
		return
	}
	// Just approved: the pending siblings created before it are no longer
	// needed (see approver's checkSiblings).
	self := approver.SiblingOf(csr)
	for _, s := range h.siblings(ctx, csr) {
		if st := approver.SiblingOf(&s); st.State.Pending() && st.Created.Before(self.Created) {
			add(q, priorityNormal, &s)
		}
	}
}

func (h *csrHandler) Delete(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

func (h *csrHandler) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
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
	node := nodeNameOf(csr)
	if node == "" {
		return nil
	}
	csrs, err := siblingsOf(ctx, h.r.Client, csr, node)
	if err != nil {
		return nil
	}
	return csrs
}

// add enqueues csr with a priority when the queue supports priorities.
func add(q workqueue.TypedRateLimitingInterface[reconcile.Request], priority int, csr client.Object) {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(csr)}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
		return
	}
	q.Add(req)
}
