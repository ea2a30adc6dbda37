// Package cutover proves the README's cut-over from kube-controller-manager
// with the real kube-controller-manager (v1.37.2, built by hack/) running
// beside this controller with exactly the documented flags, and the way
// back.
package cutover

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// The flags of the README's cut-over: kube-controller-manager keeps
// kubeadm's bootstrapsigner and tokencleaner, stops approving and cleaning
// CSRs, and signs only the signers this controller does not take (one flag
// pair per signer, and none for the two kubelet signers, which it then
// does not start). caCert and caKey are kubeadm's /etc/kubernetes/pki/ca.*.
func cutOverFlags(caCert, caKey string) []string {
	return []string{
		"--controllers=" + cutOverControllers,
		"--cluster-signing-cert-file=",
		"--cluster-signing-key-file=",
		"--cluster-signing-kube-apiserver-client-cert-file=" + caCert,
		"--cluster-signing-kube-apiserver-client-key-file=" + caKey,
		"--cluster-signing-legacy-unknown-cert-file=" + caCert,
		"--cluster-signing-legacy-unknown-key-file=" + caKey,
	}
}

// kubeadm's own flags: the way back.
func kubeadmFlags(caCert, caKey string) []string {
	return []string{
		"--controllers=" + kubeadmControllers,
		"--cluster-signing-cert-file=" + caCert,
		"--cluster-signing-key-file=" + caKey,
	}
}

const (
	cutOverControllers = "*,bootstrapsigner,tokencleaner,-csrapproving,-csrcleaner"
	kubeadmControllers = "*,bootstrapsigner,tokencleaner"
)

func TestCutOverFromKubeControllerManagerAndBack(t *testing.T) {
	ctx := context.Background()
	c := cluster.StartForTest(ctx, t)
	admin := c.AdminClientset()
	// kube-controller-manager signs with its own CA here, so that a
	// certificate tells who signed it (in a cluster both use the cluster CA).
	kcmCA := pki.MustCA(t, pki.CAOptions{CommonName: "kube-controller-manager signer"})
	kcmCert, kcmKey := filepath.Join(c.Dir, "kcm-ca.crt"), filepath.Join(c.Dir, "kcm-ca.key")
	writeFile(t, kcmCert, kcmCA.CertPEM)
	writeFile(t, kcmKey, kcmCA.KeyPEM)

	kcm, err := c.StartKubeControllerManager("kcm-cut-over", cutOverFlags(kcmCert, kcmKey)...)
	if err != nil {
		t.Fatal(err)
	}
	stopKCM := once(kcm.Stop)
	t.Cleanup(stopKCM)

	cfg := c.ControllerConfig()
	cfg.Cleaner.AllSigners = true // kube-controller-manager's csrcleaner is off
	cfgFile := filepath.Join(c.Dir, "config.yaml")
	if err := cluster.WriteConfig(cfg, cfgFile); err != nil {
		t.Fatal(err)
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{Binary: cluster.ControllerBinaryForTest(ctx, t), ConfigFile: cfgFile})
	if err != nil {
		t.Fatal(err)
	}
	stopCtrl := once(func() { _ = ctrl.Stop() })
	t.Cleanup(stopCtrl)
	if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	token, err := c.CreateBootstrapToken(ctx, "abcdef", "0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// bootstrapsigner still signs cluster-info for new nodes to join with.
	publishClusterInfo(ctx, t, admin, c)
	cluster.Poll(ctx, t, 200*time.Millisecond, time.Minute, "bootstrapsigner signs kube-public/cluster-info for token abcdef", func() bool {
		cm, err := admin.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, "cluster-info", metav1.GetOptions{})
		return err == nil && cm.Data["jws-kubeconfig-abcdef"] != ""
	})

	// Kubelet CSRs: approved and signed by this controller only.
	if err := c.RegisterNode(ctx, "cut-1", "10.20.0.1", "cut-1"); err != nil {
		t.Fatal(err)
	}
	boot := create(ctx, t, kubernetes.NewForConfigOrDie(c.BootstrapConfig(token)), named(pki.ClientBootstrap("cut-2", "abcdef"), "cut-bootstrap"))
	renewal := create(ctx, t, c.Node("cut-1"), named(pki.ClientRenewal("cut-1"), "cut-renewal"))
	serving := create(ctx, t, c.Node("cut-1"), named(pki.Serving("cut-1", []string{"cut-1"}, pki.IPs("10.20.0.1")), "cut-serving"))
	for _, name := range []string{boot, renewal, serving} {
		got := issued(ctx, t, admin, name)
		a := cluster.Condition(got, certificatesv1.CertificateApproved)
		if a.Reason != approver.ReasonAutoApproved || !strings.HasPrefix(a.Message, "Auto-approved kubelet") {
			t.Errorf("%s: approved by %q (%q); want this controller", name, a.Reason, a.Message)
		}
		if got := len(got.Status.Conditions); got != 1 {
			t.Errorf("%s: %d conditions; want only this controller's approval", name, got)
		}
		chainsTo(t, got, c.CA, kcmCA)
		if ev := issuedEvents(ctx, t, admin, name); ev != 1 {
			t.Errorf("%s: %d Issued Events; want exactly one", name, ev)
		}
	}

	// A kube-apiserver-client CSR approved by hand is signed by
	// kube-controller-manager, which this controller leaves alone.
	alice := pki.ClientRenewal("alice")
	alice.SignerName = certificatesv1.KubeAPIServerClientSignerName
	alice.Request.Subject = pki.Name("alice", "developers")
	aliceName := create(ctx, t, admin, named(alice, "cut-apiserver-client"))
	if err := cluster.SetCondition(ctx, admin, aliceName, certificatesv1.CertificateApproved, "ApprovedByAdmin"); err != nil {
		t.Fatal(err)
	}
	chainsTo(t, issued(ctx, t, admin, aliceName), kcmCA, c.CA)

	// kube-controller-manager started the signers it keeps, and not the
	// kubelet ones.
	stopCtrl()
	stopKCM()
	logged, err := os.ReadFile(kcm.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"csrsigning-kube-apiserver-client", "csrsigning-legacy-unknown"} {
		if !strings.Contains(string(logged), name) {
			t.Errorf("kube-controller-manager did not start %s (log %s)", name, kcm.LogFile)
		}
	}
	for _, name := range []string{"csrsigning-kubelet-serving", "csrsigning-kubelet-client", "csrapproving", "csrcleaner"} {
		if strings.Contains(string(logged), `"`+name+`"`) {
			t.Errorf("kube-controller-manager started %s with the cut-over flags", name)
		}
	}

	// The way back: this controller stopped, kubeadm's flags restored.
	kcm, err = c.StartKubeControllerManager("kcm-restored", kubeadmFlags(c.CACertFile, c.CAKeyFile)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kcm.Stop)
	back := create(ctx, t, kubernetes.NewForConfigOrDie(c.BootstrapConfig(token)), named(pki.ClientBootstrap("cut-3", "abcdef"), "back-bootstrap"))
	got := issued(ctx, t, admin, back)
	if a := cluster.Condition(got, certificatesv1.CertificateApproved); !strings.Contains(a.Message, "Auto approving kubelet client certificate after SubjectAccessReview") {
		t.Errorf("after the way back, the bootstrap CSR was approved with %q; want kube-controller-manager's csrapproving", a.Message)
	}
	chainsTo(t, got, c.CA, kcmCA)
	// kube-controller-manager never approves serving CSRs; approved by hand,
	// it signs them again.
	servingBack := create(ctx, t, c.Node("cut-1"), named(pki.Serving("cut-1", []string{"cut-1"}, pki.IPs("10.20.0.1")), "back-serving"))
	if err := cluster.SetCondition(ctx, admin, servingBack, certificatesv1.CertificateApproved, "ApprovedByAdmin"); err != nil {
		t.Fatal(err)
	}
	chainsTo(t, issued(ctx, t, admin, servingBack), c.CA, kcmCA)
	// The log names the controllers as the cut-over check above reads it.
	if logged, err := os.ReadFile(kcm.LogFile); err != nil || !strings.Contains(string(logged), `"csrsigning-kubelet-serving"`) || !strings.Contains(string(logged), `"csrapproving"`) {
		t.Errorf("the restored kube-controller-manager's log does not name csrsigning-kubelet-serving and csrapproving as the check expects (%v)", err)
	}
}

// publishClusterInfo writes kube-public/cluster-info as kubeadm does: a
// kubeconfig with the API server's address and CA, for bootstrapsigner to
// sign with every bootstrap token meant for signing.
func publishClusterInfo(ctx context.Context, t *testing.T, cs kubernetes.Interface, c *cluster.Cluster) {
	t.Helper()
	kubeconfig := "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: " + c.Admin.Host + "\n"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic}, Data: map[string]string{"kubeconfig": kubeconfig}}
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func named(c pki.CSR, name string) pki.CSR { c.Name = name; return c }

func create(ctx context.Context, t *testing.T, cs kubernetes.Interface, c pki.CSR) string {
	t.Helper()
	created, err := cluster.CreateCSR(ctx, cs, c)
	if err != nil {
		t.Fatalf("create %s: %v", c.Name, err)
	}
	return created.Name
}

func issued(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	got, err := cluster.WaitCSR(ctx, cs, name, "issued", time.Minute, func(csr *certificatesv1.CertificateSigningRequest) bool {
		return len(csr.Status.Certificate) > 0
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// chainsTo checks that the CSR's certificate is one certificate, issued by
// want and not by other.
func chainsTo(t *testing.T, csr *certificatesv1.CertificateSigningRequest, want, other *pki.CA) {
	t.Helper()
	block, rest := pem.Decode(csr.Status.Certificate)
	if block == nil || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("%s: status.certificate is not exactly one PEM certificate", csr.Name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(want.Cert); err != nil {
		t.Errorf("%s: not signed by %q: %v", csr.Name, want.Cert.Subject.CommonName, err)
	}
	if cert.CheckSignatureFrom(other.Cert) == nil {
		t.Errorf("%s: signed by %q", csr.Name, other.Cert.Subject.CommonName)
	}
}

func issuedEvents(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) int {
	t.Helper()
	var events []string
	cluster.Poll(ctx, t, 100*time.Millisecond, 30*time.Second, "the Issued Event of "+name, func() bool {
		var err error
		events, err = cluster.Events(ctx, cs, name)
		return err == nil && strings.Contains(strings.Join(events, "\n"), "Normal Issued:")
	})
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, "Normal Issued:") {
			n++
		}
	}
	return n
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// once makes stop safe to call again (by the test, then its cleanup).
func once(stop func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			stop()
		}
	}
}

// The README shows exactly the flags this package proves.
func TestTheREADMEShowsTheProvedFlags(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, flag := range cutOverFlags("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key") {
		if !strings.Contains(readme, flag+"\n") {
			t.Errorf("README does not show the flag %q", flag)
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
		want := "{name: " + name + ", value: " + value + "}"
		if value == "" {
			want = "{name: " + name + `, value: ""}`
		} else if strings.ContainsAny(value, "*,") {
			want = "{name: " + name + `, value: "` + value + `"}`
		}
		if !strings.Contains(readme, want) {
			t.Errorf("README's kubeadm extraArgs do not hold %s", want)
		}
	}
	if !strings.Contains(readme, "--controllers="+kubeadmControllers) {
		t.Errorf("README does not give kubeadm's own --controllers=%s for the way back", kubeadmControllers)
	}
}
