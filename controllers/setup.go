package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Options wire the three reconcilers into a manager.
type Options struct {
	Approver ApproverOptions
	Signer   SignerOptions
	// Cleaner is nil when the cleaner is off.
	Cleaner *CleanerOptions
	// Registry receives the metrics; nil means controller-runtime's, which
	// the manager serves on its metrics endpoint.
	Registry prometheus.Registerer
	// CAPollInterval is how often CA files are re-read besides file system
	// events (default one minute).
	CAPollInterval time.Duration
	// TrustResync is how often the trust bundles are checked and repaired
	// besides CA changes (default five minutes).
	TrustResync time.Duration
	// Now is the clock of every reconciler (default time.Now).
	Now func() time.Time
	// Recorder names the Events' reporting controller.
	RecorderName string
	// StartupTaint, when set, is lifted from each Node once its serving
	// certificate is issued (approver.kubeletServing.startupTaint).
	StartupTaint *corev1.Taint
	// Audit, when set, audits the certificates kubelets serve against the
	// kubelet-serving signer's CA.
	Audit *AuditOptions
}

// withDefaults fills what o leaves out.
func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registry == nil {
		o.Registry = ctrlmetrics.Registry
	}
	if o.CAPollInterval == 0 {
		o.CAPollInterval = time.Minute
	}
	if o.TrustResync == 0 {
		o.TrustResync = 5 * time.Minute
	}
	if o.RecorderName == "" {
		o.RecorderName = "kubelet-csr-controller"
	}
	o.Approver.Now, o.Signer.Now = o.Now, o.Now
	o.Approver.StartupTaint = o.StartupTaint
	if o.Approver.Resolver == nil {
		o.Approver.Resolver = net.DefaultResolver
	}
	return o
}

// Setup registers the indexes, the CA loaders, the reconcilers, the metrics
// and the readiness check with mgr. The CA files are read once here, so that
// a bad CA is logged at start and /readyz fails until it is fixed.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	o = o.withDefaults()
	if o.Approver.APIServerReady == nil {
		ready, err := apiServerReadyz(mgr.GetConfig(), mgr.GetHTTPClient())
		if err != nil {
			return fmt.Errorf("build the API server readiness check: %w", err)
		}
		o.Approver.APIServerReady = ready
	}
	signers := newSignerTable(o.Signer.Signers, &o.Approver.Policy)
	m := NewMetrics()
	m.initSigners(signers.names)
	m.initSuspicious(&o.Approver.Policy)
	if err := IndexFields(ctx, mgr.GetFieldIndexer(), &o.Approver.Policy); err != nil {
		return err
	}
	eventsClient, err := eventsclient.NewForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("create the Event client: %w", err)
	}
	queues := &queueDepth{}
	recorder := newEventRecorder(eventsClient, o.RecorderName, queues.waiting, o.Now, ctrl.Log.WithName("events"), m)
	if err := mgr.Add(recorder); err != nil {
		return err
	}

	reloaded := make(chan event.GenericEvent, 64)
	changed := make(chan struct{}, 1)
	signers.loadCAs(m, reloaded, changed, ctrl.Log.WithName("ca"))
	if err := mgr.Add(&caRunner{files: signers.loaders, poll: o.CAPollInterval, logger: ctrl.Log.WithName("ca")}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ca", signers.ready(o.Now)); err != nil {
		return err
	}

	if targets := signers.trustTargets(); len(targets) > 0 {
		tp := &trustPublisher{client: mgr.GetClient(), live: mgr.GetAPIReader(), targets: targets, changed: changed,
			resync: o.TrustResync, now: o.Now, metrics: m, log: ctrl.Log.WithName("trust")}
		if err := mgr.Add(tp); err != nil {
			return fmt.Errorf("set up the trust bundle publisher: %w", err)
		}
	}

	verified := newRecentSet(4096)
	ar := &ApproverReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Recorder: recorder, Metrics: m, Options: o.Approver, SignedHere: signers.names, verified: verified, queues: queues}
	if err := ar.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the approver: %w", err)
	}
	if len(signers.names) > 0 {
		sr := &SignerReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Recorder: recorder, Metrics: m, Options: o.Signer, Reloaded: reloaded, signers: signers, verified: verified, queues: queues}
		if err := sr.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the signer: %w", err)
		}
	}
	if o.StartupTaint != nil {
		tr := &TaintReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Recorder: recorder, Taint: *o.StartupTaint, Now: o.Now}
		if err := tr.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the start-up taint: %w", err)
		}
	}
	if o.Audit != nil {
		ca, ok := signers.cas[certificatesv1.KubeletServingSignerName]
		if !ok {
			return errors.New("the served-certificate audit needs the kubernetes.io/kubelet-serving signer")
		}
		if err := mgr.Add(&Auditor{Client: mgr.GetClient(), Recorder: recorder, Metrics: m, Options: *o.Audit, Roots: ca.Pool, Now: o.Now, Log: ctrl.Log.WithName("audit")}); err != nil {
			return fmt.Errorf("set up the audit: %w", err)
		}
	}
	if o.Cleaner != nil {
		co := *o.Cleaner
		co.Now = o.Now
		co.Signers = signers.managed
		if co.Interval <= 0 {
			co.Interval = time.Minute
		}
		if err := mgr.Add(&Cleaner{Client: mgr.GetClient(), Metrics: m, Options: co, Log: ctrl.Log.WithName("cleaner")}); err != nil {
			return fmt.Errorf("set up the cleaner: %w", err)
		}
	}

	pending := newPendingCollector(mgr.GetClient(), signers.managed, mgr.Elected(), o.Now, ar.leftPendingOnPurpose)
	if err := m.register(o.Registry, pending, newCACollector(signers, o.Now)); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	ctrl.Log.WithName("setup").Info("controllers set up", "signers", signers.names, "dryRun", o.Approver.DryRun, "cleaner", o.Cleaner != nil, "startupTaint", o.StartupTaint != nil)
	return nil
}
