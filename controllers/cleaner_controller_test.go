package controllers_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// kubernetesRules are kube-controller-manager's cleaner ages.
func kubernetesRules() controllers.CleanerOptions {
	return controllers.CleanerOptions{
		IssuedAfter: time.Hour, DeniedAfter: time.Hour, FailedAfter: time.Hour,
		PendingAfter: 24 * time.Hour, ApprovedUnissuedAfter: 24 * time.Hour, DeleteExpired: true,
		Workers: 1,
	}
}

func TestCleanupAt(t *testing.T) {
	t.Parallel()
	created := pki.Now().Truncate(time.Second)
	decided := created.Add(10 * time.Minute)
	cond := func(typ certificatesv1.RequestConditionType) certificatesv1.CertificateSigningRequestCondition {
		return certificatesv1.CertificateSigningRequestCondition{Type: typ, Status: corev1.ConditionTrue, LastUpdateTime: metav1.NewTime(decided)}
	}
	ca := pki.MustCA(t, pki.CAOptions{NotBefore: created.Add(-time.Hour), NotAfter: created.Add(365 * 24 * time.Hour)})
	sca, err := signer.ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certFor := func(life time.Duration) []byte {
		i, err := signer.Sign(sca, pki.MustObject(t, pki.ClientRenewal("n1")), signer.Config{Name: certificatesv1.KubeAPIServerClientKubeletSignerName, Duration: life, MinDuration: time.Minute}, decided)
		if err != nil {
			t.Fatal(err)
		}
		return i.PEM
	}
	long, short := certFor(24*time.Hour), certFor(20*time.Minute)
	rules := kubernetesRules()
	noExpired := kubernetesRules()
	noExpired.DeleteExpired = false
	tests := []struct {
		name     string
		conds    []certificatesv1.RequestConditionType
		cert     []byte
		opts     *controllers.CleanerOptions
		wantAt   time.Time
		wantRule string
		wantOK   bool
	}{
		{"a pending CSR goes 24h after creation", nil, nil, &rules, created.Add(24 * time.Hour), controllers.RulePending, true},
		{"an issued CSR goes 1h after approval", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, long, &rules, decided.Add(time.Hour), controllers.RuleIssued, true},
		{"an issued CSR whose certificate expires first goes at its expiry", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, short, &rules, decided.Add(20 * time.Minute), controllers.RuleExpired, true},
		{"expiry is ignored when deleteExpired is off", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, short, &noExpired, decided.Add(time.Hour), controllers.RuleIssued, true},
		{"an approved CSR never issued goes 24h after approval", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved}, nil, &rules, decided.Add(24 * time.Hour), controllers.RuleApprovedUnissued, true},
		{"a denied CSR goes 1h after denial", []certificatesv1.RequestConditionType{certificatesv1.CertificateDenied}, nil, &rules, decided.Add(time.Hour), controllers.RuleDenied, true},
		{"an approved then failed CSR goes 1h after failing", []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateFailed}, nil, &rules, decided.Add(time.Hour), controllers.RuleFailed, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			csr := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
			for _, c := range tc.conds {
				csr.Status.Conditions = append(csr.Status.Conditions, cond(c))
			}
			csr.Status.Certificate = tc.cert
			at, rule, ok := controllers.CleanupAt(csr, tc.opts)
			if ok != tc.wantOK || rule != tc.wantRule || !at.Equal(tc.wantAt) {
				t.Errorf("CleanupAt() = %s, %q, %v; want %s, %q, %v", at, rule, ok, tc.wantAt, tc.wantRule, tc.wantOK)
			}
		})
	}
}

func TestCleanerDeletesWhatIsDue(t *testing.T) {
	// The cleaner's clock runs ahead: 2 hours (a denied CSR is due after 1h,
	// a pending one after 24h), then 25 hours, when every rule is due except
	// for CSRs of signers it does not manage.
	var ahead atomic.Int64
	ahead.Store(int64(2 * time.Hour))
	h := start(t, func(o *controllers.Options) {
		signerOnly(o)
		c := kubernetesRules()
		c.Interval = 100 * time.Millisecond
		o.Cleaner = &c
		o.Now = func() time.Time { return pki.Now().Add(time.Duration(ahead.Load())) }
	})
	pending := h.create(asNode("clean-1"), named(pki.ClientRenewal("clean-1"), "clean-pending"))
	denied := h.create(asNode("clean-1"), named(pki.ClientRenewal("clean-1"), "clean-denied"))
	h.denyAsAdmin(denied.Name)
	foreign := pki.ClientRenewal("clean-1")
	foreign.Name, foreign.SignerName = "clean-foreign", "example.com/other"
	other := h.create(asNode("clean-1"), foreign)

	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the denied CSR is deleted", func() bool { return !h.exists(denied.Name) })
	// A second denied CSR gone proves a whole sweep after the pending one was
	// seen: it was not due.
	later := h.create(asNode("clean-1"), named(pki.ClientRenewal("clean-1"), "clean-denied-later"))
	h.denyAsAdmin(later.Name)
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the later denied CSR is deleted", func() bool { return !h.exists(later.Name) })
	if !h.exists(pending.Name) {
		t.Fatal("a pending CSR was deleted 2 hours after it was made; the rule says 24")
	}

	ahead.Store(int64(25 * time.Hour))
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the pending CSR is deleted", func() bool { return !h.exists(pending.Name) })
	// The counter moves just after the DELETE returns, so a watcher can see
	// the CSR gone a moment before it is counted.
	cleaned := func(rule string) float64 {
		return h.counter("kubelet_csr_controller_cleaned_total", map[string]string{"rule": rule})
	}
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the deletions are counted", func() bool {
		return cleaned(controllers.RulePending) >= 1 && cleaned(controllers.RuleDenied) >= 2
	})
	if got := cleaned(controllers.RulePending); got != 1 {
		t.Errorf("cleaned_total{Pending} = %v, want 1", got)
	}
	if got := cleaned(controllers.RuleDenied); got != 2 {
		t.Errorf("cleaned_total{Denied} = %v, want 2", got)
	}
	// The foreign CSR was created before the managed ones were deleted and
	// has been seen; it must still be there.
	if !h.exists(other.Name) {
		t.Error("a CSR of a signer the controller does not manage was deleted")
	}
}
