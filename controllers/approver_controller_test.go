package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func named(c pki.CSR, name string) pki.CSR { c.Name = name; return c }

func TestAnApprovalSignedElsewhereHasAnEventOfItsOwn(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Signer.Signers = nil })
	c := h.create(asNode("elsewhere-1"), named(pki.ClientRenewal("elsewhere-1"), "elsewhere-renewal"))
	h.waitForEvent(c.Name, "Normal Approved: AutoApproved")
}

func TestKubeletCertificatesAreApprovedAndIssued(t *testing.T) {
	h := start(t, nil)
	h.registerNode("flow-1", "10.1.0.1", "fd00::1", "flow-1.example.com")

	boot := h.create(asBootstrap("abcdef"), named(pki.ClientBootstrap("flow-1", "abcdef"), "flow-bootstrap"))
	renewal := h.create(asNode("flow-1"), named(pki.ClientRenewal("flow-1"), "flow-renewal"))
	serving := h.create(asNode("flow-1"), named(pki.Serving("flow-1", []string{"FLOW-1.example.com."}, pki.IPs("10.1.0.1", "fd00:0:0::1")), "flow-serving"))

	for _, c := range []*certificatesv1.CertificateSigningRequest{boot, renewal, serving} {
		got := h.waitFor(c.Name, "issued", issued)
		a := cluster.Condition(got, certificatesv1.CertificateApproved)
		if a == nil || a.Reason != approver.ReasonAutoApproved {
			t.Errorf("%s: want Approved/AutoApproved, got %s", c.Name, describe(got))
		}
		cert := h.certificate(got, env.CA.Cert)
		if cert.Subject.CommonName != "system:node:flow-1" || strings.Join(cert.Subject.Organization, ",") != "system:nodes" {
			t.Errorf("%s: subject %s", c.Name, cert.Subject)
		}
		// One Event per issued CSR: the signer's says it was approved, and
		// why.
		h.waitForEvent(c.Name, "Normal Issued: Issued certificate with serial")
		h.waitForEvent(c.Name, "; approved: AutoApproved: ")
		if events := h.events(c.Name); len(events) != 1 {
			t.Errorf("%s: want only the Issued Event, got %q", c.Name, events)
		}
	}
	if a := cluster.Condition(h.waitFor(boot.Name, "issued", issued), certificatesv1.CertificateApproved); !strings.Contains(a.Message, "nodeclient") {
		t.Errorf("the bootstrap CSR should be approved through nodeclient: %q", a.Message)
	}
	if a := cluster.Condition(h.waitFor(renewal.Name, "issued", issued), certificatesv1.CertificateApproved); !strings.Contains(a.Message, "selfnodeclient") {
		t.Errorf("the renewal should be approved through selfnodeclient: %q", a.Message)
	}
	if got := h.counter("kubelet_csr_controller_decisions_total", map[string]string{"verdict": "approve", "reason": "AutoApproved"}); got < 1 {
		t.Errorf("decisions_total{approve} = %v", got)
	}
	if got := h.counter("kubelet_csr_controller_certificates_issued_total", map[string]string{"signer": certificatesv1.KubeletServingSignerName}); got != 1 {
		t.Errorf("certificates_issued_total{kubelet-serving} = %v, want 1", got)
	}
}

func TestServingCSRNamingAnotherNodesIPIsDenied(t *testing.T) {
	h := start(t, nil)
	h.registerNode("deny-1", "10.2.0.1")
	h.registerNode("deny-2", "10.2.0.2")
	c := h.create(asNode("deny-1"), named(pki.Serving("deny-1", nil, pki.IPs("10.2.0.1", "10.2.0.2")), "deny-other-ip"))
	got := h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
	d := cluster.Condition(got, certificatesv1.CertificateDenied)
	if d.Reason != approver.ReasonSANOwnedByOtherNode || !strings.Contains(d.Message, "10.2.0.2") || !strings.Contains(d.Message, `Node "deny-2"`) {
		t.Errorf("want SANOwnedByOtherNode naming the address and its node, got %s: %s", d.Reason, d.Message)
	}
	h.waitForEvent(c.Name, "Warning Denied: SANOwnedByOtherNode")
	// An address no Node lists is not the node's either; the message names
	// the setting that would allow it.
	c = h.create(asNode("deny-1"), named(pki.Serving("deny-1", nil, pki.IPs("10.2.0.1", "10.2.0.3")), "deny-unlisted-ip"))
	got = h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonSANNotOwnedByNode || !strings.Contains(d.Message, "10.2.0.3") || !strings.Contains(d.Message, "ipCIDRs") {
		t.Errorf("want SANNotOwnedByNode naming the address and the setting, got %s: %s", d.Reason, d.Message)
	}
	if issued(got) {
		t.Error("a denied CSR got a certificate")
	}
}

// A kubelet writes its own Node's status: a node that adds another node's
// address to it still does not get a certificate for that address.
func TestServingCSRForAnAddressAnotherNodeListsIsDenied(t *testing.T) {
	h := start(t, nil)
	h.registerNode("victim-1", "10.2.1.2", "victim-1.example.com")
	h.registerNode("liar-1", "10.2.1.1", "10.2.1.2", "Victim-1.Example.com")
	ip := h.create(asNode("liar-1"), named(pki.Serving("liar-1", nil, pki.IPs("10.2.1.1", "::ffff:10.2.1.2")), "liar-ip"))
	dns := h.create(asNode("liar-1"), named(pki.Serving("liar-1", []string{"victim-1.example.com."}, pki.IPs("10.2.1.1")), "liar-dns"))
	for _, c := range []*certificatesv1.CertificateSigningRequest{ip, dns} {
		got := h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
		if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonSANOwnedByOtherNode || !strings.Contains(d.Message, `Node "victim-1"`) {
			t.Errorf("%s: want SANOwnedByOtherNode naming victim-1, got %s: %s", c.Name, d.Reason, d.Message)
		}
	}
	// Which of two Nodes owns an address cannot be told, so the victim's own
	// request is refused too, naming the other Node: fail closed, and point
	// the operator at the node to look at.
	own := h.create(asNode("victim-1"), named(pki.Serving("victim-1", nil, pki.IPs("10.2.1.2")), "victim-own"))
	got := h.waitFor(own.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonSANOwnedByOtherNode || !strings.Contains(d.Message, `Node "liar-1"`) {
		t.Errorf("want SANOwnedByOtherNode naming liar-1, got %s: %s", d.Reason, d.Message)
	}
}

// unboundBootstrapper is a bootstrap token user outside the group that
// RBAC lets create node client CSRs (kubeadm binds a token's extra group).
const unboundBootstrapper = "system:bootstrap:unbound"

func TestUnauthorisedClientCSRIsDenied(t *testing.T) {
	h := start(t, nil)
	// The bootstrapper may create CSRs but holds neither nodeclient nor
	// selfnodeclient.
	revoke, err := env.AllowToFileCSRs(context.Background(), unboundBootstrapper)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(revoke)
	c := h.create(as(unboundBootstrapper), named(pki.ClientRenewal("victim-1"), "unauthorised-client"))
	got := h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonNotAuthorized || !strings.Contains(d.Message, unboundBootstrapper) {
		t.Errorf("want NotAuthorized naming %s, got %s: %s", unboundBootstrapper, d.Reason, d.Message)
	}
	// Asked twice (the API server was ready), refused twice.
	if n := h.counter("kubelet_csr_controller_authorization_reviews_total", map[string]string{"answer": "refused"}); n != 1 {
		t.Errorf("authorization_reviews_total{answer=refused} = %v, want 1", n)
	}
	// (A node asking for another node's client certificate never gets here:
	// the API server refuses to create it. The approver's own rule for it is
	// covered by the approver package's tests.)
}

// NodeRestriction guards only node identities: a kubelet CSR from anyone
// else, or a serving CSR for another Node's address, is flagged with a
// Warning Event and counted, besides its denial.
func TestSuspiciousRequestsAreFlagged(t *testing.T) {
	h := start(t, nil)
	revoke, err := env.AllowToFileCSRs(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(revoke)
	h.registerNode("sus-victim", "10.2.2.2")
	h.registerNode("sus-liar", "10.2.2.1")
	stranger := h.create(as("alice"), named(pki.ClientRenewal("sus-victim"), "sus-stranger"))
	liar := h.create(asNode("sus-liar"), named(pki.Serving("sus-liar", nil, pki.IPs("10.2.2.1", "10.2.2.2")), "sus-liar"))
	honest := h.create(asNode("sus-victim"), named(pki.Serving("sus-victim", nil, pki.IPs("10.2.2.2")), "sus-honest"))
	for _, tc := range []struct {
		csr    *certificatesv1.CertificateSigningRequest
		reason string
		kind   approver.Suspicion
	}{
		{stranger, approver.ReasonRequesterNotNodeOrBootstrap, approver.SuspicionNotNodeOrBootstrap},
		{liar, approver.ReasonSANOwnedByOtherNode, approver.SuspicionOtherNodesAddress},
	} {
		got := h.waitFor(tc.csr.Name, "denied", condition(certificatesv1.CertificateDenied))
		if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != tc.reason {
			t.Errorf("%s: want Denied/%s, got %s: %s", tc.csr.Name, tc.reason, d.Reason, d.Message)
		}
		h.waitForEvent(tc.csr.Name, "Warning SuspiciousRequest: "+string(tc.kind))
		labels := map[string]string{"signer": tc.csr.Spec.SignerName, "kind": string(tc.kind)}
		if n := h.counter("kubelet_csr_controller_suspicious_requests_total", labels); n != 1 {
			t.Errorf("suspicious_requests_total%v = %v, want 1", labels, n)
		}
	}
	h.waitFor(honest.Name, "issued", issued)
	if n := h.countEvents(honest.Name, controllers.EventSuspiciousRequest); n != 0 {
		t.Errorf("an honest node's CSR got %d SuspiciousRequest Events", n)
	}
}

func TestMalformedClientCSRIsDeniedWithTheRule(t *testing.T) {
	h := start(t, nil)
	c := pki.ClientBootstrap("shape-1", "abcdef")
	c.Name = "shape-masters"
	c.Request.Subject.Organization = []string{"system:nodes", "system:masters"}
	created := h.create(asBootstrap("abcdef"), c)
	got := h.waitFor(created.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonOrganizationNotSystemNodes {
		t.Errorf("want OrganizationNotSystemNodes, got %s: %s", d.Reason, d.Message)
	}
}

func TestServingCSRWaitsForItsNode(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Approver.Policy.RetryInterval = time.Hour })
	c := h.create(asNode("late-1"), named(pki.Serving("late-1", []string{"late-1"}, pki.IPs("10.3.0.1")), "late-serving"))
	h.waitForEvent(c.Name, "Normal Waiting: NodeNotFound")
	if got := h.waitFor(c.Name, "pending", func(csr *certificatesv1.CertificateSigningRequest) bool { return true }); len(got.Status.Conditions) != 0 {
		t.Fatalf("a CSR whose Node is missing must stay pending, got %s", describe(got))
	}
	// The retry interval is an hour: only the Node watch can decide it now.
	h.registerNode("late-1", "10.3.0.1", "late-1")
	h.waitFor(c.Name, "issued", issued)
}

func TestBootstrapForExistingNodeIsDeniedWhenNotAllowed(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Approver.Policy.NodeClient.AllowBootstrapForExistingNode = false })
	h.registerNode("known-1", "10.4.0.1")
	c := h.create(asBootstrap("abcdef"), named(pki.ClientBootstrap("known-1", "abcdef"), "bootstrap-existing"))
	got := h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonBootstrapForExistingNode {
		t.Errorf("want BootstrapForExistingNode, got %s: %s", d.Reason, d.Message)
	}
	fresh := h.create(asBootstrap("abcdef"), named(pki.ClientBootstrap("new-1", "abcdef"), "bootstrap-new"))
	h.waitFor(fresh.Name, "issued", issued)
}

func TestOlderPendingCSRIsSupersededWhenANewerOneIsApproved(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Approver.Policy.RetryInterval = time.Hour })
	older := h.create(asNode("super-1"), named(pki.Serving("super-1", nil, pki.IPs("10.5.0.1")), "super-older"))
	h.waitForEvent(older.Name, "NodeNotFound")
	// Creation timestamps have one-second resolution: the newer one must be
	// of a later second to be known as newer.
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "a second passes", func() bool { return time.Since(older.CreationTimestamp.Time) > 1100*time.Millisecond })
	newer := h.create(asNode("super-1"), named(pki.Serving("super-1", nil, pki.IPs("10.5.0.1")), "super-newer"))
	h.waitForEvent(newer.Name, "NodeNotFound")
	// Another approver (a person) approves the newer one: the older one is
	// no longer needed.
	h.approveAsAdmin(newer.Name)
	got := h.waitFor(older.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonSuperseded || !strings.Contains(d.Message, newer.Name) {
		t.Errorf("want Superseded naming %s, got %s: %s", newer.Name, d.Reason, d.Message)
	}
}

func TestTooManyPendingCSRsFromOneNodeAreDenied(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Approver.Policy.RetryInterval = time.Hour })
	var names []string
	for i := range 3 {
		c := h.create(asNode("noisy-1"), named(pki.Serving("noisy-1", nil, pki.IPs("10.6.0.1")), "noisy-"+string(rune('a'+i))))
		h.waitForEvent(c.Name, "NodeNotFound")
		names = append(names, c.Name)
	}
	// Creation timestamps have one-second resolution; within a second the
	// name orders siblings, so "noisy-d" is the newest.
	fourth := h.create(asNode("noisy-1"), named(pki.Serving("noisy-1", nil, pki.IPs("10.6.0.1")), "noisy-d"))
	got := h.waitFor(fourth.Name, "denied", condition(certificatesv1.CertificateDenied))
	if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonTooManyPending {
		t.Errorf("want TooManyPending, got %s: %s", d.Reason, d.Message)
	}
	// A flood beyond the cap: each CSR is denied, but the node's Events
	// are bounded (10 at once), so that the flood costs the API server one
	// write per CSR, not two.
	for i := range 20 {
		c := h.create(asNode("noisy-1"), named(pki.Serving("noisy-1", nil, pki.IPs("10.6.0.1")), fmt.Sprintf("noisy-flood-%02d", i)))
		h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
		names = append(names, c.Name)
	}
	cluster.Poll(context.Background(), t, 50*time.Millisecond, 30*time.Second, "the limited Events counted", func() bool {
		return h.counter("kubelet_csr_controller_events_rate_limited_total", nil) >= 11
	})
	recorded := 0
	for _, n := range append(slices.Clone(names), fourth.Name) {
		recorded += len(h.events(n))
	}
	if recorded > 10 {
		t.Errorf("%d Events about the noisy node's 24 CSRs, want at most 10", recorded)
	}
	names = names[:3]
	// Another node is not affected.
	h.registerNode("quiet-1", "10.6.0.2")
	quiet := h.create(asNode("quiet-1"), named(pki.Serving("quiet-1", nil, pki.IPs("10.6.0.2")), "quiet-serving"))
	h.waitFor(quiet.Name, "issued", issued)
	for _, n := range names {
		if got := h.waitFor(n, "pending", func(*certificatesv1.CertificateSigningRequest) bool { return true }); len(got.Status.Conditions) != 0 {
			t.Errorf("%s should still be pending: %s", n, describe(got))
		}
	}
}

// A node that files several serving CSRs at once (a kubelet restarted a
// few times) gets each decided on its own merits, in the order they were
// made: none is denied TooManyPending because of siblings nobody had
// decided yet, and none is Superseded by a newer one decided first.
func TestANodesCSRsAreDecidedInOrderEachOnItsOwnMerits(t *testing.T) {
	h := start(t, nil)
	rsa1024 := pki.MustKey(t, pki.RSA1024)
	for round := range 20 {
		node := fmt.Sprintf("burst-%d", round)
		ip := fmt.Sprintf("10.12.%d.1", round)
		h.registerNode(node, ip, node+".example.com")
		type want struct {
			csr    pki.CSR
			reason string // "" for issued
		}
		valid := func(i int, dns ...string) want {
			return want{csr: named(pki.Serving(node, dns, pki.IPs(ip)), fmt.Sprintf("%s-%d", node, i))}
		}
		invalid := func(i int, reason string, edit func(*pki.CSR)) want {
			c := pki.Serving(node, []string{node + ".example.com"}, pki.IPs(ip))
			edit(&c)
			return want{csr: named(c, fmt.Sprintf("%s-%d", node, i)), reason: reason}
		}
		csrs := []want{
			valid(0, node+".example.com"),
			invalid(1, approver.ReasonSANNotOwnedByNode, func(c *pki.CSR) { c.Request.IPAddresses = pki.IPs(fmt.Sprintf("10.12.%d.99", round)) }),
			valid(2),
			invalid(3, approver.ReasonSANForbidden, func(c *pki.CSR) { c.Request.DNSNames = []string{"*.example.com"} }),
			valid(4, strings.ToUpper(node)+".example.com."),
			invalid(5, approver.ReasonKeyNotAllowed, func(c *pki.CSR) { c.Request.Key = rsa1024 }),
			valid(6, node+".example.com"),
			valid(7),
		}
		start := time.Now()
		for _, w := range csrs {
			h.create(asNode(node), w.csr)
		}
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Logf("round %d: filing 8 CSRs took %s", round, took)
		}
		for _, w := range csrs {
			got := h.waitFor(w.csr.Name, "decided", func(c *certificatesv1.CertificateSigningRequest) bool {
				return issued(c) || cluster.Condition(c, certificatesv1.CertificateDenied) != nil
			})
			d := cluster.Condition(got, certificatesv1.CertificateDenied)
			switch {
			case w.reason == "" && d != nil:
				t.Errorf("round %d: %s is valid but was denied: %s: %s", round, w.csr.Name, d.Reason, d.Message)
			case w.reason != "" && (d == nil || d.Reason != w.reason):
				t.Errorf("round %d: %s: want Denied/%s, got %s", round, w.csr.Name, w.reason, describe(got))
			}
		}
	}
}

// CSRs left pending on purpose, for a second approver, are not what the
// pending-age alert is about: oldest_pending_age_seconds leaves them out
// and left_pending counts them.
func TestCSRsLeftPendingOnPurposeAreNotCountedAsWaiting(t *testing.T) {
	h := start(t, func(o *controllers.Options) {
		o.Approver.Policy.Serving.OnInvalid = approver.LeavePending
		o.Approver.Policy.Serving.NonNodeRequesters = approver.IgnoreNonNodeRequesters
	})
	h.registerNode("left-1", "10.13.0.1")
	bad := h.create(asNode("left-1"), named(pki.Serving("left-1", []string{"*.example.com"}, pki.IPs("10.13.0.1")), "left-invalid"))
	h.waitForEvent(bad.Name, "Normal LeftPending: LeftPending: Would deny (SANForbidden)")
	revoke, err := env.AllowToFileCSRs(context.Background(), "virtual-kubelet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(revoke)
	vk := h.create(as("virtual-kubelet"), named(pki.Serving("vk-1", nil, pki.IPs("10.13.0.9")), "left-not-a-node"))
	serving := map[string]string{"signer": certificatesv1.KubeletServingSignerName}
	cluster.Poll(context.Background(), t, 50*time.Millisecond, 30*time.Second, "both are counted as left pending", func() bool {
		return h.counter("kubelet_csr_controller_left_pending", serving) == 2
	})
	if age := h.counter("kubelet_csr_controller_oldest_pending_age_seconds", serving); age != 0 {
		t.Errorf("oldest_pending_age_seconds = %v with only CSRs left pending on purpose; want 0", age)
	}
	if ev := h.events(vk.Name); len(ev) != 0 {
		t.Errorf("a request from an identity that is not a node, ignored, got Events: %q", ev)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	h := start(t, func(o *controllers.Options) { o.Approver.DryRun = true })
	h.registerNode("dry-1", "10.7.0.1")
	good := h.create(asNode("dry-1"), named(pki.Serving("dry-1", nil, pki.IPs("10.7.0.1")), "dry-good"))
	bad := h.create(asNode("dry-1"), named(pki.Serving("dry-1", nil, pki.IPs("10.7.0.9")), "dry-bad"))
	h.waitForEvent(good.Name, "Normal WouldApprove: AutoApproved: Dry run, nothing written: would approve.")
	h.waitForEvent(bad.Name, "Warning WouldDeny: SANNotOwnedByNode: Dry run, nothing written: would deny.")
	for _, n := range []string{good.Name, bad.Name} {
		if got := h.waitFor(n, "read", func(*certificatesv1.CertificateSigningRequest) bool { return true }); len(got.Status.Conditions) != 0 || issued(got) {
			t.Errorf("dry run wrote to %s: %s", n, describe(got))
		}
	}
	// The CSR stays pending and comes back at every change: it is reported
	// once. (A later CSR's report shows the change was seen first.)
	patch := []byte(`{"metadata":{"labels":{"touched":"yes"}}}`)
	if _, err := h.admin.CertificatesV1().CertificateSigningRequests().Patch(context.Background(), bad.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	later := h.create(asNode("dry-1"), named(pki.Serving("dry-1", nil, pki.IPs("10.7.0.8")), "dry-bad-later"))
	h.waitForEvent(later.Name, "Warning WouldDeny: SANNotOwnedByNode: Dry run, nothing written: would deny.")
	if got := h.counter("kubelet_csr_controller_decisions_total", map[string]string{"verdict": "deny", "reason": "SANNotOwnedByNode", "mode": "dryRun"}); got != 2 {
		t.Errorf("decisions_total{deny, dryRun} = %v, want 2: each CSR counted once", got)
	}
	if n := h.countEvents(bad.Name, controllers.EventWouldDeny); n != 1 {
		t.Errorf("%d WouldDeny Events for %s, want 1", n, bad.Name)
	}
}

func TestOtherSignersAreNeverTouched(t *testing.T) {
	h := start(t, nil)
	c := pki.ClientRenewal("other-1")
	c.Name = "other-signer"
	c.SignerName = "example.com/custom"
	created := h.create(asNode("other-1"), c)
	// A CSR created after it, of our signer, is decided: by then the other
	// one has been seen and left alone.
	barrier := h.create(asNode("other-1"), named(pki.ClientRenewal("other-1"), "other-barrier"))
	h.waitFor(barrier.Name, "issued", issued)
	if got := h.waitFor(created.Name, "read", func(*certificatesv1.CertificateSigningRequest) bool { return true }); len(got.Status.Conditions) != 0 {
		t.Errorf("a CSR of another signer was touched: %s", describe(got))
	}
	if ev := h.events(created.Name); len(ev) != 0 {
		t.Errorf("a CSR of another signer got events: %q", ev)
	}
}

func TestAllowedReviewsAreRememberedDenialsNever(t *testing.T) {
	var reviews atomic.Int32
	funcs := &interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if _, ok := obj.(*authorizationv1.SubjectAccessReview); ok {
			reviews.Add(1)
		}
		return c.Create(ctx, obj, opts...)
	}}
	h := startIntercepted(t, func(o *controllers.Options) { o.Approver.AuthorizationCacheTTL = time.Hour }, funcs)
	for i := range 5 {
		c := h.create(asBootstrap("abcdef"), named(pki.ClientBootstrap(fmt.Sprintf("scale-%d", i), "abcdef"), fmt.Sprintf("scale-%d", i)))
		h.waitFor(c.Name, "issued", issued)
	}
	if n := reviews.Load(); n != 1 {
		t.Errorf("%d SubjectAccessReviews for five CSRs from one bootstrap token, want 1", n)
	}
	for answer, want := range map[string]float64{"allowed": 1, "remembered": 4} {
		if n := h.counter("kubelet_csr_controller_authorization_reviews_total", map[string]string{"answer": answer}); n != want {
			t.Errorf("authorization_reviews_total{answer=%s} = %v, want %v", answer, n, want)
		}
	}
	// Nodes renewing are different requesters: one review each.
	for i := range 2 {
		c := h.create(asNode(fmt.Sprintf("scale-%d", i)), named(pki.ClientRenewal(fmt.Sprintf("scale-%d", i)), fmt.Sprintf("scale-renew-%d", i)))
		h.waitFor(c.Name, "issued", issued)
	}
	if n := reviews.Load(); n != 3 {
		t.Errorf("%d SubjectAccessReviews after two renewals by two nodes, want 3", n)
	}
}

// A kube-apiserver that has just restarted refuses SubjectAccessReviews
// until its RBAC informers have synced, and says so on /readyz. A refusal
// from a server that is not ready must not deny a kubelet; a refusal from a
// ready server is asked again before it counts.
func TestARefusalFromAnAPIServerThatIsNotReadyDeniesNothing(t *testing.T) {
	var restarting atomic.Bool
	restarting.Store(true)
	var reviews, refused atomic.Int32
	funcs := &interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		sar, ok := obj.(*authorizationv1.SubjectAccessReview)
		if !ok {
			return c.Create(ctx, obj, opts...)
		}
		reviews.Add(1)
		// While "restarting", and once more after, answer as an API server
		// whose RBAC rules are not loaded yet does.
		if restarting.Load() || refused.Load() == 0 {
			refused.Add(1)
			sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: false}
			return nil
		}
		return c.Create(ctx, obj, opts...)
	}}
	h := startIntercepted(t, func(o *controllers.Options) {
		o.Approver.APIServerReady = func(context.Context) error {
			if restarting.Load() {
				return errors.New("GET /readyz answered 500")
			}
			return nil
		}
	}, funcs)
	c := h.create(asBootstrap("abcdef"), named(pki.ClientBootstrap("restarted-1", "abcdef"), "restarted-1"))
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the approver has asked three times", func() bool { return reviews.Load() >= 3 }) // back-off from 50 ms
	got, err := h.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), c.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !approver.StateOf(got).Pending() {
		t.Fatalf("decided while the API server was not ready: %s", describe(got))
	}

	if n := h.counter("kubelet_csr_controller_authorization_reviews_total", map[string]string{"answer": "api_server_not_ready"}); n < 2 {
		t.Errorf("authorization_reviews_total{answer=api_server_not_ready} = %v, want at least 2", n)
	}

	restarting.Store(false)
	refused.Store(0) // the first answer after the restart is still a refusal
	h.waitFor(c.Name, "issued", issued)
	if n := h.counter("kubelet_csr_controller_authorization_reviews_total", map[string]string{"answer": "refused_then_allowed"}); n != 1 {
		t.Errorf("authorization_reviews_total{answer=refused_then_allowed} = %v, want 1", n)
	}
}

// An unauthorized requester cannot make the controller retry forever: past
// the grace period, or when readiness cannot be read at all, a refusal
// stands and says why.
func TestARefusalStandsWhenReadinessCannotHelp(t *testing.T) {
	tests := []struct {
		name        string
		ready       error
		grace       time.Duration
		wantMessage string
	}{
		{"an API server that stays not ready past the grace period", errors.New("GET /readyz answered 500"), 2 * time.Second, "still not ready 2s after the request was made"},
		{"readiness that cannot be read", fmt.Errorf("%w: GET /readyz answered 403", controllers.ErrReadinessUnknown), time.Hour, "is not allowed to create"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			revoke, err := env.AllowToFileCSRs(context.Background(), unboundBootstrapper)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(revoke)
			h := start(t, func(o *controllers.Options) {
				o.Approver.Policy.GracePeriod = tc.grace
				o.Approver.APIServerReady = func(context.Context) error { return tc.ready }
			})
			c := h.create(as(unboundBootstrapper), named(pki.ClientRenewal("victim-1"), fmt.Sprintf("unbound-%d", i)))
			got := h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
			if d := cluster.Condition(got, certificatesv1.CertificateDenied); d.Reason != approver.ReasonNotAuthorized || !strings.Contains(d.Message, tc.wantMessage) {
				t.Errorf("want NotAuthorized saying %q, got %s: %s", tc.wantMessage, d.Reason, d.Message)
			}
		})
	}
}

func TestARenewalAfterAnIssuedCertificateIsApproved(t *testing.T) {
	h := start(t, nil)
	h.registerNode("again-1", "10.10.0.1")
	first := h.create(asNode("again-1"), named(pki.Serving("again-1", nil, pki.IPs("10.10.0.1")), "zz-again-first"))
	h.waitFor(first.Name, "issued", issued)
	// Rotation: the same node asks again later. The older, issued request
	// supersedes nothing newer.
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "a second passes", func() bool { return time.Since(first.CreationTimestamp.Time) > 1100*time.Millisecond })
	second := h.create(asNode("again-1"), named(pki.Serving("again-1", nil, pki.IPs("10.10.0.1")), "aa-again-second"))
	got := h.waitFor(second.Name, "decided", func(csr *certificatesv1.CertificateSigningRequest) bool {
		return issued(csr) || cluster.Condition(csr, certificatesv1.CertificateDenied) != nil
	})
	if !issued(got) {
		t.Fatalf("a later request was not issued: %s", describe(got))
	}
	// And within the same second as an issued one (a kubelet restarting at
	// once): which came first is unknown, so it is not superseded either.
	third := h.create(asNode("again-1"), named(pki.Serving("again-1", nil, pki.IPs("10.10.0.1")), "aa-again-third"))
	if got := h.waitFor(third.Name, "decided", func(csr *certificatesv1.CertificateSigningRequest) bool {
		return issued(csr) || cluster.Condition(csr, certificatesv1.CertificateDenied) != nil
	}); !issued(got) {
		t.Fatalf("a request of the same second as an issued one was not issued: %s", describe(got))
	}
}
