package controllers

import (
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
	want := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: csr.Name, UID: "uid-1", ResourceVersion: "42", CreationTimestamp: csr.CreationTimestamp},
		Spec:       certificatesv1.CertificateSigningRequestSpec{SignerName: csr.Spec.SignerName, Username: csr.Spec.Username},
		Status: certificatesv1.CertificateSigningRequestStatus{Certificate: i.PEM, Conditions: []certificatesv1.CertificateSigningRequestCondition{
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
