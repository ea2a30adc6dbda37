package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
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
// probes, metrics and the three reconcilers. Tests call it too.
func newManager(ctx context.Context, f *flags, cfg *config.ControllerConfig) (ctrl.Manager, error) {
	rc, err := restConfig(f.kubeconfig, &cfg.Manager)
	if err != nil {
		return nil, err
	}
	if err := preflight(ctx, rc); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	le := cfg.Manager.LeaderElection
	metrics := metricsserver.Options{BindAddress: f.metricsAddr}
	if f.profiling {
		metrics.ExtraHandlers = map[string]http.Handler{
			"/debug/pprof/":        http.HandlerFunc(pprof.Index),
			"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
			"/debug/pprof/heap":    pprof.Handler("heap"),
			"/debug/pprof/allocs":  pprof.Handler("allocs"),
		}
	}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metrics,
		HealthProbeBindAddress:        f.probeAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              le.LeaseName,
		LeaderElectionNamespace:       f.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &le.LeaseDuration.Duration,
		RenewDeadline:                 &le.RenewDeadline.Duration,
		RetryPeriod:                   &le.RetryPeriod.Duration,
		Cache:                         controllers.CacheOptions(),
		// controller-runtime refuses a controller name already used in this
		// process. Ours are fixed and registered once per manager; the check
		// would only stop a second manager in the same process (the tests).
		Controller: crconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		if f.leaderElect && f.leaderElectionNamespace == "" {
			return nil, errors.Join(err, &usageError{msg: "outside a cluster, give --leader-election-namespace (or --leader-elect=false)"})
		}
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr)); err != nil {
		return nil, err
	}
	if err := controllers.Setup(ctx, mgr, controllerOptions(cfg)); err != nil {
		return nil, err
	}
	return mgr, nil
}

// cacheSynced is ready once the informers this replica started have synced.
func cacheSynced(mgr ctrl.Manager) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches have not synced")
		}
		return nil
	}
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
