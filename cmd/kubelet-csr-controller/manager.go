package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
)

// restConfig loads the kubeconfig (--kubeconfig, then $KUBECONFIG and
// ~/.kube/config, then the in-cluster service account) and applies the
// client limits of the configuration.
func restConfig(path string, m *config.Manager) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig found: give --kubeconfig, set KUBECONFIG, or run in a cluster")
	}
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	rc.QPS = m.ClientQPS
	rc.Burst = m.ClientBurst
	// Protobuf is several times cheaper to encode and decode than JSON, for
	// this process and the API server; every type this controller uses is
	// built in. (controller-runtime's clients choose it already; this makes
	// the Event recorder's client do the same.)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// As kube-controller-manager does: an API server's gzip of every watch
	// event and response costs both sides more CPU than the bytes it saves
	// on a cluster's network (it was a third of decoding a watch here).
	rc.DisableCompression = true
	rc.UserAgent = "kubelet-csr-controller/" + version
	return rc, nil
}

// preflight checks that the API server answers, so that an unreachable or
// misaddressed server is one clear error instead of endless retries in the
// logs.
func preflight(ctx context.Context, rc *rest.Config) error {
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return fmt.Errorf("create discovery client: %w", err)
	}
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		if _, last = dc.ServerVersion(); last == nil {
			return nil
		}
	}
	return fmt.Errorf("cannot reach the API server at %s: %w", rc.Host, last)
}

// newManager builds the controller-runtime manager with leader election,
// probes, metrics and the three reconcilers (controllers.NewManager, which
// the tests run too).
func newManager(ctx context.Context, f *flags, cfg *config.ControllerConfig) (ctrl.Manager, error) {
	rc, err := restConfig(f.kubeconfig, &cfg.Manager)
	if err != nil {
		return nil, err
	}
	if err := preflight(ctx, rc); err != nil {
		return nil, err
	}
	le := cfg.Manager.LeaderElection
	metrics := metricsserver.Options{BindAddress: f.metricsAddr}
	if f.metricsSecure {
		// Who may read metrics is the API server's decision: a bearer
		// token, reviewed, and get on /metrics (the chart's metrics-reader
		// ClusterRole).
		metrics.SecureServing = true
		metrics.FilterProvider = controllers.MetricsAuth
		metrics.CertDir = f.metricsCertDir
	}
	pprofAddr := ""
	if f.profiling {
		pprofAddr = f.pprofAddr
	}
	mgr, err := controllers.NewManager(ctx, rc, controllers.ManagerOptions{
		Metrics:                metrics,
		HealthProbeBindAddress: f.probeAddr,
		PprofBindAddress:       pprofAddr,
		LeaderElection:         f.leaderElect,
		LeaseName:              le.LeaseName,
		LeaseNamespace:         f.leaderElectionNamespace,
		LeaseDuration:          le.LeaseDuration.Duration,
		RenewDeadline:          le.RenewDeadline.Duration,
		RetryPeriod:            le.RetryPeriod.Duration,
		Controllers:            controllerOptions(cfg),
	})
	if err != nil && f.leaderElect && f.leaderElectionNamespace == "" {
		return nil, errors.Join(err, &usageError{msg: "outside a cluster, give --leader-election-namespace (or --leader-elect=false)"})
	}
	return mgr, err
}

// controllerOptions converts the configuration for the controllers package.
func controllerOptions(cfg *config.ControllerConfig) controllers.Options {
	o := controllers.Options{
		Approver: controllers.ApproverOptions{
			Policy:     cfg.ApproverPolicy(),
			DryRun:     cfg.Approver.Mode == config.ModeDryRun,
			Workers:    cfg.Manager.Workers.Approver,
			DNSTimeout: cfg.Approver.KubeletServing.DNSResolution.Timeout.Duration,
			// Allowed answers only: a flood from one bootstrap token costs one review.
			AuthorizationCacheTTL: cfg.Approver.NodeClient.AuthorizationCacheTTL.Duration,
		},
		Signer: controllers.SignerOptions{
			Signers: cfg.SignerConfigs(),
			Workers: cfg.Manager.Workers.Signer,
		},
	}
	if t := cfg.Approver.KubeletServing.StartupTaint; t != nil {
		o.StartupTaint = &corev1.Taint{Key: t.Key, Effect: corev1.TaintEffect(t.Effect)}
	}
	if a := cfg.Audit; a.Enabled {
		o.Audit = &controllers.AuditOptions{Interval: a.Interval.Duration, Timeout: a.Timeout.Duration, Concurrency: a.Concurrency}
	}
	if c := cfg.Cleaner; c.Enabled {
		o.Cleaner = &controllers.CleanerOptions{
			AllSigners:            c.AllSigners,
			IssuedAfter:           c.DeleteIssuedAfter.Duration,
			DeniedAfter:           c.DeleteDeniedAfter.Duration,
			FailedAfter:           c.DeleteFailedAfter.Duration,
			PendingAfter:          c.DeletePendingAfter.Duration,
			ApprovedUnissuedAfter: c.DeleteApprovedUnissuedAfter.Duration,
			DeleteExpired:         c.DeleteExpired,
			Interval:              c.Interval.Duration,
			Workers:               cfg.Manager.Workers.Cleaner,
		}
	}
	return o
}
