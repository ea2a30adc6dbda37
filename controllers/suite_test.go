package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// One control plane for the package. Tests run one at a time, each with its
// own manager, and use names of their own.
var env *cluster.Cluster

func TestMain(m *testing.M) {
	// Controller logs go to stderr with KCC_TEST_LOG=1, else nowhere.
	out := io.Discard
	if os.Getenv("KCC_TEST_LOG") != "" {
		out = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(out), zap.UseDevMode(true)))
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the control plane:", err)
		os.Exit(1)
	}
	env = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the control plane:", err)
	}
	os.Exit(code)
}

// harness is one running manager with the controllers, and clients to drive
// it.
type harness struct {
	t        *testing.T
	admin    kubernetes.Interface
	registry *prometheus.Registry
	// cache is the manager's: registerNode waits until it holds the Node.
	cache client.Reader
}

// start runs a manager with the controllers until the test ends.
func start(t *testing.T, edit func(*controllers.Options)) *harness {
	t.Helper()
	return startIntercepted(t, edit, nil)
}

// startIntercepted is start with the manager's client wrapped: funcs see
// (and may act before) every call the controllers make.
func startIntercepted(t *testing.T, edit func(*controllers.Options), funcs *interceptor.Funcs) *harness {
	t.Helper()
	h := &harness{t: t, registry: prometheus.NewRegistry(), admin: env.AdminClientset()}
	// The suite's certificates last an hour, so that lifetimes under 8h
	// (NotAfter not backdated) are what the signer tests see.
	o := env.ControllerOptions()
	o.Signer.Signers = env.KubeletSigners(time.Hour)
	if edit != nil {
		edit(&o)
	}
	o.Registry = h.registry
	var newClient client.NewClientFunc
	if funcs != nil {
		newClient = func(cfg *rest.Config, o client.Options) (client.Client, error) {
			c, err := client.NewWithWatch(cfg, o)
			if err != nil {
				return nil, err
			}
			return interceptor.NewClient(c, *funcs), nil
		}
	}
	mgr, stop := env.StartControllers(t, o, newClient)
	t.Cleanup(func() {
		stop()
		h.deleteAll()
	})
	h.cache = mgr.GetCache()
	return h
}

// deleteAll removes the CSRs and Nodes a test made, so that the next test
// (or the next -count run) starts from an empty cluster.
func (h *harness) deleteAll() {
	ctx := context.Background()
	all := metav1.ListOptions{}
	if err := h.admin.CertificatesV1().CertificateSigningRequests().DeleteCollection(ctx, metav1.DeleteOptions{}, all); err != nil {
		h.t.Errorf("delete CSRs: %v", err)
	}
	if err := h.admin.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, all); err != nil {
		h.t.Errorf("delete Nodes: %v", err)
	}
	// Events about cluster-scoped objects live in the default namespace.
	if err := h.admin.CoreV1().Events(metav1.NamespaceDefault).DeleteCollection(ctx, metav1.DeleteOptions{}, all); err != nil {
		h.t.Errorf("delete Events: %v", err)
	}
}

// as returns a clientset acting as user in groups.
func as(user string, groups ...string) kubernetes.Interface { return env.Clientset(user, groups...) }

// asNode and asBootstrap are the two identities of a kubelet.
func asNode(node string) kubernetes.Interface { return env.Node(node) }

func asBootstrap(id string) kubernetes.Interface { return env.Bootstrap(id) }

// create files a CSR with the given identity.
func (h *harness) create(cs kubernetes.Interface, c pki.CSR) *certificatesv1.CertificateSigningRequest {
	h.t.Helper()
	created, err := cluster.CreateCSR(context.Background(), cs, c)
	if err != nil {
		h.t.Fatalf("create CSR %s: %v", c.Name, err)
	}
	return created
}

// registerNode creates a Node with the given addresses, as its kubelet does.
func (h *harness) registerNode(name string, addrs ...string) {
	h.t.Helper()
	if err := env.RegisterNode(context.Background(), name, addrs...); err != nil {
		h.t.Fatal(err)
	}
	// The controllers judge a CSR against the Nodes their cache has seen; a
	// test that files one right after registering a Node waits for the
	// watch, as a kubelet (which registers before it asks to serve) does.
	cluster.Poll(context.Background(), h.t, 20*time.Millisecond, 30*time.Second, "the cache has Node "+name+"'s addresses", func() bool {
		var n corev1.Node
		if err := h.cache.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
			return false
		}
		return len(n.Status.Addresses) == len(addrs)
	})
}

// waitFor polls a CSR until cond holds, and returns it.
func (h *harness) waitFor(name, what string, cond func(*certificatesv1.CertificateSigningRequest) bool) *certificatesv1.CertificateSigningRequest {
	h.t.Helper()
	csr, err := cluster.WaitCSR(context.Background(), h.admin, name, what, 30*time.Second, cond)
	if err != nil {
		h.t.Fatal(err)
	}
	return csr
}

func issued(csr *certificatesv1.CertificateSigningRequest) bool {
	return len(csr.Status.Certificate) > 0
}

func condition(typ certificatesv1.RequestConditionType) func(*certificatesv1.CertificateSigningRequest) bool {
	return func(csr *certificatesv1.CertificateSigningRequest) bool { return cluster.Condition(csr, typ) != nil }
}

func describe(csr *certificatesv1.CertificateSigningRequest) string { return cluster.Describe(csr) }

// certificate parses the leaf of an issued CSR and checks it chains to ca.
func (h *harness) certificate(csr *certificatesv1.CertificateSigningRequest, ca *x509.Certificate) *x509.Certificate {
	h.t.Helper()
	block, _ := pem.Decode(csr.Status.Certificate)
	if block == nil {
		h.t.Fatalf("CSR %s: status.certificate is not PEM", csr.Name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		h.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		h.t.Errorf("CSR %s: certificate does not chain to the CA: %v", csr.Name, err)
	}
	return c
}

// events returns the Events about a CSR, as "Type Reason: note".
func (h *harness) events(name string) []string {
	h.t.Helper()
	out, err := cluster.Events(context.Background(), h.admin, name)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// waitForEvent polls until an Event about the CSR contains want.
func (h *harness) waitForEvent(name, want string) {
	h.t.Helper()
	if err := cluster.WaitEvent(context.Background(), h.admin, name, want, 30*time.Second); err != nil {
		h.t.Fatal(err)
	}
}

// counter reads a counter, gauge or histogram count of the manager's
// registry.
func (h *harness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	families, err := h.registry.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// approveAsAdmin, denyAsAdmin and failAsAdmin set a condition as a second
// approver, a person with kubectl, or another signer would.
func (h *harness) approveAsAdmin(name string) {
	h.setCondition(name, certificatesv1.CertificateApproved)
}

func (h *harness) denyAsAdmin(name string) { h.setCondition(name, certificatesv1.CertificateDenied) }

func (h *harness) failAsAdmin(name string) { h.setCondition(name, certificatesv1.CertificateFailed) }

func (h *harness) setCondition(name string, typ certificatesv1.RequestConditionType) {
	h.t.Helper()
	if err := cluster.SetCondition(context.Background(), h.admin, name, typ, "SetByTest"); err != nil {
		h.t.Fatalf("set %s on %s: %v", typ, name, err)
	}
}

func (h *harness) exists(name string) bool {
	_, err := h.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	return !apierrors.IsNotFound(err)
}
