package controllers

import (
	"context"
	"fmt"
	"net/http"
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

	"github.com/nodecsr/kubelet-csr-controller/approver"
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
	// CAs holds the CA of each signer name.
	CAs map[string]*signer.FileCA
	// Reloaded receives an event per signer whose CA changed.
	Reloaded chan event.GenericEvent

	signers  map[string]signer.Config
	guard    writeGuard
	queues   *queueDepth
	verified *recentSet // shared with the approver; may be nil
}

// signable reports whether a CSR is approved, not denied or failed, and has
// no certificate yet: the only CSRs a signer acts on.
func signable(csr *certificatesv1.CertificateSigningRequest) bool {
	s := approver.StateOf(csr)
	return s.Approved && !s.Denied && !s.Failed && !s.Issued
}

// SetupWithManager registers the reconciler.
func (r *SignerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.signers = map[string]signer.Config{}
	for _, s := range r.Options.Signers {
		r.signers[s.Name] = s
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return false
		}
		_, mine := r.signers[csr.Spec.SignerName]
		return mine && signable(csr)
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
	res, err := r.reconcile(ctx, req)
	return res, inCSR(req, err)
}

func (r *SignerReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cfg, mine := r.signers[csr.Spec.SignerName]
	if !mine || !signable(csr) || r.guard.stale(csr) {
		return ctrl.Result{}, nil
	}
	now := r.Options.Now()
	ca := r.CAs[cfg.Name].Current()
	if ca == nil {
		err := fmt.Errorf("no CA is loaded from %s and %s", r.CAs[cfg.Name].CertFile, r.CAs[cfg.Name].KeyFile)
		return ctrl.Result{}, r.cannotSignNow(csr, err)
	}
	issued, err := r.sign(ca, csr, cfg, now)
	switch {
	case signer.IsValidationError(err):
		return ctrl.Result{}, r.fail(ctx, csr, err, now)
	case err != nil:
		return ctrl.Result{}, r.cannotSignNow(csr, err)
	}
	return ctrl.Result{}, r.store(ctx, csr, issued, now)
}

// sign issues the certificate, without checking the request's signature
// again when the approver of this process has just checked these bytes.
func (r *SignerReconciler) sign(ca *signer.CA, csr *certificatesv1.CertificateSigningRequest, cfg signer.Config, now time.Time) (*signer.Issued, error) {
	if r.verified == nil || !r.verified.has(csr.Spec.Request) {
		return signer.Sign(ca, csr, cfg, now)
	}
	req, err := signer.DecodeRequest(csr.Spec.Request)
	if err != nil {
		return nil, err
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
	r.Recorder.Eventf(csr, nil, corev1.EventTypeNormal, EventIssued, eventActionSign, "Issued certificate with serial %s, valid until %s.", serial, notAfter)
	if issued.Lifetime.Capped {
		r.Recorder.Eventf(csr, nil, corev1.EventTypeWarning, EventCertificateShortened, eventActionSign,
			"The certificate ends at the CA's expiry %s, before the %s it should last: renew the CA.", notAfter, issued.Lifetime.Requested)
	}
	logger.Info("issued", "csr", csr.Name, "signer", signerName, "serial", serial, "notAfter", notAfter, "capped", issued.Lifetime.Capped)
	return nil
}

// fail writes the Failed condition for a CSR that can never be signed.
func (r *SignerReconciler) fail(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, cause error, now time.Time) error {
	rv := csr.ResourceVersion
	updated := csr.DeepCopy()
	appendCondition(updated, certificatesv1.CertificateFailed, ReasonSignerValidation, cause.Error(), now)
	if err := r.Client.Status().Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // the newer version's event brings it back if it matters
		}
		return fmt.Errorf("write Failed condition: %w", err)
	}
	r.guard.wrote(csr, rv, now)
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
		if _, mine := r.signers[csr.Spec.SignerName]; mine && signable(csr) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(csr)})
		}
	}
	return reqs
}

// caCheck is a readiness check: every signer has a CA that can sign now.
func caCheck(cas map[string]*signer.FileCA, now func() time.Time) func(*http.Request) error {
	return func(*http.Request) error {
		for name, f := range cas {
			ca := f.Current()
			if ca == nil {
				return fmt.Errorf("signer %s: no CA loaded from %s", name, f.CertFile)
			}
			if err := ca.Usable(now()); err != nil {
				return fmt.Errorf("signer %s: %w", name, err)
			}
		}
		return nil
	}
}
