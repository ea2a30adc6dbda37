package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// signerOnly runs the signer alone: the test decides approvals itself.
func signerOnly(o *controllers.Options) {
	o.Approver.Policy.NodeClient.Enabled = false
	o.Approver.Policy.Serving.Enabled = false
}

func TestSignerIssuesOnlyApprovedCSRs(t *testing.T) {
	h := start(t, signerOnly)
	pending := h.create(asNode("sign-1"), named(pki.ClientRenewal("sign-1"), "sign-pending"))
	denied := h.create(asNode("sign-1"), named(pki.ClientRenewal("sign-1"), "sign-denied"))
	h.denyAsAdmin(denied.Name)
	failed := h.create(asNode("sign-1"), named(pki.ClientRenewal("sign-1"), "sign-failed"))
	h.failAsAdmin(failed.Name) // first: approved first, it could be issued in between
	h.approveAsAdmin(failed.Name)
	apiClient := pki.ClientRenewal("sign-1")
	apiClient.Name, apiClient.SignerName = "sign-unmanaged", certificatesv1.KubeAPIServerClientSignerName
	unmanaged := h.create(asNode("sign-1"), apiClient)
	h.approveAsAdmin(unmanaged.Name)

	approved := h.create(asNode("sign-1"), named(pki.ClientRenewal("sign-1"), "sign-approved"))
	h.approveAsAdmin(approved.Name)
	got := h.waitFor(approved.Name, "issued", issued)
	cert := h.certificate(got, env.CA.Cert)
	// A lifetime under 8h keeps NotAfter at now+1h, NotBefore is backdated.
	if life := cert.NotAfter.Sub(cert.NotBefore); life != time.Hour+5*time.Minute {
		t.Errorf("lifetime %s, want the signer's 1h plus the 5m backdate", life)
	}
	// The approved one was issued after the others were seen; none of them
	// may have a certificate.
	for _, n := range []string{pending.Name, denied.Name, failed.Name, unmanaged.Name} {
		if got := h.waitFor(n, "read", func(*certificatesv1.CertificateSigningRequest) bool { return true }); issued(got) {
			t.Errorf("%s got a certificate: %s", n, describe(got))
		}
	}
}

func TestSignerValidationFailureIsFinal(t *testing.T) {
	h := start(t, signerOnly)
	c := pki.Serving("valid-1", nil, pki.IPs("10.8.0.1"))
	c.Name = "sign-bad-org"
	c.Request.Subject.Organization = []string{"system:masters"}
	created := h.create(asNode("valid-1"), c)
	h.approveAsAdmin(created.Name)
	got := h.waitFor(created.Name, "failed", condition(certificatesv1.CertificateFailed))
	f := cluster.Condition(got, certificatesv1.CertificateFailed)
	if f.Reason != controllers.ReasonSignerValidation || f.Message != "subject organization is not system:nodes" {
		t.Errorf("want SignerValidationFailure with Kubernetes' message, got %s: %s", f.Reason, f.Message)
	}
	h.waitForEvent(created.Name, "Warning SigningFailed: SignerValidationFailure")
	if issued(got) {
		t.Error("a failed CSR got a certificate")
	}
}

func TestAPIServerClientSignerWhenEnabled(t *testing.T) {
	h := start(t, func(o *controllers.Options) {
		signerOnly(o)
		o.Signer.Signers = append(o.Signer.Signers, signer.Config{Name: certificatesv1.KubeAPIServerClientSignerName, CertFile: env.CACertFile, KeyFile: env.CAKeyFile, Duration: 2 * time.Hour, MinDuration: 10 * time.Minute})
	})
	c := pki.CSR{Name: "sign-alice", SignerName: certificatesv1.KubeAPIServerClientSignerName, Usages: []certificatesv1.KeyUsage{"digital signature", "client auth"},
		Request: pki.Request{Subject: pki.Name("alice", "developers")}, ExpirationSeconds: ptrInt32(3600)}
	created := h.create(h.admin, c)
	h.approveAsAdmin(created.Name)
	cert := h.certificate(h.waitFor(created.Name, "issued", issued), env.CA.Cert)
	if life := cert.NotAfter.Sub(cert.NotBefore); life != time.Hour {
		t.Errorf("expirationSeconds 3600 should give 1h (no backdate configured), got %s", life)
	}
}

func TestSignerFollowsCAFileChanges(t *testing.T) {
	first := pki.MustCA(t, pki.CAOptions{CommonName: "first"})
	second := pki.MustCA(t, pki.CAOptions{CommonName: "second", NotAfter: pki.Now().Add(5 * 365 * 24 * time.Hour)})
	h, certFile, keyFile := startSignerWithCAFiles(t, first)
	sign := func(name string) *certificatesv1.CertificateSigningRequest {
		c := h.create(asNode("rot-1"), named(pki.ClientRenewal("rot-1"), name))
		h.approveAsAdmin(c.Name)
		return h.waitFor(c.Name, "issued", issued)
	}
	h.certificate(sign("rot-first"), first.Cert)

	// A certificate without its key: the pair does not match, the old CA
	// stays and the failure is counted.
	writeFile(t, certFile, second.CertPEM)
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the reload failure is counted", func() bool {
		return h.counter("kubelet_csr_controller_ca_reload_failures_total", nil) >= 1
	})
	h.certificate(sign("rot-mismatched"), first.Cert)

	writeFile(t, keyFile, second.KeyPEM)
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the new CA is in use", func() bool {
		return h.counter("kubelet_csr_controller_ca_not_after_timestamp_seconds", nil) == float64(second.Cert.NotAfter.Unix())
	})
	h.certificate(sign("rot-second"), second.Cert)
}

func TestExpiredCAIsRetriedUntilFixed(t *testing.T) {
	expired := pki.MustCA(t, pki.CAOptions{CommonName: "expired", NotBefore: pki.Now().Add(-48 * time.Hour), NotAfter: pki.Now().Add(-time.Hour)})
	h, certFile, keyFile := startSignerWithCAFiles(t, expired)
	c := h.create(asNode("exp-1"), named(pki.ClientRenewal("exp-1"), "exp-waiting"))
	h.approveAsAdmin(c.Name)
	h.waitForEvent(c.Name, "Warning SigningError: Cannot sign now, will retry: the CA certificate has expired")
	if got := h.waitFor(c.Name, "read", func(*certificatesv1.CertificateSigningRequest) bool { return true }); cluster.Condition(got, certificatesv1.CertificateFailed) != nil {
		t.Fatalf("an expired CA must not fail the CSR: %s", describe(got))
	}
	fixed := pki.MustCA(t, pki.CAOptions{CommonName: "fixed"})
	writeFile(t, keyFile, fixed.KeyPEM)
	writeFile(t, certFile, fixed.CertPEM)
	h.certificate(h.waitFor(c.Name, "issued", issued), fixed.Cert)
}

func TestCertificateCappedAtCAExpiryIsReported(t *testing.T) {
	short := pki.MustCA(t, pki.CAOptions{CommonName: "short", NotAfter: pki.Now().Add(30 * time.Minute)})
	h, _, _ := startSignerWithCAFiles(t, short)
	c := h.create(asNode("cap-1"), named(pki.ClientRenewal("cap-1"), "cap-short"))
	h.approveAsAdmin(c.Name)
	cert := h.certificate(h.waitFor(c.Name, "issued", issued), short.Cert)
	if !cert.NotAfter.Equal(short.Cert.NotAfter) {
		t.Errorf("NotAfter %s, want the CA's %s", cert.NotAfter, short.Cert.NotAfter)
	}
	h.waitForEvent(c.Name, "Warning CertificateShortened")
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// startSignerWithCAFiles starts the signer alone with every signer's CA
// read from files holding ca, and returns the files for the test to
// rewrite.
func startSignerWithCAFiles(t *testing.T, ca *pki.CA) (h *harness, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, ca.CertPEM)
	writeFile(t, keyFile, ca.KeyPEM)
	h = start(t, func(o *controllers.Options) {
		signerOnly(o)
		for i := range o.Signer.Signers {
			o.Signer.Signers[i].CertFile, o.Signer.Signers[i].KeyFile = certFile, keyFile
		}
	})
	return h, certFile, keyFile
}

func ptrInt32(v int32) *int32 { return &v }
