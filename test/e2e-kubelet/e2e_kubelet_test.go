//go:build e2ekubelet

// Package e2ekubelet proves the controller with real kubelets: a local
// control plane (etcd and kube-apiserver with bootstrap tokens, Node and RBAC
// authorization and NodeRestriction), the controller binary running with the
// identity, RBAC and configuration the Helm chart gives it (certificates
// shortened to minutes), and real kubelets (hack/build-tools.sh builds them
// from Go modules, with an in-memory container runtime) that bootstrap,
// register, get a serving certificate, rotate both and serve the issued
// certificate on their port.
//
// It needs root and a non-loopback IPv4 address, and fails at once, saying
// so, without either. `make e2e-kubelet` runs it; `make test` includes it.
package e2ekubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

// certDuration is every certificate's life: the kubelet rotates at 70-90% of
// it, so each kubelet renews both certificates within about two minutes.
const certDuration = 2 * time.Minute

func TestRealKubeletsBootstrapRotateAndServeTheIssuedCertificate(t *testing.T) {
	nodeIP := requireHost(t)
	binDir := kubeletDir(t)
	version, err := exec.Command(filepath.Join(binDir, "kubelet"), "--version").Output() //nolint:gosec // the test's own binary
	if err != nil {
		t.Fatalf("kubelet --version: %v", err)
	}
	t.Logf("kubelet %s from %s, node IP %s", bytes.TrimSpace(version), binDir, nodeIP)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()

	c := cluster.StartForTest(ctx, t)
	admin := kubernetes.NewForConfigOrDie(c.Admin)
	ctrl := startChartController(ctx, t, c, admin, certDuration)
	if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane and controller ready after %s", time.Since(start).Round(time.Second))

	token, err := c.CreateBootstrapToken(ctx, "abcdef", "0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := filepath.Join(c.Dir, "bootstrap.kubeconfig")
	if err := cluster.WriteKubeconfig(c.BootstrapConfig(token), bootstrap); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(c.Dir, "kubelet-client-ca.crt")
	if err := os.WriteFile(caFile, c.CA.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	name := "kubelet-real-a"
	k := startKubelet(t, kubeletOptions{
		name: name, nodeIP: nodeIP, binDir: binDir, ca: caFile, bootstrapKubeconfig: bootstrap,
		port: freePort(t, nodeIP), healthzPort: freePort(t, net.IPv4(127, 0, 0, 1)),
	})

	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	p := &progress{served: map[string]bool{}}
	var last string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 8*time.Minute, true, func(ctx context.Context) (bool, error) {
		if k.kubelet.Exited() {
			return false, fmt.Errorf("the kubelet exited (log: %s)", k.kubelet.LogFile)
		}
		if err := p.observe(ctx, admin, k, roots); err != nil {
			return false, err
		}
		if s := p.String(); s != last {
			t.Logf("%s after %s: %s", name, time.Since(start).Round(time.Second), s)
			last = s
		}
		return p.done(), nil
	})
	if err != nil {
		t.Fatalf("%s: %v; reached: %s", name, err, p)
	}
	t.Logf("%s bootstrapped, rotated both certificates and served each issued serving certificate; %s in all", name, time.Since(start).Round(time.Second))
	if err := ctrl.NeverRefused(); err != nil {
		t.Error(err)
	}
}

// progress is what one kubelet has shown so far.
type progress struct {
	bootstrapped   bool // a client CSR of the bootstrap token was issued
	clientRenewals int  // client CSRs of the node itself issued
	clientInUse    bool // the kubelet's current client certificate is the last issued
	servingIssued  int  // serving CSRs issued
	// served holds the serving certificates (PEM) seen on the kubelet's
	// port that match an issued serving CSR.
	served map[string]bool
}

func (p *progress) done() bool {
	return p.bootstrapped && p.clientRenewals >= 1 && p.clientInUse && p.servingIssued >= 2 && len(p.served) >= 2
}

func (p *progress) String() string {
	return fmt.Sprintf("bootstrapped=%t client renewals issued=%d current client certificate is the last issued=%t serving issued=%d distinct issued serving certificates served=%d",
		p.bootstrapped, p.clientRenewals, p.clientInUse, p.servingIssued, len(p.served))
}

// observe reads the kubelet's CSRs, its client certificate file and the
// certificate it serves.
func (p *progress) observe(ctx context.Context, admin kubernetes.Interface, k *realKubelet, roots *x509.CertPool) error {
	list, err := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil //nolint:nilerr // the API server is busy: look again
	}
	node := "system:node:" + k.name
	var lastClient *certificatesv1.CertificateSigningRequest
	issuedServing := map[string]bool{}
	p.bootstrapped, p.clientRenewals, p.servingIssued = false, 0, 0
	for i := range list.Items {
		csr := &list.Items[i]
		s := approver.StateOf(csr)
		if s.Denied || s.Failed {
			return fmt.Errorf("CSR %s of %s was refused: %+v", csr.Name, csr.Spec.Username, csr.Status.Conditions)
		}
		if !s.Issued {
			continue
		}
		switch {
		case csr.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && csr.Spec.Username == "system:bootstrap:abcdef":
			p.bootstrapped = true
		case csr.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && csr.Spec.Username == node:
			p.clientRenewals++
		case csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && csr.Spec.Username == node:
			p.servingIssued++
			issuedServing[string(bytes.TrimSpace(csr.Status.Certificate))] = true
		default:
			continue
		}
		if csr.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && (lastClient == nil || csr.CreationTimestamp.After(lastClient.CreationTimestamp.Time)) {
			lastClient = csr
		}
	}
	// The kubelet keeps its client certificate and key in one PEM file.
	if lastClient != nil {
		if b, err := os.ReadFile(filepath.Join(k.certDir, "kubelet-client-current.pem")); err == nil {
			p.clientInUse = bytes.Contains(b, bytes.TrimSpace(lastClient.Status.Certificate))
		}
	}
	served, err := servedCertificate(ctx, k, roots)
	if err == nil && issuedServing[served] {
		p.served[served] = true
	}
	return nil
}

// servedCertificate dials the kubelet's port on the node IP, verifies the
// certificate it presents against the cluster CA for that IP, and returns
// it as PEM.
func servedCertificate(ctx context.Context, k *realKubelet, roots *x509.CertPool) (string, error) {
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: k.nodeIP.String(), MinVersion: tls.VersionTLS12}}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", net.JoinHostPort(k.nodeIP.String(), strconv.Itoa(k.port)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", fmt.Errorf("no certificate")
	}
	return string(bytes.TrimSpace(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw}))), nil
}
