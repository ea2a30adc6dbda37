package controllers

import (
	"context"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// SignerOptions configure the SignerReconciler.
type SignerOptions struct {
	Signers []signer.Config
	Workers int
	Now     func() time.Time
}

// SignerReconciler issues certificates for approved CSRs of the configured
// signers and writes them through /status. A CSR that can never be signed
// gets the Failed condition; a CA that cannot sign now (expired, not loaded)
// is retried, and a CA reload retries every waiting CSR at once.
type SignerReconciler struct {
	Client   client.Client
	Live     client.Reader
	Recorder events.EventRecorder
	Metrics  *Metrics
	Options  SignerOptions
	// Reloaded receives an event per signer whose CA changed.
	Reloaded chan event.GenericEvent

	signers  *signerTable
	guard    writeGuard
	queues   *queueDepth
	verified *recentSet // shared with the approver; may be nil
}

// signableOurs reports whether csr is this signer's to sign now.
func (r *SignerReconciler) signableOurs(csr *certificatesv1.CertificateSigningRequest) bool {
	_, mine := r.signers.signs(csr)
	return mine && signable(csr)
}

// SetupWithManager registers the reconciler.
func (r *SignerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		return ok && r.signableOurs(csr)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("csr-signer").
		WithOptions(controllerOptions(mgr, "csr-signer", r.Options.Workers, r.queues)).
		For(&certificatesv1.CertificateSigningRequest{}, builder.WithPredicates(ours)).
		WatchesRawSource(source.Channel(r.Reloaded, handler.EnqueueRequestsFromMapFunc(r.waitingOnCA))).
		Complete(r)
}

// Reconcile signs one CSR.
func (r *SignerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return csrReconcile(ctx, r.Client, req, &r.guard, r.signableOurs, r.sign)
}

func (r *SignerReconciler) sign(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (ctrl.Result, error) {
	cfg, _ := r.signers.signs(csr)
	now := r.Options.Now()
	loader := r.signers.cas[cfg.Name]
	ca := loader.Current()
	if ca == nil {
		err := fmt.Errorf("no CA is loaded from %s and %s", loader.CertFile, loader.KeyFile)
		return ctrl.Result{}, r.cannotSignNow(csr, err)
	}
	issued, err := r.issue(ca, csr, cfg, now)
	switch {
	case signer.IsValidationError(err):
		return ctrl.Result{}, r.fail(ctx, csr, err, now)
	case err != nil:
		return ctrl.Result{}, r.cannotSignNow(csr, err)
	}
	return ctrl.Result{}, r.store(ctx, csr, issued, now)
}

// issue signs the certificate. The request is parsed once; its signature
// is checked unless the approver of this process verified these exact
// bytes already.
func (r *SignerReconciler) issue(ca *signer.CA, csr *certificatesv1.CertificateSigningRequest, cfg signer.Config, now time.Time) (*signer.Issued, error) {
	req, err := signer.DecodeRequest(csr.Spec.Request)
	if err != nil {
		return nil, err
	}
	if r.verified == nil || !r.verified.has(csr.Spec.Request) {
		if err := signer.CheckSignature(req); err != nil {
			return nil, err
		}
	}
	return signer.SignParsed(ca, csr, req, cfg, now)
}

// store writes the certificate. On a conflict it re-reads the CSR from the
// API server and stops if it is no longer signable (someone else issued it,
// failed it, or deleted it); otherwise it writes the same certificate again.
func (r *SignerReconciler) store(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, issued *signer.Issued, now time.Time) error {
	logger := log.FromContext(ctx)
	current := csr
	stored := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rv := current.ResourceVersion
		updated := current.DeepCopy()
		updated.Status.Certificate = issued.PEM
		err := r.Client.Status().Update(ctx, updated)
		if err == nil {
			r.guard.wrote(current, rv, now)
			stored = true
			return nil
		}
		if !apierrors.IsConflict(err) {
			return err
		}
		fresh := &certificatesv1.CertificateSigningRequest{}
		if gerr := r.Live.Get(ctx, client.ObjectKeyFromObject(csr), fresh); gerr != nil {
			if apierrors.IsNotFound(gerr) {
				return nil
			}
			return gerr
		}
		if !signable(fresh) {
			return nil
		}
		current = fresh
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("write certificate: %w", err)
	case !stored:
		logger.V(1).Info("CSR no longer signable; certificate discarded", "csr", csr.Name, "signer", csr.Spec.SignerName)
		return nil
	}
	signerName := csr.Spec.SignerName
	r.Metrics.Issued.WithLabelValues(signerName).Inc()
	r.Metrics.IssuanceLatency.WithLabelValues(signerName).Observe(since(csr.CreationTimestamp.Time, now))
	c := issued.Cert
	serial := fmt.Sprintf("%x", c.SerialNumber)
	notAfter := c.NotAfter.UTC().Format(time.RFC3339)
	approval := approvalOf(csr)
	r.Recorder.Eventf(csr, nil, corev1.EventTypeNormal, EventIssued, eventActionSign, "Issued certificate with serial %s, valid until %s; approved: %s.", serial, notAfter, approval)
	if issued.Lifetime.Capped {
		r.Recorder.Eventf(csr, nil, corev1.EventTypeWarning, EventCertificateShortened, eventActionSign,
			"The certificate ends at the CA's expiry %s, before the %s it should last: renew the CA.", notAfter, issued.Lifetime.Requested)
	}
	logger.Info("issued", "csr", csr.Name, "signer", signerName, "requester", csr.Spec.Username, "serial", serial, "notAfter", notAfter,
		"capped", issued.Lifetime.Capped, "approved", approval)
	return nil
}

// approvalOf says who approved csr and why, from its Approved condition:
// the approver records no Event of its own for a CSR this process signs.
func approvalOf(csr *certificatesv1.CertificateSigningRequest) string {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved && c.Status == corev1.ConditionTrue {
			if c.Message == "" {
				return c.Reason
			}
			return c.Reason + ": " + c.Message
		}
	}
	return "no Approved condition"
}

// fail writes the Failed condition for a CSR that can never be signed.
func (r *SignerReconciler) fail(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, cause error, now time.Time) error {
	wrote, err := writeCondition(ctx, r.Client, &r.guard, csr, certificatesv1.CertificateFailed, ReasonSignerValidation, cause.Error(), now)
	if !wrote || err != nil {
		return err
	}
	r.Metrics.SigningFailures.WithLabelValues(csr.Spec.SignerName, ReasonSignerValidation).Inc()
	r.Recorder.Eventf(csr, nil, corev1.EventTypeWarning, EventSigningFailed, eventActionSign, "%s: %s", ReasonSignerValidation, cause.Error())
	log.FromContext(ctx).Info("failed", "csr", csr.Name, "signer", csr.Spec.SignerName, "reason", ReasonSignerValidation, "message", cause.Error())
	return nil
}

// cannotSignNow reports a CA problem that may heal; the returned error makes
// controller-runtime retry with back-off, and a CA reload retries at once.
func (r *SignerReconciler) cannotSignNow(csr *certificatesv1.CertificateSigningRequest, cause error) error {
	r.Metrics.SigningFailures.WithLabelValues(csr.Spec.SignerName, failureReasonCA).Inc()
	r.Recorder.Eventf(csr, nil, corev1.EventTypeWarning, EventSigningError, eventActionSign, "Cannot sign now, will retry: %s.", cause.Error())
	return fmt.Errorf("sign with %s: %w", csr.Spec.SignerName, cause)
}

// waitingOnCA maps a CA reload to every CSR of our signers that waits for a
// certificate. It does not filter by the signer the event names: a reload
// event that finds the channel full is dropped, and the one already queued
// must cover it.
func (r *SignerReconciler) waitingOnCA(ctx context.Context, _ client.Object) []reconcile.Request {
	var list certificatesv1.CertificateSigningRequestList
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list CSRs after a CA reload")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		csr := &list.Items[i]
		if r.signableOurs(csr) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(csr)})
		}
	}
	return reqs
}
