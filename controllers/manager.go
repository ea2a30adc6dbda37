package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// ManagerOptions are the process matters of a manager; Controllers are the
// reconcilers' own.
type ManagerOptions struct {
	// Metrics serves /metrics ("0" as BindAddress disables it).
	Metrics metricsserver.Options
	// HealthProbeBindAddress serves /healthz and /readyz ("0" disables).
	HealthProbeBindAddress string
	// PprofBindAddress serves /debug/pprof ("" or "0" disables).
	PprofBindAddress string
	// LeaderElection, with the Lease's name, namespace and timings.
	LeaderElection                            bool
	LeaseName, LeaseNamespace                 string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// NewClient, when set, builds the manager's client (tests wrap it).
	NewClient client.NewClientFunc
	// Controllers are the reconcilers' options.
	Controllers Options
}

// NewManager builds the controller-runtime manager of the binary (and of
// the tests, which run the same one in-process): the lean cache, leader
// election, the health checks, and the three reconcilers.
func NewManager(ctx context.Context, rc *rest.Config, o ManagerOptions) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	mo := ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       o.Metrics,
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
		PprofBindAddress:              o.PprofBindAddress,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              o.LeaseName,
		LeaderElectionNamespace:       o.LeaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         CacheOptions(),
		NewClient:                     o.NewClient,
		// controller-runtime refuses a controller name already used in this
		// process. Ours are fixed and registered once per manager; the check
		// would only stop a second manager in the same process (the tests).
		Controller: crconfig.Controller{SkipNameValidation: ptr.To(true)},
	}
	if o.LeaderElection {
		mo.LeaseDuration, mo.RenewDeadline, mo.RetryPeriod = &o.LeaseDuration, &o.RenewDeadline, &o.RetryPeriod
	}
	mgr, err := ctrl.NewManager(rc, mo)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr)); err != nil {
		return nil, err
	}
	if err := Setup(ctx, mgr, o.Controllers); err != nil {
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
