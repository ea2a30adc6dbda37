package controllers

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// CleanerOptions configure the CleanerReconciler. The rules are those of
// kube-controller-manager's csrcleaner (k8s.io/kubernetes v1.37.2,
// pkg/controller/certificates/cleaner), with every age configurable.
type CleanerOptions struct {
	// AllSigners cleans every CSR; otherwise only those of Signers.
	AllSigners bool
	Signers    []string

	IssuedAfter           time.Duration // after approval, once issued
	DeniedAfter           time.Duration // after denial
	FailedAfter           time.Duration // after failure
	PendingAfter          time.Duration // after creation, with no condition at all
	ApprovedUnissuedAfter time.Duration // after approval, never issued
	DeleteExpired         bool          // once the issued certificate has expired

	Workers int
	Now     func() time.Time
}

// Cleanup rules, as reported in metrics and logs.
const (
	RuleIssued           = "Issued"
	RuleDenied           = "Denied"
	RuleFailed           = "Failed"
	RulePending          = "Pending"
	RuleApprovedUnissued = "ApprovedUnissued"
	RuleExpired          = "Expired"
)

// CleanupAt says when csr becomes due for deletion and under which rule (the
// earliest that applies). ok is false when no rule applies to it as it is.
func CleanupAt(csr *certificatesv1.CertificateSigningRequest, o *CleanerOptions) (at time.Time, rule string, ok bool) {
	consider := func(t time.Time, r string) {
		if !ok || t.Before(at) {
			at, rule, ok = t, r, true
		}
	}
	issued := len(csr.Status.Certificate) > 0
	if len(csr.Status.Conditions) == 0 {
		consider(csr.CreationTimestamp.Add(o.PendingAfter), RulePending)
	}
	for _, c := range csr.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		when := conditionTime(csr, c)
		switch c.Type {
		case certificatesv1.CertificateApproved:
			if issued {
				consider(when.Add(o.IssuedAfter), RuleIssued)
				if notAfter, err := certificateNotAfter(csr.Status.Certificate); o.DeleteExpired && err == nil {
					consider(notAfter, RuleExpired)
				}
			} else {
				consider(when.Add(o.ApprovedUnissuedAfter), RuleApprovedUnissued)
			}
		case certificatesv1.CertificateDenied:
			consider(when.Add(o.DeniedAfter), RuleDenied)
		case certificatesv1.CertificateFailed:
			consider(when.Add(o.FailedAfter), RuleFailed)
		}
	}
	return at, rule, ok
}

// conditionTime is when a condition was last set; the API server fills
// lastUpdateTime, older objects may only have the creation time.
func conditionTime(csr *certificatesv1.CertificateSigningRequest, c certificatesv1.CertificateSigningRequestCondition) time.Time {
	switch {
	case !c.LastUpdateTime.IsZero():
		return c.LastUpdateTime.Time
	case !c.LastTransitionTime.IsZero():
		return c.LastTransitionTime.Time
	}
	return csr.CreationTimestamp.Time
}

// certificateNotAfter returns the expiry of the first certificate in a PEM
// bundle (the leaf).
func certificateNotAfter(pemBytes []byte) (time.Time, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return time.Time{}, fmt.Errorf("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.NotAfter, nil
}

// CleanerReconciler deletes CSRs that are finished or abandoned. Each CSR is
// looked at when it changes and again when its deadline comes, rather than by
// listing every CSR on a timer.
type CleanerReconciler struct {
	Client  client.Client
	Metrics *Metrics
	Options CleanerOptions
}

// SetupWithManager registers the reconciler.
func (r *CleanerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		return ok && (r.Options.AllSigners || slices.Contains(r.Options.Signers, csr.Spec.SignerName))
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("csr-cleaner").
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.Workers, RateLimiter: rateLimiter()}).
		For(&certificatesv1.CertificateSigningRequest{}, builder.WithPredicates(ours)).
		Complete(r)
}

// Reconcile deletes one CSR when it is due, or comes back when it will be.
func (r *CleanerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	at, rule, ok := CleanupAt(csr, &r.Options)
	if !ok {
		return ctrl.Result{}, nil
	}
	if wait := at.Sub(r.Options.Now()); wait > 0 {
		return ctrl.Result{RequeueAfter: wait + time.Second}, nil
	}
	// Delete exactly what was judged: a CSR that changed since (approved at
	// the last moment, say) is judged again.
	err := r.Client.Delete(ctx, csr, client.Preconditions{UID: &csr.UID, ResourceVersion: &csr.ResourceVersion})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("delete CSR: %w", err)
	}
	r.Metrics.Cleaned.WithLabelValues(csr.Spec.SignerName, rule).Inc()
	log.FromContext(ctx).Info("deleted", "signer", csr.Spec.SignerName, "rule", rule)
	return ctrl.Result{}, nil
}
