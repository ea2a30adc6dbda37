package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

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

// StartControllers runs the controllers with o in a manager of their own,
// in this process, as the admin: the binary's cache options, metrics and
// probes off, controller names reusable by the next test's manager.
// newClient, when set, builds the manager's client. It returns once the
// cache has synced; the manager runs until stop, which the test's cleanup
// also calls.
func (c *Cluster) StartControllers(t testing.TB, o controllers.Options, newClient client.NewClientFunc) (mgr manager.Manager, stop func()) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(c.Admin, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		NewClient:              newClient,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := controllers.Setup(ctx, mgr, o); err != nil {
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
