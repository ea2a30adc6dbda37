package signer_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestParseCA(t *testing.T) {
	t.Parallel()
	root := pki.MustCA(t, pki.CAOptions{CommonName: "root"})
	other := pki.MustCA(t, pki.CAOptions{CommonName: "other"})
	inter := pki.MustCA(t, pki.CAOptions{CommonName: "inter", Parent: root})
	tests := []struct {
		name    string
		cert    []byte
		key     []byte
		wantErr string
	}{
		{"an ECDSA CA loads", root.CertPEM, root.KeyPEM, ""},
		{"an intermediate followed by its root loads", cat(inter.CertPEM, root.CertPEM), inter.KeyPEM, ""},
		{"a key that does not match the certificate is refused", root.CertPEM, other.KeyPEM, "does not match"},
		{"issuers out of order are refused", cat(inter.CertPEM, other.CertPEM), inter.KeyPEM, "did not issue the one before it"},
		{"an empty certificate file is refused", nil, root.KeyPEM, "no CERTIFICATE PEM block"},
		{"a key in the certificate file is refused", root.KeyPEM, root.KeyPEM, `holds a "PRIVATE KEY" PEM block`},
		{"an empty key file is refused", root.CertPEM, nil, "no PEM block"},
		{"a certificate in the key file is refused", root.CertPEM, root.CertPEM, `holds a "CERTIFICATE" PEM block`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := signer.ParseCA(tc.cert, tc.key)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("want success, got %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	for _, alg := range []string{pki.RSA2048, pki.ECDSAP384, pki.Ed25519} {
		t.Run("a CA with an "+alg+" key loads", func(t *testing.T) {
			t.Parallel()
			ca := pki.MustCA(t, pki.CAOptions{KeyAlg: alg})
			if _, err := signer.ParseCA(ca.CertPEM, ca.KeyPEM); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseCARefusesALeaf(t *testing.T) {
	t.Parallel()
	ca := mustCA(t, pki.MustCA(t, pki.CAOptions{}))
	key := pki.MustKey(t, pki.ECDSAP256)
	c := pki.ClientRenewal("n1")
	c.Request.Key = key
	issued, err := signer.Sign(ca, pki.MustObject(t, c), kubeletClient, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pkcs8(t, key)
	if _, err := signer.ParseCA(issued.PEM, keyPEM); err == nil || !strings.Contains(err.Error(), "is not a CA") {
		t.Fatalf("a leaf certificate must not be accepted as a CA, got %v", err)
	}
}

func TestFileCAReloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := pki.MustCA(t, pki.CAOptions{CommonName: "first"})
	second := pki.MustCA(t, pki.CAOptions{CommonName: "second"})
	write(t, certFile, first.CertPEM)
	write(t, keyFile, first.KeyPEM)

	var mu sync.Mutex
	var reports []string
	f := signer.NewFileCA(certFile, keyFile, func(ca *signer.CA, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			reports = append(reports, "error")
		} else {
			reports = append(reports, ca.Cert.Subject.CommonName)
		}
	})
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx, time.Hour, func(err error) { t.Errorf("the CA files are not watched: %v", err) }) // events only: polling is too slow to pass this test

	// A certificate that no longer matches the key keeps the old CA, and is
	// reported once.
	write(t, certFile, second.CertPEM)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(reports) >= 2 })
	if got := f.Current().Cert.Subject.CommonName; got != "first" {
		t.Fatalf("a mismatched pair replaced the CA with %q", got)
	}
	// Completing the pair switches to the new CA.
	write(t, keyFile, second.KeyPEM)
	waitFor(t, func() bool { return f.Current().Cert.Subject.CommonName == "second" })
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(reports, ",") != "first,error,second" {
		t.Errorf("reports = %q, want first,error,second", reports)
	}
}

// Files that cannot be watched are still followed, by polling, and the
// reason is reported so that an operator knows changes will be slow.
func TestFileCAPollsWhenTheFilesCannotBeWatched(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "not-yet")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	f := signer.NewFileCA(certFile, keyFile, nil)
	watchErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx, 20*time.Millisecond, func(err error) { watchErr <- err })

	select {
	case err := <-watchErr:
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("the watch failure %q does not name the directory %s", err, dir)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a missing directory was not reported as unwatchable")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := pki.MustCA(t, pki.CAOptions{CommonName: "polled"})
	write(t, certFile, ca.CertPEM)
	write(t, keyFile, ca.KeyPEM)
	waitFor(t, func() bool { c := f.Current(); return c != nil && c.Cert.Subject.CommonName == "polled" })
}

func TestFileCAKeepsTheLastGoodCAWhenAFileDisappears(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := pki.MustCA(t, pki.CAOptions{})
	write(t, certFile, ca.CertPEM)
	write(t, keyFile, ca.KeyPEM)
	f := signer.NewFileCA(certFile, keyFile, nil)
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil {
		t.Fatal("want an error for the missing key")
	}
	if f.Current() == nil {
		t.Fatal("the last good CA must stay in use")
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// write replaces a file atomically, as a Secret volume update does.
func write(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatal("condition not met within 10s")
	}
}

func pkcs8(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
