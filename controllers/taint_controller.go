package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// Node Events of the start-up taint.
const (
	EventStartupTaintRemoved      = "StartupTaintRemoved"
	EventServingCertificateDenied = "ServingCertificateDenied"
	eventActionUntaint            = "Untaint"
)

// TaintReconciler lifts the start-up taint
// (approver.kubeletServing.startupTaint) from a Node once a serving
// certificate has been issued for it, whoever approved and signed it, so
// that no pod lands on a node whose kubelet cannot yet serve logs, exec or
// metrics. It never adds the taint and touches no other: the patch tests the
// whole taint list it read, so a concurrent change fails it and is read
// again. (A Node whose serving CSR the approver denies keeps the taint and
// gets a Warning Event from the approver: see warnTainted.)
type TaintReconciler struct {
	Client   client.Client // the cache, with Nodes' taints
	Live     client.Reader // the Node as the API server has it, before a patch
	Recorder events.EventRecorder
	Taint    corev1.Taint // Key and Effect; any value matches
	Now      func() time.Time
}

// SetupWithManager registers the reconciler, keyed by Node name: a Node
// with the taint, and each serving CSR issued, bring its Node.
func (r *TaintReconciler) SetupWithManager(mgr ctrl.Manager) error {
	tainted := predicate.NewPredicateFuncs(func(o client.Object) bool {
		n, ok := o.(*corev1.Node)
		return ok && r.taintIndex(n.Spec.Taints) >= 0
	})
	issued := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		return ok && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && approver.StateOf(csr).Issued
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("startup-taint").
		WithOptions(controllerOptions(mgr, "startup-taint", 4, nil)).
		Watches(&corev1.Node{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(tainted)).
		Watches(&certificatesv1.CertificateSigningRequest{}, handler.EnqueueRequestsFromMapFunc(nodeOfCSR), builder.WithPredicates(issued)).
		Complete(r)
}

func nodeOfCSR(_ context.Context, o client.Object) []reconcile.Request {
	csr, ok := o.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return nil
	}
	if name := nodeNameOf(csr); name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
	}
	return nil
}

// taintIndex is the position of the start-up taint in taints, or -1.
func (r *TaintReconciler) taintIndex(taints []corev1.Taint) int {
	for i, t := range taints {
		if t.Key == r.Taint.Key && t.Effect == r.Taint.Effect {
			return i
		}
	}
	return -1
}

// Reconcile lifts the taint from one Node when its serving certificate is
// there.
func (r *TaintReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.taintIndex(node.Spec.Taints) < 0 {
		return ctrl.Result{}, nil
	}
	csrs, err := csrsOfNode(ctx, r.Client, node.Name)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("list CSRs of node %q: %w", node.Name, err)
	}
	if csr := issuedFor(csrs, node, r.Now()); csr != "" {
		return ctrl.Result{}, r.untaint(ctx, node.Name, csr)
	}
	return ctrl.Result{}, nil
}

// issuedFor returns the name of a serving CSR approved since the Node was
// created whose certificate is issued and unexpired, or "". (A CSR of an
// earlier Node of the same name, a replaced machine, says nothing about
// this one; the approver approves a serving CSR only once its Node exists.)
func issuedFor(csrs []certificatesv1.CertificateSigningRequest, node *corev1.Node, now time.Time) string {
	for i := range csrs {
		csr := &csrs[i]
		s := approver.StateOf(csr)
		if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName || !s.Issued || s.Failed {
			continue
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved && !conditionTime(csr, c).Before(node.CreationTimestamp.Time) && unexpired(csr.Status.Certificate, now) {
				return csr.Name
			}
		}
	}
	return ""
}

// warnTainted records a Warning Event on a Node that keeps its start-up
// taint because its serving CSR was denied.
func warnTainted(ctx context.Context, c client.Reader, rec events.EventRecorder, taint *corev1.Taint, nodeName, csrName, reason string) {
	node := &corev1.Node{}
	if err := c.Get(ctx, types.NamespacedName{Name: nodeName}, node); err != nil {
		return // no Node, no taint to keep
	}
	if (&TaintReconciler{Taint: *taint}).taintIndex(node.Spec.Taints) < 0 {
		return
	}
	rec.Eventf(node, nil, corev1.EventTypeWarning, EventServingCertificateDenied, eventActionUntaint,
		"Keeps the start-up taint %s:%s: its serving CSR %s was denied (%s; kubectl describe csr %s says why).", taint.Key, taint.Effect, csrName, reason, csrName)
}

// unexpired reports whether the leaf of cert (PEM, or the cache's summary)
// is still valid at now.
func unexpired(cert []byte, now time.Time) bool {
	notAfter, err := certificateNotAfter(cert)
	return err == nil && now.Before(notAfter)
}

// untaint removes the taint from the Node as the API server has it, with a
// JSON patch that first tests the whole taint list: a taint added or
// removed meanwhile makes the patch fail, and the retry reads it again.
func (r *TaintReconciler) untaint(ctx context.Context, name, csrName string) error {
	node := &corev1.Node{}
	if err := r.Live.Get(ctx, types.NamespacedName{Name: name}, node); err != nil {
		return client.IgnoreNotFound(err)
	}
	i := r.taintIndex(node.Spec.Taints)
	if i < 0 {
		return nil
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/spec/taints", "value": node.Spec.Taints},
		{"op": "remove", "path": fmt.Sprintf("/spec/taints/%d", i)},
	})
	if err != nil {
		return fmt.Errorf("encode the taint patch of node %q: %w", name, err)
	}
	if err := r.Client.Patch(ctx, node, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("remove taint %s from node %q: %w", r.Taint.Key, name, err)
	}
	r.Recorder.Eventf(node, nil, corev1.EventTypeNormal, EventStartupTaintRemoved, eventActionUntaint,
		"Removed the start-up taint %s:%s: serving certificate issued (CSR %s).", r.Taint.Key, r.Taint.Effect, csrName)
	log.FromContext(ctx).Info("start-up taint removed", "node", name, "taint", r.Taint.Key, "csr", csrName)
	return nil
}
