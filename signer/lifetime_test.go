package signer_test

import (
	"errors"
	"fmt"
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
	jittered := func(c signer.Config, name string, jitter float64) signer.Config {
		c.Name, c.Jitter = name, jitter
		return c
	}
	serving, client := "kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"
	nodeA := "system:node:node-a"
	// node-a's shares of the jitter, pinned: a changed hash would move
	// every node's renewal at the upgrade.
	const nodeAServingCut, nodeAClientCut = 266*time.Hour + 51*time.Minute + 45*time.Second, 320*time.Hour + 18*time.Minute + 8*time.Second
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
		subject string
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
			name: "a 10% jitter shortens node-a's serving certificate by node-a's own share of it",
			cfg:  jittered(k8s, serving, 0.1), ca: longCA, subject: nodeA,
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8760*time.Hour - nodeAServingCut - 5*time.Minute), Requested: 8760 * time.Hour, Jitter: nodeAServingCut},
		},
		{
			name: "the same node's client certificate gets another share, of the client signer",
			cfg:  jittered(k8s, client, 0.1), ca: longCA, subject: nodeA,
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8760*time.Hour - nodeAClientCut - 5*time.Minute), Requested: 8760 * time.Hour, Jitter: nodeAClientCut},
		},
		{
			name: "jitter applies to a requested expirationSeconds too",
			cfg:  jittered(k8s, serving, 0.1), ca: longCA, subject: nodeA, expSecs: seconds(8760 * 3600),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(8760*time.Hour - nodeAServingCut - 5*time.Minute), Requested: 8760 * time.Hour, Jitter: nodeAServingCut},
		},
		{
			name: "jitter never shortens a certificate below minDuration",
			cfg:  jittered(signer.Config{Duration: 11 * time.Minute, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}, serving, 0.5), ca: longCA, subject: "system:node:node-b",
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(10 * time.Minute), Requested: 11 * time.Minute, Jitter: time.Minute},
		},
		{
			name: "a lifetime already at minDuration is not jittered",
			cfg:  jittered(k8s, serving, 0.5), ca: longCA, subject: nodeA, expSecs: seconds(600),
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(10 * time.Minute), Requested: 10 * time.Minute},
		},
		{
			name: "a jittered certificate is still capped at the CA's NotAfter",
			cfg:  jittered(k8s, serving, 0.1), ca: shortCA, subject: nodeA,
			want: signer.Lifetime{NotBefore: now.Add(-5 * time.Minute), NotAfter: shortCA.Cert.NotAfter, Requested: 8760 * time.Hour, Jitter: nodeAServingCut, Capped: true},
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
			got, err := signer.ComputeLifetime(now, tc.expSecs, tc.subject, tc.cfg, load(tc.ca))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ComputeLifetime() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJitterIsFixedPerNodeAndSpreadsNodes(t *testing.T) {
	t.Parallel()
	made := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour)})
	ca, err := signer.ParseCA(made.CertPEM, made.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := signer.Config{Name: "kubernetes.io/kubelet-serving", Duration: 8760 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute, Jitter: 0.1}
	const nodes = 1000
	var buckets [10]int
	for i := range nodes {
		subject := fmt.Sprintf("system:node:node-%d", i)
		first, err := signer.ComputeLifetime(now, nil, subject, cfg, ca)
		if err != nil {
			t.Fatal(err)
		}
		retry, err := signer.ComputeLifetime(now.Add(17*time.Minute+300*time.Millisecond), nil, subject, cfg, ca)
		if err != nil {
			t.Fatal(err)
		}
		life := first.NotAfter.Sub(first.NotBefore)
		if got := retry.NotAfter.Sub(retry.NotBefore); got != life {
			t.Fatalf("%s: a retry lives %s, the first certificate %s", subject, got, life)
		}
		if life > cfg.Duration || life < cfg.Duration-cfg.Duration/10 {
			t.Fatalf("%s: lifetime %s outside [90%%, 100%%] of %s", subject, life, cfg.Duration)
		}
		buckets[min(int(first.Jitter*10/(cfg.Duration/10)), 9)]++
	}
	// Evenly spread: each tenth of the jitter holds about a tenth of the
	// nodes (a binomial's spread is about 9.5 here; 60 is six of them).
	for i, n := range buckets {
		if n < nodes/10-60 || n > nodes/10+60 {
			t.Errorf("tenth %d of the jitter holds %d of %d nodes: %v", i, n, nodes, buckets)
		}
	}
}
