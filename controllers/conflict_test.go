package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// race makes another actor change a CSR between the controllers' read and
// their write to subresource: the first time a write to that subresource is
// about to happen for the CSR named victim, act runs first. It counts the
// writes to it, so that a test can tell a handled conflict from a hot loop.
type race struct {
	victim, subresource string
	act                 func(ctx context.Context) error
	once                sync.Once
	writes              atomic.Int32
}

func (r *race) funcs() *interceptor.Funcs {
	return &interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if sub == r.subresource && obj.GetName() == r.victim {
				r.writes.Add(1)
				var err error
				r.once.Do(func() { err = r.act(ctx) })
				if err != nil {
					return err
				}
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	}
}

func TestAnotherActorBetweenReadAndWrite(t *testing.T) {
	tests := []struct {
		name        string
		csr         func() (pki.CSR, func(*harness))
		subresource string
		act         func(ctx context.Context, h *harness, name string) error
		want        func(t *testing.T, h *harness, name string)
	}{
		{
			name: "a denial by someone else before our approval stands, and nothing is issued",
			csr: func() (pki.CSR, func(*harness)) {
				return named(pki.ClientRenewal("race-1"), "race-denied"), nil
			},
			subresource: "approval",
			act: func(ctx context.Context, h *harness, name string) error {
				return cluster.SetCondition(ctx, h.admin, name, certificatesv1.CertificateDenied, "DeniedByOtherActor")
			},
			want: func(t *testing.T, h *harness, name string) {
				got := h.waitFor(name, "denied", condition(certificatesv1.CertificateDenied))
				if cluster.Condition(got, certificatesv1.CertificateApproved) != nil || issued(got) {
					t.Errorf("our approval was written over another actor's denial: %s", describe(got))
				}
			},
		},
		{
			name: "an approval by someone else before our denial stands, and our signer issues it",
			csr: func() (pki.CSR, func(*harness)) {
				// Another node's IP: the approver would deny it.
				return named(pki.Serving("race-2", nil, pki.IPs("10.9.0.99")), "race-approved"), func(h *harness) { h.registerNode("race-2", "10.9.0.2") }
			},
			subresource: "approval",
			act: func(ctx context.Context, h *harness, name string) error {
				return cluster.SetCondition(ctx, h.admin, name, certificatesv1.CertificateApproved, "ApprovedByOtherActor")
			},
			want: func(t *testing.T, h *harness, name string) {
				got := h.waitFor(name, "issued", issued)
				if cluster.Condition(got, certificatesv1.CertificateDenied) != nil {
					t.Errorf("our denial was written over another actor's approval: %s", describe(got))
				}
			},
		},
		{
			name: "a deletion before our approval is the end of it",
			csr: func() (pki.CSR, func(*harness)) {
				return named(pki.ClientRenewal("race-3"), "race-deleted"), nil
			},
			subresource: "approval",
			act: func(ctx context.Context, h *harness, name string) error {
				return h.admin.CertificatesV1().CertificateSigningRequests().Delete(ctx, name, metav1.DeleteOptions{})
			},
			want: func(t *testing.T, h *harness, name string) {
				cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, name+" is gone", func() bool { return !h.exists(name) })
			},
		},
		{
			name: "a certificate from another signer before ours stands, and ours is discarded",
			csr: func() (pki.CSR, func(*harness)) {
				return named(pki.ClientRenewal("race-4"), "race-signed"), nil
			},
			subresource: "status",
			act: func(ctx context.Context, h *harness, name string) error {
				csrs := h.admin.CertificatesV1().CertificateSigningRequests()
				csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				other := pki.MustCA(h.t, pki.CAOptions{CommonName: "another signer"})
				certPEM, _, err := other.ClientCert("system:node:race-4", []string{"system:nodes"}, time.Hour)
				if err != nil {
					return err
				}
				csr.Status.Certificate = certPEM
				_, err = csrs.UpdateStatus(ctx, csr, metav1.UpdateOptions{})
				return err
			},
			want: func(t *testing.T, h *harness, name string) {
				got := h.waitFor(name, "issued", issued)
				if c := leafOf(t, got); c.Issuer.CommonName != "another signer" {
					t.Errorf("the certificate was replaced: issuer %q", c.Issuer.CommonName)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, setup := tc.csr()
			r := &race{victim: c.Name, subresource: tc.subresource}
			h := startIntercepted(t, nil, r.funcs())
			r.act = func(ctx context.Context) error { return tc.act(ctx, h, c.Name) }
			if setup != nil {
				setup(h)
			}
			identity := asNode(approver.NodeNameFromCN(c.Request.Subject.CommonName))
			h.create(identity, c)
			tc.want(t, h, c.Name)
			// One write that lost the race, and at most one more attempt: a
			// conflict is handled, not retried in a loop.
			if n := r.writes.Load(); n < 1 || n > 2 {
				t.Errorf("%d writes to %s/%s, want 1 or 2", n, c.Name, tc.subresource)
			}
		})
	}
}

func leafOf(t *testing.T, csr *certificatesv1.CertificateSigningRequest) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(csr.Status.Certificate)
	if block == nil {
		t.Fatalf("%s: status.certificate is not PEM", csr.Name)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
