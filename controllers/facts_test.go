package controllers_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// Decide asks for the costly facts last: a request that the cheap facts
// already deny costs no DNS lookup and no SubjectAccessReview.
func TestDecideAsksForTheCostlyFactsLast(t *testing.T) {
	t.Parallel()
	node := func(name string, addrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		return n
	}
	p := approver.DefaultPolicy()
	p.Serving.DNSSuffixes = []string{"nodes.example"}
	p.Serving.ResolveDNS = true
	var lookups, reviews int
	sources := func(nodes ...*corev1.Node) *controllers.Sources {
		return &controllers.Sources{
			Nodes: controllers.StaticNodes(nodes),
			Authorize: func(context.Context, *certificatesv1.CertificateSigningRequest, *authorizationv1.ResourceAttributes) (*approver.Authorization, error) {
				reviews++
				return &approver.Authorization{Allowed: true}, nil
			},
			Resolve: func(_ context.Context, names []string) map[string]approver.Lookup {
				lookups += len(names)
				out := map[string]approver.Lookup{}
				for _, n := range names {
					out[n] = approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
				}
				return out
			},
		}
	}
	now := pki.Now()
	decide := func(s *controllers.Sources, c pki.CSR) approver.Decision {
		t.Helper()
		c.Created = now.Add(-time.Minute)
		v := approver.NewReview(approver.Read(pki.MustObject(t, c)), &p)
		d, _, err := controllers.Decide(context.Background(), s, v, now)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// n1's request names an address n2 lists: denied from the Node index
	// alone, before its name is resolved.
	s := sources(node("n1", "10.0.0.1", "10.0.0.2"), node("n2", "10.0.0.2"))
	if d := decide(s, pki.Serving("n1", []string{"a.nodes.example"}, pki.IPs("10.0.0.2"))); d.Reason != approver.ReasonSANOwnedByOtherNode || lookups != 0 {
		t.Errorf("got %s after %d lookups; want SANOwnedByOtherNode without one", d.Reason, lookups)
	}
	// A clean request is resolved once, then approved.
	if d := decide(s, pki.Serving("n1", []string{"a.nodes.example"}, pki.IPs("10.0.0.1"))); d.Verdict != approver.Approve || lookups != 1 {
		t.Errorf("got %s after %d lookups; want it approved after one", d.Reason, lookups)
	}
	// A client request asks for its review only once nothing else stands.
	if d := decide(s, pki.ClientRenewal("n1")); d.Verdict != approver.Approve || reviews != 1 {
		t.Errorf("got %s after %d reviews; want it approved after one", d.Reason, reviews)
	}
	bad := pki.ClientRenewal("n1")
	bad.Request.Subject.Organization = []string{"system:masters"}
	if d := decide(s, bad); d.Reason != approver.ReasonOrganizationNotSystemNodes || reviews != 1 {
		t.Errorf("got %s after %d reviews; want OrganizationNotSystemNodes without another", d.Reason, reviews)
	}
}
