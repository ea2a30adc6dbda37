package controllers

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// csrReconcile is the frame the approver and the signer share: read the
// CSR from the cache, skip it unless ours says it is theirs to act on now,
// skip a version this process has just written (the cache lags the write),
// and name the CSR in the error returned.
func csrReconcile(ctx context.Context, c client.Reader, req ctrl.Request, guard *writeGuard,
	ours func(*certificatesv1.CertificateSigningRequest) bool,
	do func(context.Context, *certificatesv1.CertificateSigningRequest) (ctrl.Result, error),
) (ctrl.Result, error) {
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := c.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ours(csr) || guard.stale(csr) {
		return ctrl.Result{}, nil
	}
	res, err := do(ctx, csr)
	return res, inCSR(req.Name, err)
}

// inCSR names the CSR in an error a reconcile returns. controller-runtime
// logs it as "Reconciler error" with the logger controllerOptions builds,
// which does not name the request, and an error such as a connection lost
// mid-write does not name it either.
func inCSR(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("CSR %s: %w", name, err)
}
