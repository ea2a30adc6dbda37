package controllers

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestSlimCSRKeepsWhatIsReadOfDecidedCSRs(t *testing.T) {
	t.Parallel()
	ca := pki.MustCA(t, pki.CAOptions{})
	sca, err := signer.ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := pki.Now()
	csr := pki.MustObject(t, pki.ClientRenewal("slim-1"))
	csr.UID, csr.ResourceVersion = "uid-1", "42"
	csr.Spec.Extra = map[string]certificatesv1.ExtraValue{"k": {"v"}}
	csr.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
	csr.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	approved := certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: "AutoApproved", Message: "a long message", LastUpdateTime: metav1.NewTime(now)}

	// Pending: kept whole, less managedFields.
	out, _ := slimCSR(csr.DeepCopy())
	pending := out.(*certificatesv1.CertificateSigningRequest)
	if len(pending.Spec.Request) == 0 || pending.ManagedFields != nil || pending.Annotations == nil {
		t.Errorf("a pending CSR must be kept whole but managedFields")
	}

	// Issued: slim, and the node is still known from the certificate.
	issued := csr.DeepCopy()
	issued.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{approved}
	i, err := signer.Sign(sca, issued, signer.Config{Name: certificatesv1.KubeAPIServerClientKubeletSignerName, Duration: time.Hour, MinDuration: time.Minute}, now)
	if err != nil {
		t.Fatal(err)
	}
	issued.Status.Certificate = i.PEM
	out, _ = slimCSR(issued.DeepCopy())
	slim := out.(*certificatesv1.CertificateSigningRequest)
	summary, ok := summarizeCertificate(i.PEM)
	if !ok {
		t.Fatal("the issued certificate has no summary")
	}
	if len(summary) > 64 {
		t.Errorf("the summary of a certificate takes %d bytes, want a few dozen", len(summary))
	}
	want := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: csr.Name, UID: "uid-1", ResourceVersion: "42", CreationTimestamp: csr.CreationTimestamp},
		Spec:       certificatesv1.CertificateSigningRequestSpec{SignerName: csr.Spec.SignerName, Username: csr.Spec.Username},
		Status: certificatesv1.CertificateSigningRequestStatus{Certificate: summary, Conditions: []certificatesv1.CertificateSigningRequestCondition{
			{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, LastUpdateTime: approved.LastUpdateTime},
		}},
	}
	if diff := cmp.Diff(want, slim); diff != "" {
		t.Errorf("slimCSR() of an issued CSR (-want +got):\n%s", diff)
	}
	if got := nodeNameOf(slim); got != "slim-1" {
		t.Errorf("the node of a slim issued CSR is %q, want slim-1", got)
	}
	if s := approver.StateOf(slim); !s.Approved || !s.Issued || s.Denied {
		t.Errorf("state of a slim issued CSR: %+v", s)
	}
	if at, rule, ok := CleanupAt(slim, &CleanerOptions{IssuedAfter: time.Hour, DeleteExpired: true}); !ok || rule != RuleExpired || !at.Equal(i.Cert.NotAfter) {
		t.Errorf("the cleaner reads a slim CSR as %s %q %v", at, rule, ok)
	}
	if !unexpired(slim.Status.Certificate, i.Cert.NotAfter.Add(-time.Second)) || unexpired(slim.Status.Certificate, i.Cert.NotAfter) {
		t.Errorf("the start-up taint reads the slim CSR's expiry wrong")
	}
	// The summary is no PEM: were it ever written back, the API server
	// would refuse it rather than store it as a certificate.
	if block, _ := pem.Decode(slim.Status.Certificate); block != nil {
		t.Errorf("a certificate summary decodes as PEM")
	}

	// Denied: no certificate, and no condition's reason or message.
	denied := csr.DeepCopy()
	denied.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue,
		Reason: "NotAuthorized", Message: "a long message", LastUpdateTime: metav1.NewTime(now)}}
	out, _ = slimCSR(denied)
	if d := out.(*certificatesv1.CertificateSigningRequest); d.Status.Certificate != nil || d.Status.Conditions[0].Message != "" || !approver.StateOf(d).Denied {
		t.Errorf("slimCSR() of a denied CSR: %+v", d.Status)
	}

	// A certificate that does not parse is kept as it is: readers see what
	// the API server has.
	junk := issued.DeepCopy()
	junk.Status.Certificate = []byte("not a certificate")
	out, _ = slimCSR(junk)
	if got := out.(*certificatesv1.CertificateSigningRequest).Status.Certificate; string(got) != "not a certificate" {
		t.Errorf("slimCSR() replaced an unparseable certificate with %q", got)
	}
}

func TestCertificateSummaryAgreesWithTheCertificate(t *testing.T) {
	t.Parallel()
	ca := pki.MustCA(t, pki.CAOptions{})
	for _, cn := range []string{"system:node:n1", "", "system:node:" + strings.Repeat("a", 253)} {
		certPEM, _, err := ca.ClientCert(cn, nil, 90*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		summary, ok := summarizeCertificate(certPEM)
		if !ok {
			t.Fatalf("no summary of the certificate for %q", cn)
		}
		for name, b := range map[string][]byte{"PEM": certPEM, "summary": summary} {
			notAfter, err := certificateNotAfter(b)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			block, _ := pem.Decode(certPEM)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !notAfter.Equal(cert.NotAfter) || certificateCommonName(b) != cn {
				t.Errorf("%s of the certificate for %q reads %s %q, want %s", name, cn, notAfter, certificateCommonName(b), cert.NotAfter)
			}
		}
	}
	for _, b := range [][]byte{nil, []byte("junk"), summaryMarker, append(slices.Clone(summaryMarker), 1, 2, 3)} {
		if _, err := certificateNotAfter(b); err == nil {
			t.Errorf("certificateNotAfter(%q) read an expiry", b)
		}
	}
}

func TestCertificateCommonNameAgreesWithAFullParse(t *testing.T) {
	t.Parallel()
	ca := pki.MustCA(t, pki.CAOptions{})
	for _, cn := range []string{"system:node:n1", "alice", ""} {
		certPEM, _, err := ca.ClientCert(cn, []string{"g"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got := certificateCommonName(certPEM); got != cn {
			t.Errorf("certificateCommonName() = %q, want %q", got, cn)
		}
	}
	if got := certificateCommonName([]byte("junk")); got != "" {
		t.Errorf("certificateCommonName(junk) = %q", got)
	}
}
