package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/kubelet"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// The kubelet-serving CA is rotated the way README describes while
// kubelets keep rotating their certificates: the next CA is announced in
// the trust file, signing switches to it, and the old one leaves the
// published bundle once what it signed has expired. A verifier that trusts
// exactly the published ClusterTrustBundle checks every kubelet's serving
// certificate all along: no kubelet ever holds one it does not trust.
func TestServingCARotationKeepsEveryKubeletTrusted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	c := cluster.StartForTest(ctx, t)
	bin := cluster.ControllerBinaryForTest(ctx, t)
	cs := kubernetes.NewForConfigOrDie(c.Admin)

	// A serving CA of its own, as README recommends; clients keep the
	// cluster CA.
	caDir := filepath.Join(c.Dir, "serving-ca")
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := config.CAFiles{CertFile: filepath.Join(caDir, "tls.crt"), KeyFile: filepath.Join(caDir, "tls.key"), TrustFile: filepath.Join(caDir, "next.crt")}
	old := pki.MustCA(t, pki.CAOptions{CommonName: "serving CA 1"})
	next := pki.MustCA(t, pki.CAOptions{CommonName: "serving CA 2"})
	writeCA := func(ca *pki.CA, trust []byte) {
		t.Helper()
		// The key first: a certificate that does not match the key in
		// place is refused, and the old pair stays in use until both match.
		for _, f := range []struct {
			path string
			data []byte
		}{{files.KeyFile, ca.KeyPEM}, {files.CertFile, ca.CertPEM}, {files.TrustFile, trust}} {
			if err := os.WriteFile(f.path+".tmp", f.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f.path+".tmp", f.path); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeCA(old, nil)

	cfg := cluster.ShortLived(c.ControllerConfig(), signingDuration)
	for i := range cfg.Signers {
		if s := &cfg.Signers[i]; s.Name == certificatesv1.KubeletServingSignerName {
			s.CA = &files
			s.TrustBundle.ConfigMap = &config.TrustConfigMap{Namespace: metav1.NamespaceDefault}
		}
	}
	_, token := startController(ctx, t, c, bin, cfg, filepath.Join(c.Dir, "config.yaml"), "rotate")
	var kubelets []*kubelet.Kubelet
	for i, name := range []string{"rot-a", "rot-b", "rot-c"} {
		kubelets = append(kubelets, startKubelet(ctx, t, c, token, kubelet.Options{NodeName: name, Addresses: kubelet.Addresses(name, i+1)}))
	}

	v := &verifier{cs: cs, bundle: signer.BundleName(certificatesv1.KubeletServingSignerName, config.DefaultTrustBundleName), kubelets: kubelets}
	vctx, stopVerifier := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); v.run(vctx) }()
	defer func() { stopVerifier(); <-done }()

	waitTrusted := func(what string, want ...*pki.CA) {
		t.Helper()
		cluster.Poll(ctx, t, 100*time.Millisecond, 2*time.Minute, what, func() bool { return v.sawOnly(want...) })
	}
	waitSignedBy := func(ca *pki.CA) {
		t.Helper()
		cluster.Poll(ctx, t, 200*time.Millisecond, 3*time.Minute, "every kubelet serves a certificate from "+ca.Cert.Subject.CommonName, func() bool {
			for _, k := range kubelets {
				if s := k.ServingCertificate(); s == nil || s.CheckSignatureFrom(ca.Cert) != nil {
					return false
				}
			}
			return true
		})
	}

	waitTrusted("the verifier trusts the first CA", old)
	waitSignedBy(old)
	t.Logf("kubelets bootstrapped after %s", time.Since(start).Round(time.Second))

	// 1. Announce the next CA, and wait until verifiers trust it.
	writeCA(old, next.CertPEM)
	waitTrusted("the verifier trusts both CAs", old, next)
	// 2. Switch signing to it.
	switched := time.Now()
	writeCA(next, nil)
	waitSignedBy(next)
	t.Logf("every kubelet rotated to the next CA %s after the switch", time.Since(switched).Round(time.Second))
	// 3. The old CA leaves the bundle once what it signed has expired.
	waitTrusted("the old CA leaves the bundle", next)
	if dropped := time.Since(switched); dropped < signingDuration {
		t.Errorf("the old CA left the bundle %s after the switch, before the %s its certificates live", dropped.Round(time.Second), signingDuration)
	}
	t.Logf("the old CA left the bundle %s after the switch", time.Since(switched).Round(time.Second))

	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, "kubelet-serving-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["ca.crt"]; got != signer.EncodeAnchors([]*x509.Certificate{next.Cert}) {
		t.Errorf("ConfigMap kubelet-serving-ca holds %q, want the next CA alone", got)
	}
	stopVerifier()
	<-done
	checks, failures := v.result()
	if checks == 0 {
		t.Fatal("the verifier checked nothing")
	}
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d checks of a kubelet's certificate against the bundle, %d failed; whole flow %s", checks, len(failures), time.Since(start).Round(time.Second))
}

// verifier trusts what the published bundle holds, as metrics-server with
// a projected clusterTrustBundle volume does, and checks each kubelet's
// current serving certificate against it, again and again.
type verifier struct {
	cs       kubernetes.Interface
	bundle   string
	kubelets []*kubelet.Kubelet

	mu       sync.Mutex
	anchors  []*x509.Certificate // what the last round trusted
	checks   int
	failures []string
}

func (v *verifier) run(ctx context.Context) {
	for ctx.Err() == nil {
		v.round(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// round reads the bundle, then checks the certificates: a certificate read
// after the bundle was signed no earlier than the bundle was read.
func (v *verifier) round(ctx context.Context) {
	b, err := v.cs.CertificatesV1().ClusterTrustBundles().Get(ctx, v.bundle, metav1.GetOptions{})
	if err != nil {
		return // not published yet, or the test is ending
	}
	anchors := signer.DecodeAnchors(b.Spec.TrustBundle)
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.anchors = anchors
	for _, k := range v.kubelets {
		cert := k.ServingCertificate()
		if cert == nil {
			continue
		}
		v.checks++
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			v.failures = append(v.failures, fmt.Sprintf("%s: %s serving certificate from %q (serial %s) is not trusted by the bundle [%s]: %v",
				now.Format(time.RFC3339Nano), k.Name(), cert.Issuer.CommonName, cert.SerialNumber, strings.Join(pki.CommonNames(anchors), ", "), err))
		}
	}
}

// sawOnly reports whether the last round trusted exactly want, in order.
func (v *verifier) sawOnly(want ...*pki.CA) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.anchors) != len(want) {
		return false
	}
	for i, ca := range want {
		if !v.anchors[i].Equal(ca.Cert) {
			return false
		}
	}
	return true
}

func (v *verifier) result() (int, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.checks, v.failures
}

// startKubelet starts a simulated kubelet that bootstraps with token, its
// certificates in a directory of its own, stopped when the test ends.
func startKubelet(ctx context.Context, t *testing.T, c *cluster.Cluster, token string, o kubelet.Options) *kubelet.Kubelet {
	t.Helper()
	o.Bootstrap = c.BootstrapConfig(token)
	o.CertDir = filepath.Join(c.Dir, o.NodeName)
	if err := os.MkdirAll(o.CertDir, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := kubelet.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}
