package signer_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodecsr/kubelet-csr-controller/signer"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestAnchors(t *testing.T) {
	t.Parallel()
	root := pki.MustCA(t, pki.CAOptions{CommonName: "root"})
	inter := pki.MustCA(t, pki.CAOptions{CommonName: "inter", Parent: root})
	next := pki.MustCA(t, pki.CAOptions{CommonName: "next"})
	tests := []struct {
		name  string
		cert  []byte
		key   []byte
		next  []*x509.Certificate
		wantS []string
	}{
		{"a root is its own anchor", root.CertPEM, root.KeyPEM, nil, []string{"root"}},
		{"an intermediate's anchor is the root after it", cat(inter.CertPEM, root.CertPEM), inter.KeyPEM, nil, []string{"root"}},
		{"an intermediate alone is its own anchor", inter.CertPEM, inter.KeyPEM, nil, []string{"inter"}},
		{"the next CA follows the current one", root.CertPEM, root.KeyPEM, []*x509.Certificate{next.Cert}, []string{"root", "next"}},
		{"a next CA equal to the current one is listed once", root.CertPEM, root.KeyPEM, []*x509.Certificate{root.Cert, next.Cert, next.Cert}, []string{"root", "next"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca, err := signer.ParseCA(tc.cert, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			ca.Next = tc.next
			if got := pki.CommonNames(ca.Anchors()); strings.Join(got, ",") != strings.Join(tc.wantS, ",") {
				t.Errorf("anchors = %v, want %v", got, tc.wantS)
			}
		})
	}
}

func TestParseTrust(t *testing.T) {
	t.Parallel()
	next := pki.MustCA(t, pki.CAOptions{CommonName: "next"})
	other := pki.MustCA(t, pki.CAOptions{CommonName: "other"})
	leafPEM, _, err := next.ClientCert("someone", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []byte
		want    []string
		wantErr string
	}{
		{"an empty file holds no CA", nil, nil, ""},
		{"white space holds no CA", []byte("\n \n"), nil, ""},
		{"two CAs", cat(next.CertPEM, other.CertPEM), []string{"next", "other"}, ""},
		{"a leaf certificate is refused", leafPEM, nil, "is not a CA"},
		{"a key is refused", next.KeyPEM, nil, `holds a "PRIVATE KEY" PEM block`},
		{"text after the certificates is refused", cat(next.CertPEM, []byte("garbage")), nil, "is not PEM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := signer.ParseTrust(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pki.CommonNames(got), ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", pki.CommonNames(got), tc.want)
			}
		})
	}
}

// PlanTrust keeps every anchor that may have signed a certificate still in
// use, and nothing else.
func TestPlanTrust(t *testing.T) {
	t.Parallel()
	now := pki.Now().Truncate(time.Second)
	const life = 24 * time.Hour
	old := pki.MustCA(t, pki.CAOptions{CommonName: "old"}).Cert
	cur := pki.MustCA(t, pki.CAOptions{CommonName: "cur"}).Cert
	next := pki.MustCA(t, pki.CAOptions{CommonName: "next"}).Cert
	soon := pki.MustCA(t, pki.CAOptions{CommonName: "soon", NotAfter: now.Add(time.Hour)}).Cert
	gone := pki.MustCA(t, pki.CAOptions{CommonName: "gone", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}).Cert
	id := signer.AnchorID
	tests := []struct {
		name         string
		current      []*x509.Certificate
		published    signer.Trust
		wantAnchors  []string
		wantRetained map[string]time.Time
	}{
		{
			name:        "a first publication holds the current anchors",
			current:     []*x509.Certificate{cur, next},
			wantAnchors: []string{"cur", "next"},
		},
		{
			name:        "an anchor that leaves stays for one certificate lifetime",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{old}},
			wantAnchors: []string{"cur", "old"}, wantRetained: map[string]time.Time{id(old): now.Add(life)},
		},
		{
			name:        "a recorded retention is kept, not extended",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{cur, old}, Retained: map[string]time.Time{id(old): now.Add(time.Minute)}},
			wantAnchors: []string{"cur", "old"}, wantRetained: map[string]time.Time{id(old): now.Add(time.Minute)},
		},
		{
			name:        "an anchor whose retention has passed is dropped",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{cur, old}, Retained: map[string]time.Time{id(old): now}},
			wantAnchors: []string{"cur"},
		},
		{
			name:        "nothing outlives its anchor: retention ends at its expiry",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{soon}},
			wantAnchors: []string{"cur", "soon"}, wantRetained: map[string]time.Time{id(soon): soon.NotAfter},
		},
		{
			name:        "an expired anchor that left is dropped at once",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{gone}},
			wantAnchors: []string{"cur"},
		},
		{
			name:        "an anchor that returns to the CA files is current again, with no retention",
			current:     []*x509.Certificate{cur, old},
			published:   signer.Trust{Anchors: []*x509.Certificate{cur, old}, Retained: map[string]time.Time{id(old): now.Add(time.Minute)}},
			wantAnchors: []string{"cur", "old"},
		},
		{
			name:        "retained anchors are listed soonest to go first, after the current ones",
			current:     []*x509.Certificate{next},
			published:   signer.Trust{Anchors: []*x509.Certificate{old, cur}, Retained: map[string]time.Time{id(old): now.Add(2 * time.Hour), id(cur): now.Add(time.Hour)}},
			wantAnchors: []string{"next", "cur", "old"}, wantRetained: map[string]time.Time{id(old): now.Add(2 * time.Hour), id(cur): now.Add(time.Hour)},
		},
		{
			name:        "a published duplicate is listed once",
			current:     []*x509.Certificate{cur},
			published:   signer.Trust{Anchors: []*x509.Certificate{old, old, cur, cur}},
			wantAnchors: []string{"cur", "old"}, wantRetained: map[string]time.Time{id(old): now.Add(life)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			plan := signer.PlanTrust(tc.current, tc.published, life, now)
			if got := pki.CommonNames(plan.Anchors); strings.Join(got, ",") != strings.Join(tc.wantAnchors, ",") {
				t.Errorf("anchors = %v, want %v", got, tc.wantAnchors)
			}
			if len(plan.Retained) != len(tc.wantRetained) {
				t.Fatalf("retained = %v, want %v", plan.Retained, tc.wantRetained)
			}
			for k, want := range tc.wantRetained {
				if got := plan.Retained[k]; !got.Equal(want) {
					t.Errorf("retained %s until %s, want %s", k, got, want)
				}
			}
			// What is published reads back as the same plan.
			back, err := signer.DecodeRetained(signer.EncodeRetained(plan.Retained))
			if err != nil {
				t.Fatal(err)
			}
			again := signer.PlanTrust(tc.current, signer.Trust{Anchors: signer.DecodeAnchors(signer.EncodeAnchors(plan.Anchors)), Retained: back}, life, now)
			if strings.Join(pki.CommonNames(again.Anchors), ",") != strings.Join(pki.CommonNames(plan.Anchors), ",") || signer.EncodeRetained(again.Retained) != signer.EncodeRetained(plan.Retained) {
				t.Errorf("republishing changed the plan: %v %v, then %v %v", pki.CommonNames(plan.Anchors), plan.Retained, pki.CommonNames(again.Anchors), again.Retained)
			}
		})
	}
}

// A retention that ends within a second is never rounded down, which would
// drop an anchor before a certificate it signed expires.
func TestPlanTrustRoundsRetentionUp(t *testing.T) {
	t.Parallel()
	now := pki.Now().Truncate(time.Second).Add(300 * time.Millisecond)
	old := pki.MustCA(t, pki.CAOptions{CommonName: "old"}).Cert
	cur := pki.MustCA(t, pki.CAOptions{CommonName: "cur"}).Cert
	plan := signer.PlanTrust([]*x509.Certificate{cur}, signer.Trust{Anchors: []*x509.Certificate{old}}, time.Hour, now)
	if got, min := plan.Retained[signer.AnchorID(old)], now.Add(time.Hour); got.Before(min) {
		t.Errorf("retained until %s, before the last certificate's expiry %s", got, min)
	}
	if got := plan.FirstDrop(); !got.Equal(plan.Retained[signer.AnchorID(old)]) {
		t.Errorf("first drop %s, want the one retention", got)
	}
}

func TestDecodeRetainedRefusesGarbage(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"{", `{"sha256:x":"yesterday"}`, `["a"]`} {
		if _, err := signer.DecodeRetained(in); err == nil {
			t.Errorf("DecodeRetained(%q) did not fail", in)
		}
	}
}

// The trust file is read with the CA files and announced as a change.
func TestFileCAReadsTheTrustFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cur := pki.MustCA(t, pki.CAOptions{CommonName: "cur"})
	next := pki.MustCA(t, pki.CAOptions{CommonName: "next"})
	certFile, keyFile, trustFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "next.crt")
	write(t, certFile, cur.CertPEM)
	write(t, keyFile, cur.KeyPEM)
	write(t, trustFile, nil)
	f := signer.NewFileCA(certFile, keyFile, nil)
	f.TrustFile = trustFile
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := pki.CommonNames(f.Current().Anchors()); strings.Join(got, ",") != "cur" {
		t.Fatalf("anchors = %v, want cur", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx, time.Hour, func(err error) { t.Errorf("the CA files are not watched: %v", err) })
	write(t, trustFile, next.CertPEM)
	waitFor(t, func() bool { return strings.Join(pki.CommonNames(f.Current().Anchors()), ",") == "cur,next" })
	// A trust file that breaks keeps the CA in use.
	write(t, trustFile, next.KeyPEM)
	if err := f.Reload(); err == nil || !strings.Contains(err.Error(), "trust file") {
		t.Fatalf("a key in the trust file: error = %v", err)
	}
	if got := pki.CommonNames(f.Current().Anchors()); strings.Join(got, ",") != "cur,next" {
		t.Errorf("after a bad trust file, anchors = %v, want cur,next", got)
	}
}
