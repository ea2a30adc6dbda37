package controllers

import (
	"context"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// signable reports whether a CSR is approved, not denied or failed, and has
// no certificate yet: the only CSRs a signer acts on.
func signable(csr *certificatesv1.CertificateSigningRequest) bool {
	s := approver.StateOf(csr)
	return s.Approved && !s.Denied && !s.Failed && !s.Issued
}

// appendCondition adds a True condition of the given type.
func appendCondition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType, reason, message string, now time.Time) {
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type:           typ,
		Status:         corev1.ConditionTrue,
		Reason:         reason,
		Message:        message,
		LastUpdateTime: metav1.NewTime(now),
	})
}

// subresourceOf is where a condition is written: Approved and Denied
// through /approval, Failed through /status (the API server allows no
// other way).
func subresourceOf(typ certificatesv1.RequestConditionType) string {
	if typ == certificatesv1.CertificateFailed {
		return "status"
	}
	return "approval"
}

// writeCondition is the one path that adds a condition to a CSR. The write
// is remembered by guard, so that a reconcile reading the cache before it
// has caught up does not act again. A CSR that changed or went away since
// the cache saw it is not written (written is false, and err nil): the
// change's own event brings it back if it still matters.
func writeCondition(ctx context.Context, c client.Client, guard *writeGuard, csr *certificatesv1.CertificateSigningRequest,
	typ certificatesv1.RequestConditionType, reason, message string, now time.Time,
) (written bool, err error) {
	rv := csr.ResourceVersion
	updated := csr.DeepCopy()
	appendCondition(updated, typ, reason, message, now)
	if err := c.SubResource(subresourceOf(typ)).Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			log.FromContext(ctx).V(1).Info("CSR changed before the condition was written", "csr", csr.Name, "condition", typ, "error", err.Error())
			return false, nil
		}
		return false, fmt.Errorf("write %s condition: %w", typ, err)
	}
	guard.wrote(csr, rv, now)
	return true, nil
}
