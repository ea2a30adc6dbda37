package approver_test

import (
	"crypto"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

var now = pki.Now().Truncate(time.Second)

// Keys are made once: RSA generation is slow and the rules only look at the
// public key.
var (
	keysOnce sync.Once
	keys     map[string]crypto.Signer
)

func key(t *testing.T, alg string) crypto.Signer {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[string]crypto.Signer{}
		for _, a := range []string{pki.RSA1024, pki.RSA2048, pki.ECDSAP224, pki.ECDSAP256, pki.ECDSAP384, pki.ECDSAP521, pki.Ed25519} {
			k, err := pki.NewKey(a)
			if err != nil {
				panic(err)
			}
			keys[a] = k
		}
	})
	return keys[alg]
}

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		typ := corev1.NodeInternalIP
		if _, err := netip.ParseAddr(a); err != nil {
			typ = corev1.NodeHostName
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: typ, Address: a})
	}
	return n
}

var (
	allowed    = &approver.Authorization{Allowed: true}
	notAllowed = &approver.Authorization{Reason: "no RBAC policy matched"}
	n1         = node("n1", "10.0.0.1", "2001:db8::1", "n1.example.com")
)

func servingN1() pki.CSR {
	return pki.Serving("n1", []string{"n1.example.com"}, pki.IPs("10.0.0.1", "2001:db8::1"))
}

type evalCase struct {
	name   string
	csr    pki.CSR
	edit   func(*certificatesv1.CertificateSigningRequest)
	policy func(*approver.Policy)
	facts  approver.Facts
	want   approver.Decision // Verdict and Reason compared; RetryAfter when set
}

func TestEvaluateNodeClient(t *testing.T) {
	t.Parallel()
	withKey := func(c pki.CSR, k crypto.Signer) pki.CSR { c.Request.Key = k; return c }
	withSubject := func(c pki.CSR, f func(*pki.Request)) pki.CSR { f(&c.Request); return c }
	runEval(t, []evalCase{
		{
			name:  "a node renewing its own client certificate with permission is approved",
			csr:   pki.ClientRenewal("n1"),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "a renewal with an RSA key and key encipherment is approved",
			csr:  withKey(pki.ClientRenewal("n1"), key(t, pki.RSA2048)),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Usages = []certificatesv1.KeyUsage{"digital signature", "key encipherment", "client auth"}
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "repeated usages are compared as a set and approved",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Usages = []certificatesv1.KeyUsage{"client auth", "digital signature", "client auth"}
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "a client request from an identity that is neither a node nor a bootstrapper is denied as suspicious, whatever its permissions",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "system:serviceaccount:kube-system:provisioner", []string{"system:serviceaccounts", "system:authenticated"}
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNodeOrBootstrap, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name: "a client request named like the node but outside system:nodes is denied as suspicious",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Groups = []string{"system:authenticated"}
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNodeOrBootstrap, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name: "a static bootstrap identity in system:bootstrappers is no suspect",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "kubelet-bootstrap", pki.BootstrapGroups
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "a suspicious client request left pending under onInvalid=leavePending stays suspicious",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "alice", []string{"system:authenticated"}
			},
			policy: func(p *approver.Policy) { p.NodeClient.OnInvalid = approver.LeavePending },
			facts:  approver.Facts{Authorization: allowed},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonLeftPending, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name:  "a renewal without the selfnodeclient permission is denied as NotAuthorized",
			csr:   pki.ClientRenewal("n1"),
			facts: approver.Facts{Authorization: notAllowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNotAuthorized},
		},
		{
			name:   "an unauthorised renewal is left pending when onUnauthorized is leavePending",
			csr:    pki.ClientRenewal("n1"),
			policy: func(p *approver.Policy) { p.NodeClient.OnUnauthorized = approver.LeavePending },
			facts:  approver.Facts{Authorization: notAllowed},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonLeftPending},
		},
		{
			name:  "an authorizer error is retried within the grace period",
			csr:   pki.ClientRenewal("n1"),
			facts: approver.Facts{Authorization: &approver.Authorization{EvaluationError: "webhook timed out"}},
			want:  approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonAuthorizationError, RetryAfter: 30 * time.Second},
		},
		{
			name:  "an authorizer error after the grace period is denied as NotAuthorized",
			csr:   created(pki.ClientRenewal("n1"), now.Add(-16*time.Minute)),
			facts: approver.Facts{Authorization: &approver.Authorization{EvaluationError: "webhook timed out"}},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNotAuthorized},
		},
		{
			name:  "a bootstrap request with the nodeclient permission is approved",
			csr:   pki.ClientBootstrap("n1", "abcdef"),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "a bootstrap request for a registered node is approved by default, as in Kubernetes",
			csr:   pki.ClientBootstrap("n1", "abcdef"),
			facts: approver.Facts{Authorization: allowed, Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "a bootstrap request for a registered node is denied when allowExistingNode is false",
			csr:    pki.ClientBootstrap("n1", "abcdef"),
			policy: func(p *approver.Policy) { p.NodeClient.AllowBootstrapForExistingNode = false },
			facts:  approver.Facts{Authorization: allowed, Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonBootstrapForExistingNode, ConfirmNode: true},
		},
		{
			name:   "a bootstrap request for a new node is approved when allowExistingNode is false",
			csr:    pki.ClientBootstrap("n1", "abcdef"),
			policy: func(p *approver.Policy) { p.NodeClient.AllowBootstrapForExistingNode = false },
			facts:  approver.Facts{Authorization: allowed},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved, ConfirmNode: true},
		},
		{
			name:  "a bootstrap request without the nodeclient permission is denied as NotAuthorized",
			csr:   pki.ClientBootstrap("n1", "abcdef"),
			facts: approver.Facts{Authorization: notAllowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNotAuthorized},
		},
		{
			name:  "system:masters in the organization is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.Organization = []string{"system:nodes", "system:masters"} }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonOrganizationNotSystemNodes},
		},
		{
			name:  "a repeated system:nodes organization is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.Organization = []string{"system:nodes", "system:nodes"} }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonOrganizationNotSystemNodes},
		},
		{
			name:  "a missing organization is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.Organization = nil }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonOrganizationNotSystemNodes},
		},
		{
			name:  "a client request with a DNS SAN is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.DNSNames = []string{"n1"} }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANsNotAllowed},
		},
		{
			name:  "a client request with an IP SAN is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.IPAddresses = pki.IPs("10.0.0.1") }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANsNotAllowed},
		},
		{
			name:  "a client request with an email SAN is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.EmailAddresses = []string{"n1@example.com"} }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANsNotAllowed},
		},
		{
			name:  "a client request with a URI SAN is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster", Path: "/n1"}} }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANsNotAllowed},
		},
		{
			name:  "a CommonName without the system:node: prefix is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.CommonName = "n1" }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonCommonNameNotNode},
		},
		{
			name:  "a CommonName naming an invalid node name is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.CommonName = "system:node:Bad_Name" }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonCommonNameNotNode},
		},
		{
			name:  "an empty node name is denied",
			csr:   withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.CommonName = "system:node:" }),
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonCommonNameNotNode},
		},
		{
			name:  "server auth in a client request is denied",
			csr:   pki.ClientRenewal("n1"),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Usages = pki.ServingUsages },
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonUsagesNotAllowed},
		},
		{
			name: "an extra usage is denied",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Usages = append(append([]certificatesv1.KeyUsage{}, pki.ClientUsages...), certificatesv1.UsageCertSign)
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonUsagesNotAllowed},
		},
		{
			name: "a missing usage is denied",
			csr:  pki.ClientRenewal("n1"),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Usages = []certificatesv1.KeyUsage{"client auth"}
			},
			facts: approver.Facts{Authorization: allowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonUsagesNotAllowed},
		},
		{
			name:   "a malformed client request is left pending when onInvalid is leavePending",
			csr:    withSubject(pki.ClientRenewal("n1"), func(r *pki.Request) { r.Subject.Organization = []string{"system:masters"} }),
			policy: func(p *approver.Policy) { p.NodeClient.OnInvalid = approver.LeavePending },
			facts:  approver.Facts{Authorization: allowed},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonLeftPending},
		},
		{
			name:  "a node asking for another node's client certificate is checked as bootstrap and denied without nodeclient",
			csr:   pki.ClientRenewal("n1"),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Username = "system:node:n2" },
			facts: approver.Facts{Authorization: notAllowed},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNotAuthorized},
		},
		{
			name:   "client approval switched off leaves client CSRs alone",
			csr:    pki.ClientRenewal("n1"),
			policy: func(p *approver.Policy) { p.NodeClient.Enabled = false },
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonApprovalDisabled},
		},
	})
}

func TestEvaluateServing(t *testing.T) {
	t.Parallel()
	// serving is a request of n1. Since Kubernetes 1.31 a kubelet asks only
	// once its Node has an IP (approver.kubeletServing.requireIP), so a
	// request given no address carries n1's 10.0.0.1; the DNS-only case is
	// a table row of its own.
	serving := func(dns []string, addrs ...string) pki.CSR {
		if len(addrs) == 0 {
			addrs = []string{"10.0.0.1"}
		}
		return pki.Serving("n1", dns, pki.IPs(addrs...))
	}
	// anyName admits every DNS name by pattern, so that only the rule under
	// test can refuse one.
	anyName := func(p *approver.Policy) { p.Serving.DNSPatterns = []*regexp.Regexp{regexp.MustCompile(`^.*$`)} }
	thousands := make([]string, 1000)
	for i := range thousands {
		thousands[i] = fmt.Sprintf("h%d.example.com", i)
	}
	runEval(t, []evalCase{
		{
			name:  "a serving request for the node's own IPv4, IPv6 and host name is approved",
			csr:   servingN1(),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "a DNS name in upper case with a trailing dot matches the node's host name",
			csr:   serving([]string{"N1.Example.COM."}),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "a node address spelled in upper case long-form IPv6 matches the request's address",
			csr:   serving(nil, "2001:db8::1"),
			facts: approver.Facts{Node: node("n1", "2001:0DB8:0:0:0:0:0:0001")},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "a node address written with white space around it is no address and matches nothing",
			csr:  serving(nil, "10.0.0.1"),
			facts: approver.Facts{Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "10.0.0.1 "}, {Type: corev1.NodeInternalIP, Address: " 10.0.0.1"},
			}}}},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:  "the IPv4-mapped IPv6 form of the node's own address is approved",
			csr:   serving(nil, "::ffff:10.0.0.1"),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "the IPv4-mapped IPv6 form of another node's address is denied",
			csr:   serving(nil, "::ffff:10.0.0.2"),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:  "a serving request naming another node's IP is denied",
			csr:   serving([]string{"n1.example.com"}, "10.0.0.1", "10.0.0.2"),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:  "a node that lists another node's IP in its own status is still denied that IP",
			csr:   serving(nil, "10.0.0.2"),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "10.0.0.2"), Claimants: map[string][]string{"10.0.0.2": {"n2"}}},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANOwnedByOtherNode, ConfirmNode: true, Suspicion: approver.SuspicionOtherNodesAddress},
		},
		{
			name:  "a node that lists another node's host name is still denied it, in any case",
			csr:   serving([]string{"N2.Example.com"}),
			facts: approver.Facts{Node: node("n1", "n1.example.com", "n2.example.com"), Claimants: map[string][]string{"n2.example.com": {"n2"}}},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANOwnedByOtherNode, ConfirmNode: true, Suspicion: approver.SuspicionOtherNodesAddress},
		},
		{
			name: "an address in sharedCIDRs may be listed by other nodes too",
			csr:  serving(nil, "10.0.0.1", "203.0.113.5"),
			policy: func(p *approver.Policy) {
				p.Serving.SharedPrefixes = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
			},
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "203.0.113.5"), Claimants: map[string][]string{"203.0.113.5": {"n2", "n3"}}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "a DNS name in deniedNames is forbidden even when the node lists it",
			csr:    serving([]string{"API.cluster.example"}),
			policy: func(p *approver.Policy) { p.Serving.DeniedNames = []string{"api.cluster.example"} },
			facts:  approver.Facts{Node: node("n1", "10.0.0.1", "api.cluster.example")},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:   "a deniedNames entry with a leading dot forbids the names under it",
			csr:    serving([]string{"kubernetes.default.svc.cluster.local"}),
			policy: func(p *approver.Policy) { p.Serving.DeniedNames = []string{".svc.cluster.local"} },
			facts:  approver.Facts{Node: node("n1", "kubernetes.default.svc.cluster.local")},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:   "a deniedNames entry with a leading dot leaves other names alone",
			csr:    serving([]string{"n1.example.com"}),
			policy: func(p *approver.Policy) { p.Serving.DeniedNames = []string{".svc.cluster.local", "example.com"} },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "an IP address in deniedCIDRs is forbidden even when the node lists it",
			csr:  serving(nil, "::ffff:10.96.0.1"),
			policy: func(p *approver.Policy) {
				p.Serving.DeniedPrefixes = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
			},
			facts: approver.Facts{Node: node("n1", "10.96.0.1")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "a DNS name that is not among the node's addresses is denied",
			csr:   serving([]string{"n2.example.com"}),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:  "the node is found by the CommonName, never by a SAN: n1 naming n2's host name is denied",
			csr:   serving([]string{"n2"}),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "n1")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:   "a DNS name under an allowed suffix is approved",
			csr:    serving([]string{"api.n1.nodes.example.org"}),
			policy: func(p *approver.Policy) { p.Serving.DNSSuffixes = []string{"nodes.example.org"} },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "an allowed suffix admits names under it, not the suffix itself",
			csr:    serving([]string{"nodes.example.org"}),
			policy: func(p *approver.Policy) { p.Serving.DNSSuffixes = []string{"nodes.example.org"} },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name: "a DNS name matching an allowed pattern is approved",
			csr:  serving([]string{"ip-10-0-0-1.ec2.internal"}),
			policy: func(p *approver.Policy) {
				p.Serving.DNSPatterns = []*regexp.Regexp{regexp.MustCompile(`^(?:ip-[0-9-]+\.ec2\.internal)$`)}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "an IP address inside an allowed CIDR is approved",
			csr:  serving(nil, "10.0.0.1", "192.168.7.9"),
			policy: func(p *approver.Policy) {
				p.Serving.IPPrefixes = []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "an IP address outside the allowed CIDRs is denied",
			csr:  serving(nil, "192.168.8.9"),
			policy: func(p *approver.Policy) {
				p.Serving.IPPrefixes = []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:  "a wildcard DNS name is denied",
			csr:   serving([]string{"*.example.com"}),
			facts: approver.Facts{Node: node("n1", "*.example.com")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "localhost is denied even when the node reports it",
			csr:   serving([]string{"localhost"}),
			facts: approver.Facts{Node: node("n1", "localhost")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "every loopback spelling of /etc/hosts and RFC 6761 is denied even when the node reports it",
			csr:   serving([]string{"localhost4"}),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "localhost4")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "ip6-loopback is denied",
			csr:   serving([]string{"IP6-Loopback"}),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "ip6-loopback")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "a name under .localhost is denied",
			csr:   serving([]string{"n1.localhost"}),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "n1.localhost")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "localhost6.localdomain6 is denied",
			csr:   serving([]string{"localhost6.localdomain6"}),
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "localhost6.localdomain6")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:   "a DNS label of 64 octets is invalid",
			csr:    serving([]string{strings.Repeat("a", 64) + ".example.com"}),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:   "a DNS label of 63 octets is a host name",
			csr:    serving([]string{strings.Repeat("a", 63) + ".example.com"}),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "a DNS name of 254 octets is invalid",
			csr:    serving([]string{strings.Repeat(strings.Repeat("a", 62)+".", 4) + "ab"}),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:  "a request without an IP address is denied: kubelets ask only once they have one",
			csr:   pki.Serving("n1", []string{"n1.example.com"}, nil),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNoIPAddress},
		},
		{
			name:   "a request without an IP address is approved with requireIP off",
			csr:    pki.Serving("n1", []string{"N1.example.com."}, nil),
			policy: func(p *approver.Policy) { p.Serving.RequireIP = false },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "an IP address outside requiredCIDRs is denied even though the node lists it",
			csr:  serving(nil, "10.0.0.1", "2001:db8::1"),
			policy: func(p *approver.Policy) {
				p.Serving.RequiredPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANOutsideRequired},
		},
		{
			name: "IP addresses inside requiredCIDRs are approved",
			csr:  serving(nil, "10.0.0.1", "2001:db8::1"),
			policy: func(p *approver.Policy) {
				p.Serving.RequiredPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64")}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "a request that breaks a rule is left pending under kubeletServing.onInvalid=leavePending",
			csr:    serving([]string{"*.example.com"}),
			policy: func(p *approver.Policy) { p.Serving.OnInvalid = approver.LeavePending },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonLeftPending},
		},
		{
			name: "a serving request from an identity that is neither a node nor a bootstrapper is denied as suspicious by default",
			csr:  servingN1(),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "system:serviceaccount:vk:virtual-kubelet", []string{"system:serviceaccounts", "system:authenticated"}
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNodeOrBootstrap, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name: "a suspicious serving request left pending under onInvalid=leavePending stays suspicious",
			csr:  servingN1(),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "oidc:mallory", []string{"system:authenticated"}
			},
			policy: func(p *approver.Policy) { p.Serving.OnInvalid = approver.LeavePending },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonLeftPending, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name: "a serving request from an identity that is not a node is left alone under nonNodeRequesters=ignore",
			csr:  servingN1(),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username, c.Spec.Groups = "system:serviceaccount:vk:virtual-kubelet", []string{"system:serviceaccounts", "system:authenticated"}
			},
			policy: func(p *approver.Policy) { p.Serving.NonNodeRequesters = approver.IgnoreNonNodeRequesters },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonNonNodeRequester},
		},
		{
			name: "nonNodeRequesters=ignore still denies a node asking for another node's certificate",
			csr:  servingN1(),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username = "system:node:n2"
			},
			policy: func(p *approver.Policy) { p.Serving.NonNodeRequesters = approver.IgnoreNonNodeRequesters },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNode},
		},
		{
			name:  "kubernetes.default.svc is denied",
			csr:   serving([]string{"kubernetes.default.svc"}),
			facts: approver.Facts{Node: node("n1", "kubernetes.default.svc")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "the bare name kubernetes is denied",
			csr:   serving([]string{"Kubernetes"}),
			facts: approver.Facts{Node: node("n1", "kubernetes")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "a name under the cluster domain is denied",
			csr:   serving([]string{"web.prod.svc.cluster.local"}),
			facts: approver.Facts{Node: node("n1", "web.prod.svc.cluster.local")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:   "a name under a configured cluster domain is denied",
			csr:    serving([]string{"x.corp.k8s"}),
			policy: func(p *approver.Policy) { p.Serving.ClusterDomain = "corp.k8s" },
			facts:  approver.Facts{Node: node("n1", "x.corp.k8s")},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "a loopback address is denied even when the node reports it",
			csr:   serving(nil, "127.0.0.1"),
			facts: approver.Facts{Node: node("n1", "127.0.0.1")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "the IPv6 loopback address is denied",
			csr:   serving(nil, "::1"),
			facts: approver.Facts{Node: node("n1", "::1")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "the unspecified address is denied",
			csr:   serving(nil, "0.0.0.0"),
			facts: approver.Facts{Node: node("n1", "0.0.0.0")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden},
		},
		{
			name:  "a DNS name with an underscore is not a host name and is denied",
			csr:   serving([]string{"n1_x.example.com"}),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:   "a DNS name spelled as an IPv4 address is invalid, even when a pattern admits it",
			csr:    serving([]string{"10.0.0.1"}),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:   "a DNS name that a URL parser reads as an IPv4 number is invalid",
			csr:    serving([]string{"2130706433"}, "10.0.0.1"),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:   "a DNS name whose last label is a hex number is invalid",
			csr:    serving([]string{"host.0x7F000001."}),
			policy: anyName,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name: "a DNS name spelled as a shared address does not skip the other-Node check",
			csr:  serving([]string{"203.0.113.5"}, "10.0.0.1"),
			policy: func(p *approver.Policy) {
				p.Serving.SharedPrefixes = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
				anyName(p)
			},
			facts: approver.Facts{Node: node("n1", "10.0.0.1", "203.0.113.5"), Claimants: map[string][]string{"203.0.113.5": {"n2"}}},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANInvalid},
		},
		{
			name:   "a DNS name with numeric labels that does not end in one is a host name",
			csr:    serving([]string{"10.0.0.1.nodes.example.com"}, "10.0.0.1"),
			policy: func(p *approver.Policy) { p.Serving.DNSSuffixes = []string{"nodes.example.com"} },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "repeated SANs are approved when each is the node's",
			csr:   serving([]string{"n1.example.com", "N1.example.com."}, "10.0.0.1", "10.0.0.1"),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "more SANs than maxSANs are denied",
			csr:   serving(thousands[:65]),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonTooManySANs},
		},
		{
			name:  "thousands of SANs are denied without looking at each",
			csr:   serving(thousands),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonTooManySANs},
		},
		{
			name:  "a request made by another node is denied",
			csr:   servingN1(),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Username = "system:node:n2" },
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNode},
		},
		{
			name: "a request made by a bootstrap identity is denied",
			csr:  servingN1(),
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.Username = "system:bootstrap:abcdef"
				c.Spec.Groups = pki.BootstrapGroups
			},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNode},
		},
		{
			name:  "a requester named like the node but in no node or bootstrap group is denied as suspicious",
			csr:   servingN1(),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Groups = []string{"system:authenticated"} },
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotNodeOrBootstrap, Suspicion: approver.SuspicionNotNodeOrBootstrap},
		},
		{
			name:  "a bootstrapper named like the node, outside system:nodes, is denied",
			csr:   servingN1(),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Groups = pki.BootstrapGroups },
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonRequesterNotInSystemNodes},
		},
		{
			name:  "a wrong organization is denied",
			csr:   pki.CSR{Name: "x", SignerName: certificatesv1.KubeletServingSignerName, Username: "system:node:n1", Groups: pki.NodeGroups, Usages: pki.ServingUsages, Request: pki.Request{Subject: pki.Name("system:node:n1", "system:masters"), IPAddresses: pki.IPs("10.0.0.1")}},
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonOrganizationNotSystemNodes},
		},
		{
			name:  "client auth in a serving request is denied",
			csr:   servingN1(),
			edit:  func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Usages = pki.ClientUsages },
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonUsagesNotAllowed},
		},
		{
			name:  "a serving request without SANs is denied",
			csr:   pki.Serving("n1", nil, nil),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNoSANs},
		},
		{
			name: "an email SAN in a serving request is denied",
			csr: func() pki.CSR {
				c := servingN1()
				c.Request.EmailAddresses = []string{"root@n1.example.com"}
				return c
			}(),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANTypeNotAllowed},
		},
		{
			name: "a URI SAN in a serving request is denied",
			csr: func() pki.CSR {
				c := servingN1()
				c.Request.URIs = []*url.URL{{Scheme: "https", Host: "n1.example.com"}}
				return c
			}(),
			facts: approver.Facts{Node: n1},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANTypeNotAllowed},
		},
		{
			name:  "a node that is not registered yet is retried",
			csr:   servingN1(),
			facts: approver.Facts{},
			want:  approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonNodeNotFound, RetryAfter: 30 * time.Second, ConfirmNode: true},
		},
		{
			name:  "the retry never waits past the end of the grace period",
			csr:   created(servingN1(), now.Add(-15*time.Minute+10*time.Second)),
			facts: approver.Facts{},
			want:  approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonNodeNotFound, RetryAfter: 10 * time.Second, ConfirmNode: true},
		},
		{
			name:  "a node still not registered after the grace period is denied",
			csr:   created(servingN1(), now.Add(-15*time.Minute)),
			facts: approver.Facts{},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNodeNotFound, ConfirmNode: true},
		},
		{
			name:  "a node without addresses is retried",
			csr:   servingN1(),
			facts: approver.Facts{Node: node("n1")},
			want:  approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonNodeHasNoAddresses, RetryAfter: 30 * time.Second, ConfirmNode: true},
		},
		{
			name:  "a node without addresses after the grace period is denied",
			csr:   created(servingN1(), now.Add(-time.Hour)),
			facts: approver.Facts{Node: node("n1")},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonNodeHasNoAddresses, ConfirmNode: true},
		},
		{
			name:   "serving approval switched off leaves serving CSRs alone",
			csr:    servingN1(),
			policy: func(p *approver.Policy) { p.Serving.Enabled = false },
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonApprovalDisabled},
		},
	})
}

func TestEvaluateDNSResolution(t *testing.T) {
	t.Parallel()
	resolving := func(p *approver.Policy) {
		p.Serving.DNSSuffixes = []string{"nodes.example.org"}
		p.Serving.ResolveDNS = true
	}
	csr := pki.Serving("n1", []string{"n1.nodes.example.org", "n1.example.com"}, pki.IPs("10.0.0.1"))
	// lookup answers the resolution of n1.nodes.example.org; unless the case
	// says otherwise, no other Node lists what it resolves to.
	lookup := func(l approver.Lookup) map[string]approver.Lookup {
		if l.Claimants == nil {
			l.Claimants = map[string][]string{}
		}
		return map[string]approver.Lookup{"n1.nodes.example.org": l}
	}
	runEval(t, []evalCase{
		{
			name:   "a suffix-admitted name that resolves to the node's address is approved",
			csr:    csr,
			policy: resolving,
			facts:  approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}})},
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved, ConfirmNode: true},
		},
		{
			name:   "a name resolving to an address of the node that another Node lists is denied: the node wrote that address itself",
			csr:    pki.Serving("evil", []string{"n1.nodes.example.org"}, pki.IPs("10.0.0.66")),
			policy: resolving,
			facts: approver.Facts{Node: node("evil", "10.0.0.66", "10.0.0.1"), Lookups: lookup(approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
				Claimants: map[string][]string{"10.0.0.1": {"n1"}}})},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANOwnedByOtherNode, ConfirmNode: true},
		},
		{
			name: "a name resolving to a shared address another Node lists is approved (sharedCIDRs)",
			csr:  csr,
			policy: func(p *approver.Policy) {
				resolving(p)
				p.Serving.SharedPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
			},
			facts: approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
				Claimants: map[string][]string{"10.0.0.1": {"n2"}}})},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved, ConfirmNode: true},
		},
		{
			name: "a name resolving to a denied address of the node is forbidden",
			csr:  csr,
			policy: func(p *approver.Policy) {
				resolving(p)
				p.Serving.DeniedPrefixes = []netip.Prefix{netip.MustParsePrefix("2001:db8::/64")}
			},
			facts: approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}})},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANForbidden, ConfirmNode: true},
		},
		{
			name:   "the other Nodes listing a resolved address are asked for before anything is approved",
			csr:    csr,
			policy: resolving,
			facts: approver.Facts{Node: n1, Lookups: map[string]approver.Lookup{
				"n1.nodes.example.org": {Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
			}},
			want: approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonWaitingForFacts, RetryAfter: time.Second, Missing: approver.FactClaimants},
		},
		{
			name:   "a suffix-admitted name that resolves elsewhere is denied",
			csr:    csr,
			policy: resolving,
			facts:  approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Addrs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}})},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSANNotOwnedByNode, ConfirmNode: true},
		},
		{
			name:   "a DNS timeout is retried",
			csr:    csr,
			policy: resolving,
			facts:  approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Err: errors.New("i/o timeout"), Temporary: true})},
			want:   approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonDNSResolutionFailed, RetryAfter: 30 * time.Second, ConfirmNode: true},
		},
		{
			name:   "a name that does not exist is denied",
			csr:    csr,
			policy: resolving,
			facts:  approver.Facts{Node: n1, Lookups: lookup(approver.Lookup{Err: errors.New("no such host")})},
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonDNSResolutionFailed, ConfirmNode: true},
		},
		{
			name:   "a lookup the reconciler forgot is retried, never approved",
			csr:    csr,
			policy: resolving,
			facts:  approver.Facts{Node: n1},
			want:   approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonWaitingForFacts, RetryAfter: time.Second, Missing: approver.FactLookup},
		},
	})
}

func TestEvaluateRequestAndKeys(t *testing.T) {
	t.Parallel()
	withKey := func(k crypto.Signer) pki.CSR { c := servingN1(); c.Request.Key = k; return c }
	pemOf := func(c pki.CSR) []byte {
		b, err := c.Request.PEM()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw := func(b []byte) pki.CSR { c := servingN1(); c.RequestPEM = b; return c }
	good := pemOf(servingN1())
	otherKey, err := pki.SignedByOtherKey(good, key(t, pki.ECDSAP256))
	if err != nil {
		t.Fatal(err)
	}
	certBlock := []byte(strings.Replace(string(good), "CERTIFICATE REQUEST", "CERTIFICATE", 2))
	// A 9000-bit RSA key with a signature that cannot verify: the key's
	// size must be refused before the signature, whose check would cost
	// seconds for a big enough modulus.
	huge, err := pki.HugeRSAKey(9000)
	if err != nil {
		t.Fatal(err)
	}
	hugeKey, err := pki.WithPublicKey(good, huge)
	if err != nil {
		t.Fatal(err)
	}
	oversized := append(append([]byte{}, good...), strings.Repeat(" ", approver.MaxRequestBytes)...)
	runEval(t, []evalCase{
		{name: "an RSA key above rsaMaxBits is denied before its signature is checked", csr: raw(hugeKey), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "a 2048-bit RSA key is denied when rsaMaxBits is lower", csr: withKey(key(t, pki.RSA2048)), facts: approver.Facts{Node: n1},
			policy: func(p *approver.Policy) { p.Keys.RSAMinBits, p.Keys.RSAMaxBits = 1024, 1536 },
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "a request larger than MaxRequestBytes is denied unparsed", csr: raw(oversized), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "an RSA key of 1024 bits is denied", csr: withKey(key(t, pki.RSA1024)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "an RSA key of 2048 bits is approved", csr: withKey(key(t, pki.RSA2048)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved}},
		{name: "a 2048-bit RSA key is denied when rsaMinBits is 3072", csr: withKey(key(t, pki.RSA2048)), facts: approver.Facts{Node: n1},
			policy: func(p *approver.Policy) { p.Keys.RSAMinBits = 3072 },
			want:   approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "an ECDSA P-384 key is approved", csr: withKey(key(t, pki.ECDSAP384)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved}},
		{name: "an ECDSA P-521 key is denied by default", csr: withKey(key(t, pki.ECDSAP521)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "an ECDSA P-224 key is denied", csr: withKey(key(t, pki.ECDSAP224)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "an Ed25519 key is denied by default", csr: withKey(key(t, pki.Ed25519)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonKeyNotAllowed}},
		{name: "an Ed25519 key is approved when allowed", csr: withKey(key(t, pki.Ed25519)), facts: approver.Facts{Node: n1},
			policy: func(p *approver.Policy) { p.Keys.Ed25519 = true },
			want:   approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved}},
		{name: "a request signed by another key is denied", csr: raw(otherKey), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSignatureInvalid}},
		{name: "a request that is not PEM is denied", csr: raw([]byte("not a certificate request")), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "an empty request is denied", csr: raw([]byte(" \n")), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "a CERTIFICATE block instead of a request is denied", csr: raw(certBlock), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "data after the PEM block is denied", csr: raw(append(append([]byte{}, good...), "trailing"...)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "data before the PEM block is denied", csr: raw(append([]byte("leading\n"), good...)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "two PEM blocks are denied", csr: raw(append(append([]byte{}, good...), pemOf(pki.Serving("n1", nil, pki.IPs("10.0.0.2")))...)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "a PEM block with headers is denied", csr: raw([]byte(strings.Replace(string(good), "-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1))), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "a PEM block holding garbage DER is denied", csr: raw([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "white space before the BEGIN line is denied, as the signer refuses it", csr: raw(append([]byte("\n  "), good...)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonMalformedRequest}},
		{name: "white space after the END line is accepted", csr: raw(append(append([]byte{}, good...), "\n\n  "...)), facts: approver.Facts{Node: n1},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved}},
		{name: "a CSR for another signer is ignored", csr: servingN1(), facts: approver.Facts{Node: n1},
			edit: func(c *certificatesv1.CertificateSigningRequest) { c.Spec.SignerName = "example.com/custom" },
			want: approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonSignerNotHandled}},
		{name: "a kube-apiserver-client CSR is never touched", csr: pki.ClientRenewal("n1"), facts: approver.Facts{Authorization: allowed},
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Spec.SignerName = certificatesv1.KubeAPIServerClientSignerName
			},
			want: approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonSignerNotHandled}},
		{name: "a CSR already approved is left alone", csr: servingN1(), facts: approver.Facts{Node: n1},
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
			},
			want: approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonAlreadyDecided}},
		{name: "a CSR already denied is left alone", csr: servingN1(), facts: approver.Facts{Node: n1},
			edit: func(c *certificatesv1.CertificateSigningRequest) {
				c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue}}
			},
			want: approver.Decision{Verdict: approver.Ignore, Reason: approver.ReasonAlreadyDecided}},
	})
}

func TestEvaluateSiblings(t *testing.T) {
	t.Parallel()
	// sib is a sibling this process has looked at: a pending one waits for
	// facts.
	sib := func(name string, age time.Duration, s approver.State) approver.Sibling {
		progress := approver.LookedAt
		if s.Pending() {
			progress = approver.WaitingForFacts
		}
		return approver.Sibling{Name: name, Created: now.Add(-age), State: s, Progress: progress}
	}
	unseen := func(name string, age time.Duration) approver.Sibling {
		return approver.Sibling{Name: name, Created: now.Add(-age), Progress: approver.NotLookedAt}
	}
	decidedPending := func(name string, age time.Duration) approver.Sibling {
		return approver.Sibling{Name: name, Created: now.Add(-age), Progress: approver.LookedAt}
	}
	pending, approved, denied := approver.State{}, approver.State{Approved: true}, approver.State{Denied: true}
	self := created(pki.ClientRenewal("n1"), now.Add(-5*time.Minute))
	runEval(t, []evalCase{
		{
			name:  "an older pending request is superseded when a newer one was approved",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{sib("newer", time.Minute, approved)}},
			want:  approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonSuperseded},
		},
		{
			name:  "an older approved request does not supersede a newer one",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{sib("older", time.Hour, approved)}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "a newer request that is only pending does not supersede",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{sib("newer", 30*time.Second, pending)}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "the request is denied when three older ones are still pending",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib("a", 14*time.Minute, pending), sib("b", 12*time.Minute, pending), sib("c", 10*time.Minute, pending), sib("d", 8*time.Minute, denied),
			}},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonTooManyPending},
		},
		{
			name: "two older pending requests stay under the cap",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib("a", 14*time.Minute, pending), sib("b", 12*time.Minute, pending), sib("d", 8*time.Minute, denied),
			}},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:   "the cap is off at zero",
			csr:    self,
			policy: func(p *approver.Policy) { p.MaxPendingPerNode = 0 },
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib("a", 14*time.Minute, pending), sib("b", 12*time.Minute, pending), sib("c", 10*time.Minute, pending),
			}},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "pending requests older than the grace period do not count: the kubelet stopped waiting for them",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib("a", time.Hour, pending), sib("b", 50*time.Minute, pending), sib("c", 16*time.Minute, pending),
			}},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "an approved sibling of the same second does not supersede: which came first is unknown",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib(self.Name+"z", 5*time.Minute, approved),
			}},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "for the cap, pending siblings of the same second are ordered by name",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				sib("a", 5*time.Minute, pending), sib("b", 5*time.Minute, pending), sib("c", 5*time.Minute, pending),
			}},
			want: approver.Decision{Verdict: approver.Deny, Reason: approver.ReasonTooManyPending},
		},
		{
			name:  "an older sibling nobody has looked at yet is decided first",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{unseen("older", 6*time.Minute)}},
			want:  approver.Decision{Verdict: approver.Retry, Reason: approver.ReasonQueuedBehindOlder},
		},
		{
			name:  "a newer sibling nobody has looked at yet does not hold this one back",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{unseen("newer", time.Minute)}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name: "older pending siblings that were looked at and wait for nothing (a dry run, leavePending) do not count for the cap",
			csr:  self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{
				decidedPending("a", 14*time.Minute), decidedPending("b", 12*time.Minute), decidedPending("c", 10*time.Minute), decidedPending("d", 8*time.Minute),
			}},
			want: approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "an unseen sibling older than the grace period holds nothing back",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{unseen("stale", time.Hour)}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
		{
			name:  "the CSR itself among its siblings is not counted",
			csr:   self,
			facts: approver.Facts{Authorization: allowed, Siblings: []approver.Sibling{sib(self.Name, 5*time.Minute, approved)}},
			want:  approver.Decision{Verdict: approver.Approve, Reason: approver.ReasonAutoApproved},
		},
	})
}

func TestTheSubjectAccessReviewIsAskedForLast(t *testing.T) {
	t.Parallel()
	p := approver.DefaultPolicy()
	ok := approver.Read(pki.MustObject(t, created(pki.ClientRenewal("n1"), now.Add(-time.Minute))))
	if d := approver.Evaluate(ok, &approver.Facts{Now: now}, &p); d.Missing != approver.FactAuthorization || d.Verdict != approver.Retry {
		t.Errorf("a request that passes every other rule should ask for the SubjectAccessReview, got %+v", d)
	}
	waiting := approver.WaitingForFacts
	noisy := &approver.Facts{Now: now, Siblings: []approver.Sibling{
		{Name: "a", Created: now.Add(-10 * time.Minute), Progress: waiting}, {Name: "b", Created: now.Add(-10 * time.Minute), Progress: waiting}, {Name: "c", Created: now.Add(-10 * time.Minute), Progress: waiting},
	}}
	if d := approver.Evaluate(ok, noisy, &p); d.Reason != approver.ReasonTooManyPending || d.Missing != approver.FactNone {
		t.Errorf("a flood is denied without a SubjectAccessReview, got %+v", d)
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	bootstrapStrict := approver.DefaultPolicy()
	bootstrapStrict.NodeClient.AllowBootstrapForExistingNode = false
	resolving := approver.DefaultPolicy()
	resolving.Serving.ResolveDNS = true
	def := approver.DefaultPolicy()
	bad := pki.ClientRenewal("n1")
	bad.Request.Subject.Organization = []string{"system:masters"}
	tests := []struct {
		name   string
		csr    pki.CSR
		policy *approver.Policy
		want   approver.Plan
	}{
		{"a renewal asks for selfnodeclient and its siblings", pki.ClientRenewal("n1"), &def,
			approver.Plan{Permission: perm("selfnodeclient"), Siblings: true}},
		{"a bootstrap request asks for nodeclient", pki.ClientBootstrap("n1", "abcdef"), &def,
			approver.Plan{Permission: perm("nodeclient"), Siblings: true}},
		{"a bootstrap request also reads the Node when existing nodes are refused", pki.ClientBootstrap("n1", "abcdef"), &bootstrapStrict,
			approver.Plan{Permission: perm("nodeclient"), Node: "n1", Siblings: true}},
		{"a serving request reads the Node its CommonName names", pki.Serving("n1", []string{"n2"}, pki.IPs("10.0.0.1")), &def,
			approver.Plan{Node: "n1", Siblings: true, Claimants: true}},
		{"a serving request asks for DNS answers when resolution is on", servingN1(), &resolving,
			approver.Plan{Node: "n1", Siblings: true, ResolveDNS: true, Claimants: true}},
		{"a request that breaks a rule needs no facts", bad, &def, approver.Plan{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := approver.Read(pki.MustObject(t, tc.csr))
			if diff := cmp.Diff(tc.want, approver.NewReview(r, tc.policy).Plan()); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDNSNamesToResolve(t *testing.T) {
	t.Parallel()
	p := approver.DefaultPolicy()
	p.Serving.ResolveDNS = true
	p.Serving.DNSSuffixes = []string{"nodes.example.org"}
	r := approver.Read(pki.MustObject(t, pki.Serving("n1", []string{"n1.example.com", "A.nodes.example.org.", "a.nodes.example.org", "other.example.net"}, pki.IPs("10.0.0.1"))))
	got := approver.NewReview(r, &p).NamesToResolve(n1)
	if diff := cmp.Diff([]string{"a.nodes.example.org"}, got); diff != "" {
		t.Errorf("NamesToResolve() mismatch (-want +got):\n%s", diff)
	}
}

func perm(sub string) *authorizationv1.ResourceAttributes {
	return &authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create", Subresource: sub, Version: "*"}
}

func created(c pki.CSR, at time.Time) pki.CSR { c.Created = at; return c }

func runEval(t *testing.T, cases []evalCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.csr
			if c.Created.IsZero() {
				c.Created = now.Add(-time.Minute)
			}
			obj := pki.MustObject(t, c)
			if tc.edit != nil {
				tc.edit(obj)
			}
			p := approver.DefaultPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			f := tc.facts
			f.Now = now
			if f.Claimants == nil {
				f.Claimants = map[string][]string{} // no other Node lists a SAN
			}
			r := approver.Read(obj)
			got := approver.Evaluate(r, &f, &p)
			if diff := cmp.Diff(tc.want, got, cmp.FilterPath(func(path cmp.Path) bool {
				return path.Last().String() == ".Message" || (path.Last().String() == ".RetryAfter" && tc.want.RetryAfter == 0)
			}, cmp.Ignore())); diff != "" {
				t.Errorf("Evaluate() mismatch (-want +got):\n%s\nmessage: %s", diff, got.Message)
			}
			if got.Message == "" || !strings.HasSuffix(got.Message, ".") {
				t.Errorf("message %q should be one full sentence", got.Message)
			}
			// A decision that needs facts must have asked for them.
			plan := approver.NewReview(r, &p).Plan()
			if got.Verdict == approver.Approve && r.Kind == approver.KindNodeClient && plan.Permission == nil {
				t.Errorf("approved a client CSR without planning a SubjectAccessReview")
			}
			if got.Verdict == approver.Approve && r.Kind == approver.KindServing && (plan.Node != r.NodeName || !plan.Claimants) {
				t.Errorf("approved a serving CSR without planning to read Node %q and the other Nodes", r.NodeName)
			}
		})
	}
}

func TestClaimantsOf(t *testing.T) {
	t.Parallel()
	r := approver.Read(pki.MustObject(t, pki.Serving("n1", []string{"Shared.Example.com."}, pki.IPs("10.0.0.9", "2001:db8::9"))))
	others := []*corev1.Node{
		node("n1", "10.0.0.9", "shared.example.com"), // its own Node never counts
		node("n2", "::ffff:10.0.0.9", "10.0.0.2"),
		node("n3", "SHARED.example.com", "2001:DB8:0:0:0:0:0:9"),
		node("n4", "10.0.0.4", "n4.example.com"),
	}
	want := map[string][]string{
		"10.0.0.9":           {"n2"},
		"shared.example.com": {"n3"},
		"2001:db8::9":        {"n3"},
	}
	p := approver.DefaultPolicy()
	if diff := cmp.Diff(want, approver.NewReview(r, &p).Claimants(others)); diff != "" {
		t.Errorf("Claimants() mismatch (-want +got):\n%s", diff)
	}
}

func TestServingWaitsForTheOtherNodes(t *testing.T) {
	t.Parallel()
	p := approver.DefaultPolicy()
	r := approver.Read(pki.MustObject(t, servingN1()))
	d := approver.Evaluate(r, &approver.Facts{Now: now, Node: node("n1", "n1.example.com", "10.0.0.1", "2001:db8::1")}, &p)
	if d.Verdict != approver.Retry || d.Missing != approver.FactClaimants {
		t.Errorf("without Claimants: %v %s (missing %d); want a Retry asking for FactClaimants", d.Verdict, d.Reason, d.Missing)
	}
}

func TestTheSignatureIsCheckedOnce(t *testing.T) {
	t.Parallel()
	p := approver.DefaultPolicy()
	good := pki.MustObject(t, created(servingN1(), now.Add(-time.Minute)))
	r := approver.Read(good)
	if r.SignatureVerified() {
		t.Fatal("Read must not check the signature: the cheap rules come first")
	}
	approver.NewReview(r, &p)
	if !r.SignatureVerified() {
		t.Fatal("NewReview should have verified the signature of a request that passes the other rules")
	}
	// A caller that remembers having verified these bytes says so, and the
	// signature is not checked again: a request signed by another key that
	// is marked verified goes through (which is why only exact bytes that
	// did verify may be marked).
	bad := good.DeepCopy()
	var err error
	if bad.Spec.Request, err = pki.SignedByOtherKey(good.Spec.Request, key(t, pki.ECDSAP256)); err != nil {
		t.Fatal(err)
	}
	marked := approver.Read(bad)
	marked.MarkSignatureVerified()
	if d := approver.NewReview(marked, &p).Decided(); d != nil {
		t.Errorf("a request marked verified was checked again: %s", d.Reason)
	}
	if d := approver.NewReview(approver.Read(bad), &p).Decided(); d == nil || d.Reason != approver.ReasonSignatureInvalid {
		t.Errorf("an unmarked request signed by another key should be SignatureInvalid, got %+v", d)
	}
}
