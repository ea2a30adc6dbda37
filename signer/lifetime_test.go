package signer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

var now = pki.Now().Truncate(time.Second)

func seconds(s int32) *int32 { return &s }

func TestComputeLifetime(t *testing.T) {
	t.Parallel()
	longCA := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour)})
	shortCA := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour)})
	expiredCA := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Second)})
	futureCA := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	k8s := signer.Config{Duration: 8760 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}
	demo := signer.Config{Duration: 2 * time.Minute, MinDuration: time.Minute, Backdate: 0}
	load := func(ca *pki.CA) *signer.CA {
		c, err := signer.ParseCA(ca.CertPEM, ca.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     signer.Config
		ca      *pki.CA
		expSecs *int32
		want    signer.Lifetime
		wantErr error
	}{
		{
			name: "without expirationSeconds the signer's duration applies, backdated at both ends because it is long",
			cfg:  k8s, ca: longCA,
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8760*time.Hour - 5*time.Minute), Requested: 8760 * time.Hour},
		},
		{
			name: "a shorter expirationSeconds is honoured",
			cfg:  k8s, ca: longCA, expSecs: seconds(24 * 3600),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(24*time.Hour - 5*time.Minute), Requested: 24 * time.Hour},
		},
		{
			name: "a longer expirationSeconds is clamped to the duration",
			cfg:  k8s, ca: longCA, expSecs: seconds(2 * 8760 * 3600),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8760*time.Hour - 5*time.Minute), Requested: 8760 * time.Hour},
		},
		{
			name: "an expirationSeconds below minDuration is raised to it, and a short life keeps NotAfter unbackdated",
			cfg:  k8s, ca: longCA, expSecs: seconds(60),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(10 * time.Minute), Requested: 10 * time.Minute},
		},
		{
			name: "exactly 8h counts as long-lived and is backdated at the end",
			cfg:  k8s, ca: longCA, expSecs: seconds(8 * 3600),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8*time.Hour - 5*time.Minute), Requested: 8 * time.Hour},
		},
		{
			name: "just under 8h is short-lived",
			cfg:  k8s, ca: longCA, expSecs: seconds(8*3600 - 1),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8*time.Hour - time.Second), Requested: 8*time.Hour - time.Second},
		},
		{
			name: "a demo signer with no backdate issues exactly its duration",
			cfg:  demo, ca: longCA,
			want: signer.Lifetime{NotBefore: now, NotAfter: now.Add(2 * time.Minute), Requested: 2 * time.Minute},
		},
		{
			name: "NotAfter is capped at the CA's NotAfter",
			cfg:  k8s, ca: shortCA,
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: shortCA.Cert.NotAfter, Requested: 8760 * time.Hour, Capped: true},
		},
		{
			name: "an expired CA signs nothing",
			cfg:  k8s, ca: expiredCA, wantErr: signer.ErrCAExpired,
		},
		{
			name: "a CA that is not valid yet signs nothing",
			cfg:  k8s, ca: futureCA, wantErr: signer.ErrCANotYetValid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := signer.ComputeLifetime(now, tc.expSecs, tc.cfg, load(tc.ca))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ComputeLifetime() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
