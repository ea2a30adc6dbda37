package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// The published bundle follows the CA files: first the current CA, then
// the next one announced in the trust file, then, once signing switches to
// it, the next one with the old one retained for a certificate lifetime. A
// deleted bundle comes back.
func TestTrustBundleFollowsTheCAFiles(t *testing.T) {
	ctx := context.Background()
	const lifetime = time.Hour
	bundleName := signer.BundleName(certificatesv1.KubeletServingSignerName, "test")
	cur := pki.MustCA(t, pki.CAOptions{CommonName: "current"})
	next := pki.MustCA(t, pki.CAOptions{CommonName: "next"})
	dir := t.TempDir()
	certFile, keyFile, trustFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "next.crt")
	writeFile(t, certFile, cur.CertPEM)
	writeFile(t, keyFile, cur.KeyPEM)
	writeFile(t, trustFile, nil)
	h := start(t, func(o *controllers.Options) {
		signerOnly(o)
		o.TrustResync = time.Second
		for i := range o.Signer.Signers {
			s := &o.Signer.Signers[i]
			if s.Name == certificatesv1.KubeletServingSignerName {
				s.CertFile, s.KeyFile, s.TrustFile, s.Duration = certFile, keyFile, trustFile, lifetime
				s.Bundle = &signer.Bundle{Name: bundleName, ConfigMapNamespace: metav1.NamespaceDefault, ConfigMapName: "test-serving-ca"}
			}
		}
	})
	t.Cleanup(func() {
		_ = h.admin.CertificatesV1().ClusterTrustBundles().Delete(ctx, bundleName, metav1.DeleteOptions{})
		_ = h.admin.CoreV1().ConfigMaps(metav1.NamespaceDefault).Delete(ctx, "test-serving-ca", metav1.DeleteOptions{})
	})

	// published waits until the bundle and the ConfigMap hold want, in
	// order, and returns the bundle's retention record.
	published := func(what string, want ...*x509.Certificate) map[string]string {
		t.Helper()
		var last string
		var retained map[string]string
		cluster.Poll(ctx, t, 50*time.Millisecond, 30*time.Second, what, func() bool {
			b, err := h.admin.CertificatesV1().ClusterTrustBundles().Get(ctx, bundleName, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false
			}
			cm, err := h.admin.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, "test-serving-ca", metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false
			}
			last = strings.Join(pki.CommonNames(signer.DecodeAnchors(b.Spec.TrustBundle)), ",")
			if b.Spec.TrustBundle != signer.EncodeAnchors(want) || cm.Data["ca.crt"] != b.Spec.TrustBundle {
				return false
			}
			if b.Spec.SignerName != certificatesv1.KubeletServingSignerName || b.Labels["app.kubernetes.io/managed-by"] != "kubelet-csr-controller" {
				t.Fatalf("bundle %s: signer %q, labels %v", bundleName, b.Spec.SignerName, b.Labels)
			}
			retained = map[string]string{}
			if v := b.Annotations["nodecsr.io/retained-anchors"]; v != "" {
				if err := json.Unmarshal([]byte(v), &retained); err != nil {
					t.Fatalf("retention record %q: %v", v, err)
				}
			}
			return true
		})
		if t.Failed() {
			t.Logf("last seen: %s", last)
		}
		return retained
	}

	if r := published("the current CA is published", cur.Cert); len(r) != 0 {
		t.Errorf("nothing is retained yet, got %v", r)
	}
	if got := h.counter("kubelet_csr_controller_trust_bundle_anchors", map[string]string{"object": "clustertrustbundle"}); got != 1 {
		t.Errorf("trust_bundle_anchors = %v, want 1", got)
	}

	// Announce the next CA: both are trusted, nothing is retained.
	writeFile(t, trustFile, next.CertPEM)
	if r := published("the next CA is announced beside the current one", cur.Cert, next.Cert); len(r) != 0 {
		t.Errorf("nothing is retained while both are in the files, got %v", r)
	}

	// Switch signing to the next CA: the old one stays for one lifetime.
	switched := time.Now()
	writeFile(t, keyFile, next.KeyPEM)
	writeFile(t, certFile, next.CertPEM)
	writeFile(t, trustFile, nil)
	r := published("the old CA is retained after the switch", next.Cert, cur.Cert)
	until, err := time.Parse(time.RFC3339, r[signer.AnchorID(cur.Cert)])
	if err != nil {
		t.Fatalf("retention of the old CA: %v (record %v)", err, r)
	}
	if lo, hi := switched.Add(lifetime).Add(-time.Second), time.Now().Add(lifetime).Add(time.Second); until.Before(lo) || until.After(hi) {
		t.Errorf("old CA retained until %s, want one lifetime after the switch (%s to %s)", until, lo, hi)
	}

	// A deleted bundle comes back at the next resync, with its record lost:
	// the old CA is then no longer known and only the files' CA is published.
	if err := h.admin.CertificatesV1().ClusterTrustBundles().Delete(ctx, bundleName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Poll(ctx, t, 50*time.Millisecond, 30*time.Second, "the deleted bundle is recreated", func() bool {
		b, err := h.admin.CertificatesV1().ClusterTrustBundles().Get(ctx, bundleName, metav1.GetOptions{})
		return err == nil && b.Spec.TrustBundle == signer.EncodeAnchors([]*x509.Certificate{next.Cert})
	})
}
