package controllers

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
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
	// Now is the clock of every reconciler (default time.Now).
	Now func() time.Time
	// Recorder names the Events' reporting controller.
	RecorderName string
}

// Setup registers the indexes, the CA loaders, the reconcilers, the metrics
// and the readiness check with mgr. The CA files are read once here, so that
// a bad CA is logged at start and /readyz fails until it is fixed.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	logger := ctrl.Log.WithName("setup")
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registry == nil {
		o.Registry = ctrlmetrics.Registry
	}
	if o.CAPollInterval == 0 {
		o.CAPollInterval = time.Minute
	}
	if o.RecorderName == "" {
		o.RecorderName = "kubelet-csr-controller"
	}
	o.Approver.Now, o.Signer.Now = o.Now, o.Now
	if o.Approver.Resolver == nil {
		o.Approver.Resolver = net.DefaultResolver
	}
	if o.Approver.APIServerReady == nil {
		ready, err := apiServerReadyz(mgr.GetConfig(), mgr.GetHTTPClient())
		if err != nil {
			return fmt.Errorf("build the API server readiness check: %w", err)
		}
		o.Approver.APIServerReady = ready
	}

	m := NewMetrics()
	if err := m.Register(o.Registry); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
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
	cas, files := loadCAs(o.Signer.Signers, m, reloaded, ctrl.Log.WithName("ca"))
	if err := mgr.Add(&caRunner{files: files, poll: o.CAPollInterval, logger: ctrl.Log.WithName("ca")}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ca", caCheck(cas, o.Now)); err != nil {
		return err
	}

	verified := newRecentSet(4096)
	ar := &ApproverReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Recorder: recorder, Metrics: m, Options: o.Approver, verified: verified, queues: queues}
	if err := ar.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the approver: %w", err)
	}
	var signerNames []string
	for _, s := range o.Signer.Signers {
		signerNames = append(signerNames, s.Name)
	}
	managed := managedSigners(&o.Approver, signerNames)
	if len(signerNames) > 0 {
		sr := &SignerReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Recorder: recorder, Metrics: m, Options: o.Signer, CAs: cas, Reloaded: reloaded, verified: verified, queues: queues}
		if err := sr.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the signer: %w", err)
		}
	}
	if o.Cleaner != nil {
		co := *o.Cleaner
		co.Now = o.Now
		co.Signers = managed
		if co.Interval <= 0 {
			co.Interval = time.Minute
		}
		if err := mgr.Add(&Cleaner{Client: mgr.GetClient(), Metrics: m, Options: co, Log: ctrl.Log.WithName("cleaner")}); err != nil {
			return fmt.Errorf("set up the cleaner: %w", err)
		}
	}

	pending := newPendingCollector(mgr.GetClient(), managed, mgr.Elected(), o.Now)
	for _, c := range []prometheus.Collector{pending, newCACollector(cas, o.Now)} {
		if err := replace(o.Registry, c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	logger.Info("controllers set up", "signers", signerNames, "dryRun", o.Approver.DryRun, "cleaner", o.Cleaner != nil)
	return nil
}

// managedSigners are the signers whose CSRs this controller approves or
// signs.
func managedSigners(a *ApproverOptions, signers []string) []string {
	out := slices.Clone(signers)
	for _, name := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
		if a.Policy.Handles(approver.KindOf(name)) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// loadCAs creates one FileCA per certificate and key file pair (signers that
// share a CA share its loader) and loads each once. It returns the loader of
// each signer, and each loader once.
func loadCAs(signers []signer.Config, m *Metrics, reloaded chan<- event.GenericEvent, logger logr.Logger) (map[string]*signer.FileCA, []*signer.FileCA) {
	type files struct{ cert, key string }
	users := map[files][]string{}
	for _, s := range signers {
		f := files{s.CertFile, s.KeyFile}
		users[f] = append(users[f], s.Name)
	}
	cas := map[string]*signer.FileCA{}
	var loaders []*signer.FileCA
	for f, names := range users {
		ca := signer.NewFileCA(f.cert, f.key, func(ca *signer.CA, err error) {
			if err != nil {
				for _, n := range names {
					m.CAReloadFailures.WithLabelValues(n).Inc()
				}
				logger.Error(err, "CA files could not be loaded; the previous CA stays in use", "certFile", f.cert, "keyFile", f.key, "signers", names, "inUse", ca != nil)
				return
			}
			logger.Info("CA loaded", "certFile", f.cert, "subject", ca.Cert.Subject.String(), "notAfter", ca.Cert.NotAfter, "signers", names)
			// One event per CA: the signer re-lists the waiting CSRs of all
			// its signers for any of them.
			select {
			case reloaded <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: names[0]}}}:
			default: // a reload is already queued, and covers this one
			}
		})
		_ = ca.Reload() // reported through the callback
		loaders = append(loaders, ca)
		for _, n := range names {
			cas[n] = ca
		}
	}
	return cas, loaders
}

// caRunner watches the CA files on every replica, leader or not, so that a
// standby is ready to sign the moment it takes over.
type caRunner struct {
	files  []*signer.FileCA
	poll   time.Duration
	logger logr.Logger
}

func (c *caRunner) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range c.files {
		wg.Go(func() {
			f.Run(ctx, c.poll, func(err error) {
				c.logger.Error(err, "CA files are not watched; changes are picked up by polling only", "certFile", f.CertFile, "keyFile", f.KeyFile, "pollInterval", c.poll)
			})
		})
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection is false: every replica keeps its CA current.
func (c *caRunner) NeedLeaderElection() bool { return false }
