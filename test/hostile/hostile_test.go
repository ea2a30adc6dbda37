// Package hostile files a corpus of hostile and malformed certificate
// requests against a real API server with the controllers running, and checks
// each one's outcome: refused by the API server itself, Denied or Failed
// with a named reason, issued (when the request is benign after all), or
// left alone when it is not ours.
package hostile

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// outcome is what should become of a request.
type outcome struct {
	// kind: "rejected" (the API server refuses to create it), "denied",
	// "failed", "issued", or "ignored" (left pending, no Event).
	kind   string
	reason string // the condition's reason, for denied and failed
}

var (
	rejected = outcome{kind: "rejected"}
	issuedOK = outcome{kind: "issued"}
	ignored  = outcome{kind: "ignored"}
)

func denied(reason string) outcome { return outcome{kind: "denied", reason: reason} }

func failed(reason string) outcome { return outcome{kind: "failed", reason: reason} }

// entry is one request of the corpus.
type entry struct {
	name string
	// who files it: "node" (the node the request names), "bootstrap",
	// "admin" or "alice".
	as string
	// csr builds the request for node, a node of its own: cases that share a
	// node would supersede one another.
	csr func(t *testing.T, node string) pki.CSR
	// approve has an administrator approve it first, so that it reaches the
	// signer without the approver's checks.
	approve bool
	// alsoLists adds addresses to the status of the node of a serving case,
	// as a kubelet may write anything there.
	alsoLists []string
	want      outcome
	// check, when set, looks at the issued CSR further.
	check func(t *testing.T, csr *certificatesv1.CertificateSigningRequest)
}

func TestHostileRequests(t *testing.T) {
	ctx := context.Background()
	c := cluster.StartForTest(ctx, t)
	stop := startControllers(t, c, nil)
	// n2 is "another node"; each serving case registers its own node with
	// n1's addresses.
	if err := c.RegisterNode(ctx, "n2", "10.0.0.2", "n2.example.com"); err != nil {
		t.Fatal(err)
	}
	// alice may file CSRs but holds no node-client grant, as a stolen
	// low-privilege identity might.
	revoke, err := c.AllowToFileCSRs(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer revoke()
	if _, err := c.CreateBootstrapToken(ctx, "abcdef", "0123456789abcdef", time.Hour); err != nil {
		t.Fatal(err)
	}

	corpus := corpus(t)
	if len(corpus) < 40 {
		t.Fatalf("the corpus holds %d requests; keep at least 40", len(corpus))
	}
	// Every case runs at once, in a group that ends before the control
	// plane stops: the controllers decide them together, as they would an
	// attacker's burst. Requests approved by someone else go to the signer
	// alone afterwards: with the approver running, it would deny them first.
	for _, approvedElsewhere := range []bool{false, true} {
		if approvedElsewhere {
			stop()
			stop = startControllers(t, c, func(o *controllers.Options) {
				o.Approver.Policy.NodeClient.Enabled, o.Approver.Policy.Serving.Enabled = false, false
			})
		}
		t.Run(map[bool]string{false: "corpus", true: "approved elsewhere"}[approvedElsewhere], func(t *testing.T) {
			for i, e := range corpus {
				if e.approve != approvedElsewhere {
					continue
				}
				t.Run(e.name, func(t *testing.T) {
					t.Parallel()
					run(ctx, t, c, i, e)
				})
			}
		})
	}
	stop()
}

// run files case i and checks its outcome. Serving requests name a node of
// their own, registered with addresses of its own in place of n1's (two
// Nodes listing one address would both be refused it); client requests a
// node name of their own.
func run(ctx context.Context, t *testing.T, c *cluster.Cluster, i int, e entry) {
	name := fmt.Sprintf("hostile-%02d", i)
	node := name
	own := n1Local(i, node)
	if e.as == "node" {
		addrs := append(slices.Collect(maps.Values(own)), e.alsoLists...)
		slices.Sort(addrs)
		if err := c.RegisterNode(ctx, node, addrs...); err != nil {
			t.Fatal(err)
		}
	}
	p := e.csr(t, node)
	localize(&p.Request, own)
	p.Name = name
	created, err := cluster.CreateCSR(ctx, identity(c, e.as, node), p)
	if e.want.kind == "rejected" {
		if err == nil {
			t.Fatalf("the API server accepted it; want it refused")
		}
		if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) && !apierrors.IsForbidden(err) {
			t.Fatalf("refused with %v; want a validation or authorization error", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	admin := c.AdminClientset()
	if e.approve {
		if err := cluster.SetCondition(ctx, admin, created.Name, certificatesv1.CertificateApproved, "ApprovedByCorpus"); err != nil {
			t.Fatal(err)
		}
	}
	switch e.want.kind {
	case "ignored":
		// A request of ours filed after it is decided; by then this one has
		// been seen, and must still be untouched.
		b := pki.ClientRenewal("n2")
		b.Name = name + "-barrier"
		barrier, err := cluster.CreateCSR(ctx, c.Node("n2"), b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.WaitCSR(ctx, admin, barrier.Name, "decided", time.Minute, decided); err != nil {
			t.Fatal(err)
		}
		got, err := admin.CertificatesV1().CertificateSigningRequests().Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Status.Conditions) != 0 || len(got.Status.Certificate) != 0 {
			t.Errorf("a CSR that is not ours was touched: %s", cluster.Describe(got))
		}
		if ev, _ := cluster.Events(ctx, admin, created.Name); len(ev) != 0 {
			t.Errorf("a CSR that is not ours got Events: %q", ev)
		}
	case "issued":
		got, err := cluster.WaitCSR(ctx, admin, created.Name, "issued", time.Minute, decided)
		if err != nil {
			t.Fatal(err)
		}
		if !approver.StateOf(got).Issued {
			t.Fatalf("want it issued, got %s", cluster.Describe(got))
		}
		if e.check != nil {
			e.check(t, got)
		}
	default:
		typ := certificatesv1.CertificateDenied
		if e.want.kind == "failed" {
			typ = certificatesv1.CertificateFailed
		}
		got, err := cluster.WaitCSR(ctx, admin, created.Name, "decided", time.Minute, decided)
		if err != nil {
			t.Fatal(err)
		}
		var reason string
		for _, cond := range got.Status.Conditions {
			if cond.Type == typ {
				reason = cond.Reason
			}
		}
		if reason != e.want.reason || len(got.Status.Certificate) != 0 {
			t.Errorf("want %s/%s and no certificate, got %s", typ, e.want.reason, cluster.Describe(got))
		}
	}
}

// The corpus writes a serving case's own addresses as n1's: 10.0.0.1,
// fd00::1, n1.example.com, xn--bcher-kva.example.

// n1Local maps n1's addresses to case i's own.
func n1Local(i int, node string) map[string]string {
	return map[string]string{
		"10.0.0.1":              fmt.Sprintf("10.1.%d.1", i),
		"fd00::1":               fmt.Sprintf("fd00::%x:1", i+1),
		"n1.example.com":        node + ".example.com",
		"xn--bcher-kva.example": "xn--bcher-kva." + node + ".example",
	}
}

// localize rewrites n1's addresses in a request as the case's own, keeping
// the spelling around them (case, trailing dots, prefixes).
func localize(r *pki.Request, own map[string]string) {
	for i, ip := range r.IPAddresses {
		for from, to := range own {
			if a := net.ParseIP(from); a != nil && a.Equal(ip) {
				r.IPAddresses[i] = net.ParseIP(to)
			}
		}
	}
	for i, name := range r.DNSNames {
		for from, to := range own {
			if j := strings.Index(strings.ToLower(name), from); j >= 0 && net.ParseIP(from) == nil {
				r.DNSNames[i] = name[:j] + to + name[j+len(from):]
			}
		}
	}
}

// decided reports a CSR the controllers are done with.
func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	s := approver.StateOf(csr)
	return s.Denied || s.Failed || s.Issued
}

func identity(c *cluster.Cluster, as, node string) kubernetes.Interface {
	switch as {
	case "node":
		return c.Node(node)
	case "bootstrap":
		return c.Bootstrap("abcdef")
	case "alice":
		return c.Clientset("alice")
	}
	return c.AdminClientset()
}

// longLabel is a DNS label one octet longer than DNS allows.
var longLabel = strings.Repeat("a", 64)

// zone is the DNS the corpus's controllers resolve with: absolute names
// only, as the approver asks. The relative hijack.nodes.example is what a
// resolver following a pod's search domains would find first, a tenant's
// headless Service answering with an address of its choosing.
var zone = staticResolver{
	"n2.nodes.example.":    {netip.MustParseAddr("10.0.0.2")},
	"good.nodes.example.":  {netip.MustParseAddr("10.9.9.8")},
	"hijack.nodes.example": {netip.MustParseAddr("10.9.9.9")},
}

// staticResolver answers from a table; a name not in it does not exist.
type staticResolver map[string][]netip.Addr

func (z staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := z[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// corpus is the hostile and malformed requests, each with its outcome.
func corpus(t *testing.T) []entry {
	ips := pki.IPs
	type build = func(*testing.T, string) pki.CSR
	// serving is a request of the case's node; given no address it carries
	// the node's own (n1's 10.0.0.1, localised), as a kubelet asks only once
	// it has one.
	serving := func(dns []string, addrs ...string) build {
		if len(addrs) == 0 {
			addrs = []string{"10.0.0.1"}
		}
		return func(_ *testing.T, node string) pki.CSR { return pki.Serving(node, dns, ips(addrs...)) }
	}
	client := func(edit func(*pki.CSR)) build {
		return func(_ *testing.T, node string) pki.CSR {
			c := pki.ClientBootstrap(node, "abcdef")
			if edit != nil {
				edit(&c)
			}
			return c
		}
	}
	servingEdit := func(edit func(*pki.CSR)) build {
		return func(_ *testing.T, node string) pki.CSR {
			c := pki.Serving(node, []string{"n1.example.com"}, ips("10.0.0.1"))
			edit(&c)
			return c
		}
	}
	raw := func(pemOf func(t *testing.T, node string) []byte) build {
		return func(t *testing.T, node string) pki.CSR {
			c := pki.ClientBootstrap(node, "abcdef")
			c.RequestPEM = pemOf(t, node)
			return c
		}
	}
	good := func(t *testing.T, node string) []byte {
		b, err := pki.ClientBootstrap(node, "abcdef").Request.PEM()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withKey := func(alg string) build {
		return func(t *testing.T, node string) pki.CSR {
			c := pki.ClientBootstrap(node, "abcdef")
			c.Request.Key = pki.MustKey(t, alg)
			return c
		}
	}
	manySANs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("h%d.n1.example.com", i)
		}
		return out
	}
	seconds := func(s int32) *int32 { return &s }
	lifetime := func(want time.Duration) func(*testing.T, *certificatesv1.CertificateSigningRequest) {
		return func(t *testing.T, csr *certificatesv1.CertificateSigningRequest) {
			block, _ := pem.Decode(csr.Status.Certificate)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := cert.NotAfter.Sub(cert.NotBefore); got != want {
				t.Errorf("lifetime %s, want %s", got, want)
			}
		}
	}

	return []entry{
		// The PEM itself.
		{name: "text that is not PEM is refused by the API server", as: "bootstrap", want: rejected,
			csr: raw(func(*testing.T, string) []byte { return []byte("not a certificate request") })},
		{name: "a PEM block of garbage DER is refused by the API server", as: "bootstrap", want: rejected,
			csr: raw(func(*testing.T, string) []byte {
				return []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
			})},
		{name: "a CERTIFICATE block instead of a request is refused by the API server", as: "bootstrap", want: rejected,
			csr: raw(func(t *testing.T, n string) []byte {
				return []byte(strings.ReplaceAll(string(good(t, n)), "CERTIFICATE REQUEST", "CERTIFICATE"))
			})},
		{name: "trailing data after the request is denied", as: "bootstrap", want: denied(approver.ReasonMalformedRequest),
			csr: raw(func(t *testing.T, n string) []byte { return append(good(t, n), "trailing"...) })},
		{name: "a second PEM block after the request is denied", as: "bootstrap", want: denied(approver.ReasonMalformedRequest),
			csr: raw(func(t *testing.T, n string) []byte { return append(good(t, n), good(t, n)...) })},
		{name: "text before the request is denied", as: "bootstrap", want: denied(approver.ReasonMalformedRequest),
			csr: raw(func(t *testing.T, n string) []byte { return append([]byte("hello\n"), good(t, n)...) })},
		{name: "PEM headers are denied", as: "bootstrap", want: denied(approver.ReasonMalformedRequest),
			csr: raw(func(t *testing.T, n string) []byte {
				return []byte(strings.Replace(string(good(t, n)), "-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1))
			})},
		{name: "white space before the PEM block is denied", as: "bootstrap", want: denied(approver.ReasonMalformedRequest),
			csr: raw(func(t *testing.T, n string) []byte { return append([]byte(" \n"), good(t, n)...) })},
		{name: "a validly signed RSA key of 9000 bits is denied before its signature is checked", as: "bootstrap", want: denied(approver.ReasonKeyNotAllowed),
			csr: func(t *testing.T, node string) pki.CSR {
				k, err := pki.CheapHugeRSAKey(9000)
				if err != nil {
					t.Fatal(err)
				}
				c := pki.ClientBootstrap(node, "abcdef")
				c.Request.Key = k
				return c
			}},
		{name: "a request signed by another key is refused by the API server", as: "bootstrap", want: rejected,
			csr: raw(func(t *testing.T, n string) []byte {
				b, err := pki.SignedByOtherKey(good(t, n), pki.MustKey(t, pki.ECDSAP256))
				if err != nil {
					t.Fatal(err)
				}
				return b
			})},

		// Keys.
		{name: "a 1024-bit RSA key is denied", as: "bootstrap", want: denied(approver.ReasonKeyNotAllowed), csr: withKey(pki.RSA1024)},
		{name: "an ECDSA P-224 key is denied", as: "bootstrap", want: denied(approver.ReasonKeyNotAllowed), csr: withKey(pki.ECDSAP224)},
		{name: "an ECDSA P-521 key is denied by default", as: "bootstrap", want: denied(approver.ReasonKeyNotAllowed), csr: withKey(pki.ECDSAP521)},
		{name: "an Ed25519 key is denied by default", as: "bootstrap", want: denied(approver.ReasonKeyNotAllowed), csr: withKey(pki.Ed25519)},
		{name: "a 2048-bit RSA key with key encipherment is issued", as: "bootstrap", want: issuedOK, csr: func(t *testing.T, node string) pki.CSR {
			c := withKey(pki.RSA2048)(t, node)
			c.Usages = []certificatesv1.KeyUsage{"digital signature", "key encipherment", "client auth"}
			return c
		}},

		// Client certificate shape.
		{name: "system:masters in the organization is denied", as: "bootstrap", want: denied(approver.ReasonOrganizationNotSystemNodes),
			csr: client(func(c *pki.CSR) { c.Request.Subject.Organization = []string{"system:nodes", "system:masters"} })},
		{name: "a repeated organization is denied", as: "bootstrap", want: denied(approver.ReasonOrganizationNotSystemNodes),
			csr: client(func(c *pki.CSR) { c.Request.Subject.Organization = []string{"system:nodes", "system:nodes"} })},
		{name: "no organization is denied", as: "bootstrap", want: denied(approver.ReasonOrganizationNotSystemNodes),
			csr: client(func(c *pki.CSR) { c.Request.Subject.Organization = nil })},
		{name: "a CommonName that is not a node's is denied", as: "bootstrap", want: denied(approver.ReasonCommonNameNotNode),
			csr: client(func(c *pki.CSR) { c.Request.Subject.CommonName = "admin" })},
		{name: "an empty node name is denied", as: "bootstrap", want: denied(approver.ReasonCommonNameNotNode),
			csr: client(func(c *pki.CSR) { c.Request.Subject.CommonName = "system:node:" })},
		{name: "an invalid node name is denied", as: "bootstrap", want: denied(approver.ReasonCommonNameNotNode),
			csr: client(func(c *pki.CSR) { c.Request.Subject.CommonName = "system:node:Bad_Name" })},
		{name: "a DNS SAN in a client request is denied", as: "bootstrap", want: denied(approver.ReasonSANsNotAllowed),
			csr: client(func(c *pki.CSR) { c.Request.DNSNames = []string{"n3.example.com"} })},
		{name: "an IP SAN in a client request is denied", as: "bootstrap", want: denied(approver.ReasonSANsNotAllowed),
			csr: client(func(c *pki.CSR) { c.Request.IPAddresses = ips("10.0.0.3") })},
		{name: "an email SAN in a client request is denied", as: "bootstrap", want: denied(approver.ReasonSANsNotAllowed),
			csr: client(func(c *pki.CSR) { c.Request.EmailAddresses = []string{"root@n3"} })},
		{name: "a URI SAN in a client request is denied", as: "bootstrap", want: denied(approver.ReasonSANsNotAllowed),
			csr: client(func(c *pki.CSR) { c.Request.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster", Path: "/n3"}} })},
		{name: "server auth in a client request is denied", as: "bootstrap", want: denied(approver.ReasonUsagesNotAllowed),
			csr: client(func(c *pki.CSR) { c.Usages = pki.ServingUsages })},
		{name: "an extra cert sign usage is denied", as: "bootstrap", want: denied(approver.ReasonUsagesNotAllowed),
			csr: client(func(c *pki.CSR) {
				c.Usages = append(append([]certificatesv1.KeyUsage{}, pki.ClientUsages...), "cert sign")
			})},
		{name: "a requester that is neither a node nor a bootstrapper is denied as suspicious", as: "alice", want: denied(approver.ReasonRequesterNotNodeOrBootstrap), csr: client(nil)},

		// Serving certificates.
		{name: "a serving request from someone who is not a node is denied as suspicious", as: "admin", want: denied(approver.ReasonRequesterNotNodeOrBootstrap),
			csr: serving([]string{"n1.example.com"}, "10.0.0.1")},
		{name: "another node's IP is denied", as: "node", want: denied(approver.ReasonSANOwnedByOtherNode), csr: serving(nil, "10.0.0.1", "10.0.0.2")},
		{name: "the IPv4-mapped IPv6 form of another node's IP is denied", as: "node", want: denied(approver.ReasonSANOwnedByOtherNode), csr: serving(nil, "::ffff:10.0.0.2")},
		{name: "another node's host name is denied", as: "node", want: denied(approver.ReasonSANOwnedByOtherNode), csr: serving([]string{"N2.example.com."})},
		{name: "another node's IP is denied though the node lists it too", as: "node", alsoLists: []string{"10.0.0.2"}, want: denied(approver.ReasonSANOwnedByOtherNode), csr: serving(nil, "10.0.0.2")},
		{name: "another node's host name is denied though the node lists it too", as: "node", alsoLists: []string{"n2.example.com"}, want: denied(approver.ReasonSANOwnedByOtherNode), csr: serving([]string{"n2.example.com"})},
		{name: "an IP no node lists is denied", as: "node", want: denied(approver.ReasonSANNotOwnedByNode), csr: serving(nil, "10.0.0.77")},
		{name: "a punycode name the node does not have is denied", as: "node", want: denied(approver.ReasonSANNotOwnedByNode), csr: serving([]string{"xn--mnchen-3ya.example"})},
		{name: "a punycode name the node has is issued", as: "node", want: issuedOK, csr: serving([]string{"xn--bcher-kva.example"})},
		{name: "upper case and a trailing dot match the node's host name", as: "node", want: issuedOK, csr: serving([]string{"N1.EXAMPLE.COM."}, "fd00:0:0:0::1")},
		{name: "a wildcard is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving([]string{"*.example.com"})},
		{name: "localhost is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving([]string{"localhost"})},
		{name: "localhost4 is denied though the node lists it", as: "node", alsoLists: []string{"localhost4"}, want: denied(approver.ReasonSANForbidden), csr: serving([]string{"localhost4"})},
		{name: "ip6-loopback is denied though the node lists it", as: "node", alsoLists: []string{"ip6-loopback"}, want: denied(approver.ReasonSANForbidden), csr: serving([]string{"ip6-loopback"})},
		{name: "localhost.localdomain is denied though the node lists it", as: "node", alsoLists: []string{"localhost.localdomain"}, want: denied(approver.ReasonSANForbidden), csr: serving([]string{"localhost.localdomain"})},
		{name: "a name under .localhost is denied though the node lists it", as: "node", alsoLists: []string{"api.localhost"}, want: denied(approver.ReasonSANForbidden), csr: serving([]string{"api.localhost"})},
		{name: "a DNS label of 64 octets is denied though the node lists it", as: "node", alsoLists: []string{longLabel + ".example.com"}, want: denied(approver.ReasonSANInvalid), csr: serving([]string{longLabel + ".example.com"})},
		// dnsResolution (the corpus runs with dnsSuffixes [nodes.example]):
		// the address a name resolves to must be one the node could hold as
		// an IP SAN.
		{name: "a name resolving to another node's IP is denied though the node lists that IP", as: "node", alsoLists: []string{"10.0.0.2"}, want: denied(approver.ReasonSANOwnedByOtherNode),
			csr: serving([]string{"n2.nodes.example"})},
		{name: "a name is resolved as an absolute name, never under the pod's search domains", as: "node", alsoLists: []string{"10.9.9.9"}, want: denied(approver.ReasonDNSResolutionFailed),
			csr: serving([]string{"hijack.nodes.example"})},
		{name: "a name resolving to an address of the node's own is issued", as: "node", alsoLists: []string{"10.9.9.8"}, want: issuedOK,
			csr: serving([]string{"good.nodes.example"})},
		{name: "the API server's service name is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving([]string{"kubernetes.default.svc.cluster.local"})},
		{name: "a service name is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving([]string{"web.default.svc"})},
		{name: "a loopback address is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving(nil, "127.0.0.1")},
		{name: "the unspecified address is denied", as: "node", want: denied(approver.ReasonSANForbidden), csr: serving(nil, "::")},
		{name: "an underscore in a host name is denied", as: "node", want: denied(approver.ReasonSANInvalid), csr: serving([]string{"n1_x.example.com"})},
		{name: "a host name spelled as the node's own IPv4 address is denied", as: "node", want: denied(approver.ReasonSANInvalid), csr: serving([]string{"10.0.0.1"}, "10.0.0.1")},
		{name: "a host name that URL parsers read as 127.0.0.1 is denied", as: "node", want: denied(approver.ReasonSANInvalid), csr: serving([]string{"2130706433"}, "10.0.0.1")},
		{name: "an email SAN in a serving request is denied", as: "node", want: denied(approver.ReasonSANTypeNotAllowed),
			csr: servingEdit(func(c *pki.CSR) { c.Request.EmailAddresses = []string{"root@n1.example.com"} })},
		{name: "a URI SAN in a serving request is denied", as: "node", want: denied(approver.ReasonSANTypeNotAllowed),
			csr: servingEdit(func(c *pki.CSR) { c.Request.URIs = []*url.URL{{Scheme: "https", Host: "n1.example.com"}} })},
		{name: "a serving request without SANs is denied", as: "node", want: denied(approver.ReasonNoSANs),
			csr: servingEdit(func(c *pki.CSR) { c.Request.DNSNames, c.Request.IPAddresses = nil, nil })},
		{name: "a serving request without an IP address is denied: kubelets ask once they have one", as: "node", want: denied(approver.ReasonNoIPAddress),
			csr: servingEdit(func(c *pki.CSR) { c.Request.IPAddresses = nil })},
		{name: "ten thousand SANs (400 KB) are denied unparsed", as: "node", want: denied(approver.ReasonMalformedRequest), csr: serving(manySANs(10000))},
		{name: "one SAN more than maxSANs is denied", as: "node", want: denied(approver.ReasonTooManySANs), csr: serving(manySANs(65))},
		{name: "client auth in a serving request is denied", as: "node", want: denied(approver.ReasonUsagesNotAllowed),
			csr: servingEdit(func(c *pki.CSR) { c.Usages = pki.ClientUsages })},
		{name: "a serving request with system:masters is denied", as: "node", want: denied(approver.ReasonOrganizationNotSystemNodes),
			csr: servingEdit(func(c *pki.CSR) { c.Request.Subject.Organization = []string{"system:masters"} })},

		// Lifetimes.
		{name: "expirationSeconds 600, the API server's minimum, gives ten minutes", as: "bootstrap", want: issuedOK, check: lifetime(10*time.Minute + 5*time.Minute),
			csr: client(func(c *pki.CSR) { c.ExpirationSeconds = seconds(600) })},
		{name: "expirationSeconds 599 is refused by the API server", as: "bootstrap", want: rejected,
			csr: client(func(c *pki.CSR) { c.ExpirationSeconds = seconds(599) })},
		{name: "the largest expirationSeconds is clamped to the signer's duration", as: "bootstrap", want: issuedOK, check: lifetime(24 * time.Hour),
			csr: client(func(c *pki.CSR) { c.ExpirationSeconds = seconds(1<<31 - 1) })},

		// Not ours.
		{name: "a CSR for another signer is left alone", as: "admin", want: ignored,
			csr: client(func(c *pki.CSR) { c.SignerName = "example.com/custom" })},
		{name: "a kube-apiserver-client CSR is left alone", as: "admin", want: ignored,
			csr: client(func(c *pki.CSR) {
				c.SignerName = certificatesv1.KubeAPIServerClientSignerName
				c.Request.Subject = pkix.Name{CommonName: "mallory", Organization: []string{"developers"}}
			})},

		// Approved by someone else: the signer's own checks.
		{name: "an approved serving request with the wrong organization fails", as: "node", approve: true, want: failed(controllers.ReasonSignerValidation),
			csr: servingEdit(func(c *pki.CSR) { c.Request.Subject.Organization = []string{"developers"} })},
		{name: "an approved client request with a DNS SAN fails", as: "bootstrap", approve: true, want: failed(controllers.ReasonSignerValidation),
			csr: client(func(c *pki.CSR) { c.Request.DNSNames = []string{"evil.example.com"} })},
		{name: "an approved serving request with client auth fails", as: "node", approve: true, want: failed(controllers.ReasonSignerValidation),
			csr: servingEdit(func(c *pki.CSR) { c.Usages = pki.ClientUsages })},
	}
}

// startControllers runs the three controllers against c with the defaults
// (and one-day certificates), edited by edit, until stop is called.
func startControllers(t *testing.T, c *cluster.Cluster, edit func(*controllers.Options)) (stop func()) {
	t.Helper()
	o := c.ControllerOptions()
	o.Approver.Policy.RetryInterval = approver.DefaultPolicy().RetryInterval
	o.Approver.Policy.Serving.DNSSuffixes = []string{"nodes.example"}
	o.Approver.Policy.Serving.ResolveDNS = true
	o.Approver.Resolver = zone
	if edit != nil {
		edit(&o)
	}
	_, stop = c.StartControllers(t, o, nil)
	return stop
}
