package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// KubeletSigners configures both kubelet signers with the cluster CA and
// certificates that last d.
func (c *Cluster) KubeletSigners(d time.Duration) []signer.Config {
	var signers []signer.Config
	for _, name := range []string{certificatesv1.KubeletServingSignerName, certificatesv1.KubeAPIServerClientKubeletSignerName} {
		signers = append(signers, signer.Config{Name: name, CertFile: c.CACertFile, KeyFile: c.CAKeyFile, Duration: d, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute})
	}
	return signers
}

// ControllerOptions are the controllers' options of an empty configuration
// file, with the cluster CA for every kubelet signer (certificates that last
// a day) and a one-second retry interval: what the envtest suites start
// from.
func (c *Cluster) ControllerOptions() controllers.Options {
	p := approver.DefaultPolicy()
	p.RetryInterval = time.Second
	return controllers.Options{
		Approver:       controllers.ApproverOptions{Policy: p, Workers: 16, DNSTimeout: time.Second},
		Signer:         controllers.SignerOptions{Signers: c.KubeletSigners(24 * time.Hour), Workers: 16},
		Registry:       prometheus.NewRegistry(),
		CAPollInterval: time.Hour,
	}
}

// StartControllers runs the controllers with o in a manager of their own,
// in this process, as the admin: the binary's manager (controllers.
// NewManager) with metrics, probes and leader election off. newClient, when
// set, builds the manager's client. It returns once the cache has synced;
// the manager runs until stop, which the test's cleanup also calls.
func (c *Cluster) StartControllers(t testing.TB, o controllers.Options, newClient client.NewClientFunc) (mgr manager.Manager, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := controllers.NewManager(ctx, c.Admin, controllers.ManagerOptions{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		NewClient:              newClient,
		Controllers:            o,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the manager's cache did not sync")
	}
	return mgr, stop
}
