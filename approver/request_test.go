package approver_test

import (
	"testing"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestCommonNameAgreesWithAFullParse(t *testing.T) {
	t.Parallel()
	for _, cn := range []string{"system:node:n1", "", "alice", "system:node:very-long-name.example.com"} {
		c := pki.ClientRenewal("x")
		c.Request.Subject.CommonName = cn
		obj := pki.MustObject(t, c)
		full := approver.Read(obj).X509.Subject.CommonName
		if got := approver.CommonName(obj.Spec.Request); got != full || got != cn {
			t.Errorf("CommonName() = %q, full parse %q, want %q", got, full, cn)
		}
	}
	for _, junk := range []string{"", "junk", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"} {
		if got := approver.CommonName([]byte(junk)); got != "" {
			t.Errorf("CommonName(%q) = %q, want empty", junk, got)
		}
	}
}

func BenchmarkCommonName(b *testing.B) {
	obj := pki.MustObject(b, pki.ClientRenewal("n1"))
	for b.Loop() {
		approver.CommonName(obj.Spec.Request)
	}
}

func BenchmarkRead(b *testing.B) {
	obj := pki.MustObject(b, pki.Serving("n1", []string{"n1"}, nil))
	for b.Loop() {
		approver.Read(obj)
	}
}
