package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/signer"
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
	admin    *kubernetes.Clientset
	registry *prometheus.Registry
	caCert   string
	caKey    string
}

// defaultOptions are the controllers' options of an empty configuration
// file, with the cluster CA for every signer and a short retry interval.
func defaultOptions(caCert, caKey string) controllers.Options {
	p := approver.DefaultPolicy()
	p.RetryInterval = time.Second
	var signers []signer.Config
	for _, name := range []string{certificatesv1.KubeletServingSignerName, certificatesv1.KubeAPIServerClientKubeletSignerName} {
		signers = append(signers, signer.Config{Name: name, CertFile: caCert, KeyFile: caKey, Duration: time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute})
	}
	return controllers.Options{
		Approver:       controllers.ApproverOptions{Policy: p, Workers: 4, DNSTimeout: time.Second},
		Signer:         controllers.SignerOptions{Signers: signers, Workers: 4},
		CAPollInterval: time.Hour,
	}
}

// start runs a manager with the controllers until the test ends.
func start(t *testing.T, edit func(*controllers.Options)) *harness {
	t.Helper()
	h := &harness{t: t, registry: prometheus.NewRegistry(), caCert: env.CACertFile, caKey: env.CAKeyFile}
	o := defaultOptions(h.caCert, h.caKey)
	if edit != nil {
		edit(&o)
	}
	o.Registry = h.registry
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := ctrl.NewManager(env.Admin, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		Controller:             controllerConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(ctx, mgr, o); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.deleteAll()
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	h.admin = kubernetes.NewForConfigOrDie(env.Admin)
	return h
}

// controllerConfig lets every test's manager register controllers of the
// same names in one process.
func controllerConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
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
func as(user string, groups ...string) *kubernetes.Clientset {
	return kubernetes.NewForConfigOrDie(env.As(user, groups...))
}

// asNode and asBootstrap are the two identities of a kubelet.
func asNode(node string) *kubernetes.Clientset { return as("system:node:"+node, cluster.NodesGroup) }

func asBootstrap(id string) *kubernetes.Clientset {
	return as("system:bootstrap:"+id, cluster.BootstrappersGroup)
}

// create files a CSR with the given identity; spec.username and groups are
// set by the API server from that identity.
func (h *harness) create(cs *kubernetes.Clientset, c pki.CSR) *certificatesv1.CertificateSigningRequest {
	h.t.Helper()
	obj := pki.MustObject(h.t, c)
	obj.Spec.Username, obj.Spec.Groups, obj.Spec.UID, obj.Spec.Extra = "", nil, "", nil
	obj.CreationTimestamp = metav1.Time{}
	created, err := cs.CertificatesV1().CertificateSigningRequests().Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("create CSR %s: %v", c.Name, err)
	}
	return created
}

// registerNode creates a Node with the given addresses, as its kubelet does.
func (h *harness) registerNode(name string, addrs ...string) {
	h.t.Helper()
	ctx := context.Background()
	cs := asNode(name)
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("register node %s: %v", name, err)
	}
	for _, a := range addrs {
		typ := corev1.NodeInternalIP
		if net.ParseIP(a) == nil {
			typ = corev1.NodeHostName
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: typ, Address: a})
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		h.t.Fatalf("set addresses of node %s: %v", name, err)
	}
}

// waitFor polls a CSR until cond holds, and returns it.
func (h *harness) waitFor(name, what string, cond func(*certificatesv1.CertificateSigningRequest) bool) *certificatesv1.CertificateSigningRequest {
	h.t.Helper()
	var last *certificatesv1.CertificateSigningRequest
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		csr, err := h.admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		last = csr
		return cond(csr), nil
	})
	if err != nil {
		h.t.Fatalf("CSR %s: not %s within 30s; last seen: %s", name, what, describe(last))
	}
	return last
}

func issued(csr *certificatesv1.CertificateSigningRequest) bool {
	return len(csr.Status.Certificate) > 0
}

func condition(typ certificatesv1.RequestConditionType) func(*certificatesv1.CertificateSigningRequest) bool {
	return func(csr *certificatesv1.CertificateSigningRequest) bool {
		for _, c := range csr.Status.Conditions {
			if c.Type == typ && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}
}

func conditionOf(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if csr.Status.Conditions[i].Type == typ {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

func describe(csr *certificatesv1.CertificateSigningRequest) string {
	if csr == nil {
		return "nothing"
	}
	var parts []string
	for _, c := range csr.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s/%s: %s", c.Type, c.Reason, c.Message))
	}
	return fmt.Sprintf("conditions %q, certificate %d bytes", parts, len(csr.Status.Certificate))
}

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

// events returns the notes of the Events about a CSR, as "Type Reason: note".
func (h *harness) events(name string) []string {
	h.t.Helper()
	list, err := h.admin.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return out
}

// waitForEvent polls until an Event about the CSR contains want.
func (h *harness) waitForEvent(name, want string) {
	h.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, e := range h.events(name) {
			if strings.Contains(e, want) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		h.t.Fatalf("CSR %s: no Event containing %q; events: %q", name, want, h.events(name))
	}
}

// counter reads a counter of the manager's registry.
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

// approveAsAdmin approves a CSR through /approval, as a second approver or
// a person with kubectl would.
func (h *harness) approveAsAdmin(name string) {
	h.t.Helper()
	ctx := context.Background()
	csr, err := h.admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "ApprovedByTest", Message: "approved by the test",
	})
	if _, err := h.admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{}); err != nil {
		h.t.Fatalf("approve %s: %v", name, err)
	}
}

func (h *harness) exists(name string) bool {
	_, err := h.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	return !apierrors.IsNotFound(err)
}
