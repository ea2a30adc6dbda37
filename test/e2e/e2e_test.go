// Package e2e runs the whole rotation flow: a real control plane, the real
// kubelet-csr-controller binary as its own process, and simulated kubelets
// that use the kubelet's own certificate manager to bootstrap, register and
// rotate their client and serving certificates.
package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/kubelet"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// signingDuration is short so that every kubelet rotates several times in a
// couple of minutes (the kubelet rotates at 70-90% of a certificate's life).
// The jitter shortens each node's certificates by up to 15s, down to the
// one-minute floor (minDuration).
const (
	signingDuration = 75 * time.Second
	signingJitter   = "20%"
)

func TestKubeletsBootstrapAndRotateThroughTheController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()

	c := cluster.StartForTest(ctx, t)
	bin := cluster.ControllerBinaryForTest(ctx, t)
	cfgFile := filepath.Join(c.Dir, "config.yaml")
	cfg := cluster.ShortLived(c.ControllerConfig(), signingDuration)
	for i := range cfg.Signers {
		cfg.Signers[i].MinDuration.Duration = time.Minute
		cfg.Signers[i].Jitter = signingJitter
	}
	cfg.Approver.KubeletServing.StartupTaint = &config.StartupTaint{Key: startupTaint.Key, Effect: string(startupTaint.Effect)}
	ctrl, token := startController(ctx, t, c, bin, cfg, cfgFile, "abcdef")

	cs := kubernetes.NewForConfigOrDie(c.Admin)
	untainted := watchStartupTaint(ctx, t, cs)
	good := []string{"node-a", "node-b", "node-c"}
	var kubelets []*kubelet.Kubelet
	servedAt := map[string]func() (time.Time, *x509.Certificate){}
	startNode := func(o kubelet.Options) *kubelet.Kubelet {
		o.RegisterWithTaints = []corev1.Taint{startupTaint}
		k := startKubelet(ctx, t, c, token, o)
		kubelets = append(kubelets, k)
		servedAt[o.NodeName] = firstServingCertificate(ctx, k)
		return k
	}
	for i, name := range good {
		startNode(kubelet.Options{NodeName: name, Addresses: kubelet.Addresses(name, i+1)})
	}
	// node-a's address is 10.0.0.1; the liar claims it too. It starts once
	// node-a has registered: before that no Node lists the address, and the
	// liar's CSR is denied as SANNotOwnedByNode instead.
	cluster.Poll(ctx, t, 200*time.Millisecond, time.Minute, "node-a registers its addresses", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, good[0], metav1.GetOptions{})
		return err == nil && len(n.Status.Addresses) > 0
	})
	liar := startNode(kubelet.Options{NodeName: "node-liar", Addresses: kubelet.Addresses("node-liar", 9), ExtraServingIPs: []net.IP{net.ParseIP("10.0.0.1")}})
	late := startNode(kubelet.Options{NodeName: "node-late", Addresses: kubelet.Addresses("node-late", 8), RegisterDelay: 10 * time.Second})

	honest := append(slices.Clone(kubelets[:len(good)]), late)
	cluster.Poll(ctx, t, 200*time.Millisecond, 2*time.Minute, "every honest node has both certificates", func() bool {
		for _, k := range honest {
			if k.ClientCertificate() == nil || k.ServingCertificate() == nil {
				return false
			}
		}
		return true
	})
	t.Logf("all nodes bootstrapped after %s", time.Since(start).Round(time.Second))

	// Each honest node's start-up taint is lifted within a second of its
	// serving certificate (as its kubelet first saw it), and not before it
	// was issued; the liar, denied, keeps it and is warned.
	for _, k := range honest {
		var gone time.Time
		cluster.Poll(ctx, t, 50*time.Millisecond, 10*time.Second, k.Name()+"'s start-up taint is lifted", func() bool {
			gone = untainted(k.Name())
			return !gone.IsZero()
		})
		served, cert := servedAt[k.Name()]()
		if cert == nil {
			t.Fatalf("%s: no serving certificate noted", k.Name())
		}
		if lag := gone.Sub(served); lag > time.Second {
			t.Errorf("%s: the start-up taint was lifted %s after the serving certificate arrived, want within 1s", k.Name(), lag)
		}
		if issuedAt := cert.NotBefore; gone.Before(issuedAt) {
			t.Errorf("%s: the start-up taint was lifted at %s, before the serving certificate was issued (%s)", k.Name(), gone, issuedAt)
		}
		t.Logf("%s: start-up taint lifted %s after its serving certificate arrived", k.Name(), gone.Sub(served).Round(time.Millisecond))
	}
	if err := cluster.WaitEvent(ctx, cs, liar.Name(), "Warning ServingCertificateDenied", 30*time.Second); err != nil {
		t.Error(err)
	}

	// Stop the controller; kubelets keep filing CSRs as their certificates
	// near expiry. Start it again once some are waiting.
	if err := ctrl.Stop(); err != nil {
		t.Fatalf("stop the controller: %v", err)
	}
	stoppedAt := time.Now()
	// Restart as soon as one is waiting: a kubelet files its CSR at 70-90%
	// of its certificate's life and needs the new one before the old expires.
	cluster.Poll(ctx, t, 200*time.Millisecond, 2*time.Minute, "a CSR is filed while the controller is down", func() bool {
		return len(pendingCSRs(t, cs)) >= 1
	})
	filedMeanwhile := pendingCSRs(t, cs)
	t.Logf("%d CSRs filed while the controller was down for %s", len(filedMeanwhile), time.Since(stoppedAt).Round(time.Second))
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{Binary: bin, ConfigFile: cfgFile, Name: "controller-2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Kill() })
	for _, name := range filedMeanwhile {
		cluster.Poll(ctx, t, 200*time.Millisecond, time.Minute, name+" is decided after the restart", func() bool {
			csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			s := approver.StateOf(csr)
			return s.Denied || s.Issued
		})
	}

	cluster.Poll(ctx, t, 200*time.Millisecond, 4*time.Minute, "every honest node rotates both certificates twice", func() bool {
		for _, k := range honest {
			if cl, sv := k.Rotations(); cl < 2 || sv < 2 {
				return false
			}
		}
		return true
	})
	t.Logf("every honest node rotated twice after %s", time.Since(start).Round(time.Second))

	// Every issued certificate: chains to the CA, carries exactly the
	// requested identity and SANs, lives exactly the configured duration
	// less its node's share of the jitter.
	lifetimes := lifetimesOf(t, cfg, c.CA)
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	counts := map[string]int{}
	for i := range list.Items {
		csr := &list.Items[i]
		s := approver.StateOf(csr)
		node := nodeOf(t, csr)
		switch {
		case s.Issued:
			counts["issued"]++
			checkCertificate(t, csr, roots, node, byName(kubelets, node), lifetimes)
		case s.Denied:
			counts["denied"]++
			d := cluster.Condition(csr, certificatesv1.CertificateDenied)
			if node != liar.Name() || csr.Spec.SignerName != certificatesv1.KubeletServingSignerName || d.Reason != approver.ReasonSANOwnedByOtherNode {
				t.Errorf("%s (node %s, %s) denied: %s: %s", csr.Name, node, csr.Spec.SignerName, d.Reason, d.Message)
			}
		default:
			counts["pending"]++
			if age := time.Since(csr.CreationTimestamp.Time); age > 15*time.Second {
				t.Errorf("%s (node %s) still pending after %s", csr.Name, node, age.Round(time.Second))
			}
		}
	}
	if liar.ServingCertificate() != nil {
		t.Error("the node claiming another node's IP got a serving certificate")
	}
	if !untainted(liar.Name()).IsZero() {
		t.Error("the node without a serving certificate lost its start-up taint")
	}
	if counts["denied"] == 0 {
		t.Error("the liar's serving CSRs should have been denied")
	}
	t.Logf("CSRs: %v; whole flow took %s", counts, time.Since(start).Round(time.Second))
}

// lifetimesOf tells how long a certificate for a node should live, and
// checks that the jitter spreads this test's nodes.
func lifetimesOf(t *testing.T, cfg *config.ControllerConfig, made *pki.CA) func(signerName, node string) time.Duration {
	t.Helper()
	ca, err := signer.ParseCA(made.CertPEM, made.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string]signer.Config{}
	for _, sc := range cfg.SignerConfigs() {
		configs[sc.Name] = sc
	}
	now := ca.Cert.NotBefore.Add(time.Hour)
	lifetime := func(signerName, node string) time.Duration {
		l, err := signer.ComputeLifetime(now, nil, approver.NodeUserPrefix+node, configs[signerName], ca)
		if err != nil {
			t.Fatal(err)
		}
		return l.NotAfter.Sub(l.NotBefore)
	}
	seen := map[time.Duration]bool{}
	for _, node := range []string{"node-a", "node-b", "node-c", "node-late"} {
		for name := range configs {
			life := lifetime(name, node)
			if life < time.Minute || life > signingDuration {
				t.Errorf("%s of %s lives %s, outside [1m, %s]", name, node, life, signingDuration)
			}
			seen[life] = true
		}
	}
	if len(seen) < 3 {
		t.Errorf("the jitter spreads 8 certificates over %d lifetimes", len(seen))
	}
	return lifetime
}

// startupTaint is the taint every simulated kubelet registers with.
var startupTaint = corev1.Taint{Key: "node.example.com/serving-certificate", Effect: corev1.TaintEffectNoSchedule}

// watchStartupTaint watches Nodes and returns when each first appeared
// without the start-up taint, having had it (zero: not yet, or never had it).
func watchStartupTaint(ctx context.Context, t *testing.T, cs kubernetes.Interface) func(node string) time.Time {
	t.Helper()
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	tainted, gone := map[string]bool{}, map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok {
				continue
			}
			has := slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == startupTaint.Key })
			mu.Lock()
			switch {
			case has:
				tainted[n.Name] = true
			case tainted[n.Name] && gone[n.Name].IsZero():
				gone[n.Name] = time.Now()
			}
			mu.Unlock()
		}
	}()
	return func(node string) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return gone[node]
	}
}

// firstServingCertificate notes when k first holds a serving certificate,
// and that certificate.
func firstServingCertificate(ctx context.Context, k *kubelet.Kubelet) func() (time.Time, *x509.Certificate) {
	var mu sync.Mutex
	var at time.Time
	var first *x509.Certificate
	go func() {
		_ = wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
			cert := k.ServingCertificate()
			if cert == nil {
				return false, nil
			}
			mu.Lock()
			defer mu.Unlock()
			at, first = time.Now(), cert
			return true, nil
		})
	}()
	return func() (time.Time, *x509.Certificate) {
		mu.Lock()
		defer mu.Unlock()
		return at, first
	}
}

func checkCertificate(t *testing.T, csr *certificatesv1.CertificateSigningRequest, roots *x509.CertPool, node string, k *kubelet.Kubelet, lifetime func(signerName, node string) time.Duration) {
	t.Helper()
	block, _ := pem.Decode(csr.Status.Certificate)
	if block == nil {
		t.Errorf("%s: certificate is not PEM", csr.Name)
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Errorf("%s: %v", csr.Name, err)
		return
	}
	usage := x509.ExtKeyUsageClientAuth
	if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		usage = x509.ExtKeyUsageServerAuth
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: cert.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Errorf("%s: does not chain to the CA: %v", csr.Name, err)
	}
	if cert.Subject.CommonName != "system:node:"+node || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("%s: subject %s", csr.Name, cert.Subject)
	}
	if life, want := cert.NotAfter.Sub(cert.NotBefore), lifetime(csr.Spec.SignerName, node); life != want {
		t.Errorf("%s: lifetime %s, want %s", csr.Name, life, want)
	}
	wantDNS, wantIPs := []string(nil), []net.IP(nil)
	if usage == x509.ExtKeyUsageServerAuth && k != nil {
		wantDNS, wantIPs = k.ExpectedSANs()
	}
	if !slices.Equal(cert.DNSNames, wantDNS) || !slices.EqualFunc(cert.IPAddresses, wantIPs, net.IP.Equal) {
		t.Errorf("%s: SANs %v %v, want %v %v", csr.Name, cert.DNSNames, cert.IPAddresses, wantDNS, wantIPs)
	}
}

func pendingCSRs(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := range list.Items {
		if approver.StateOf(&list.Items[i]).Pending() {
			out = append(out, list.Items[i].Name)
		}
	}
	return out
}

func nodeOf(t *testing.T, csr *certificatesv1.CertificateSigningRequest) string {
	t.Helper()
	r := approver.Read(csr)
	if r.NodeName == "" {
		t.Errorf("%s: not a kubelet request", csr.Name)
	}
	return r.NodeName
}

func byName(ks []*kubelet.Kubelet, name string) *kubelet.Kubelet {
	for _, k := range ks {
		if k.Name() == name {
			return k
		}
	}
	return nil
}

// startController writes cfg to cfgFile, runs the controller binary with it
// until the test ends, and returns it with a bootstrap token (ID tokenID)
// for the kubelets.
func startController(ctx context.Context, t *testing.T, c *cluster.Cluster, bin string, cfg *config.ControllerConfig, cfgFile, tokenID string) (*cluster.Controller, string) {
	t.Helper()
	if err := cluster.WriteConfig(cfg, cfgFile); err != nil {
		t.Fatal(err)
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{Binary: bin, ConfigFile: cfgFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Kill() })
	token, err := c.CreateBootstrapToken(ctx, tokenID, "0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ctrl, token
}
