package approver_test

import (
	"bytes"
	"crypto/x509/pkix"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// FuzzParsePEM: no input makes the parser panic, and whatever it accepts is
// exactly one CERTIFICATE REQUEST block with nothing around it.
func FuzzParsePEM(f *testing.F) {
	good, err := pki.Serving("n1", []string{"n1"}, nil).Request.PEM()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(append(append([]byte{}, good...), good...))
	f.Add(append([]byte("x"), good...))
	f.Add(append([]byte(" \n"), good...))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := approver.ParsePEM(data)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(data, []byte("-----BEGIN CERTIFICATE REQUEST-----")) || bytes.Count(data, []byte("-----BEGIN")) != 1 {
			t.Fatalf("accepted something that is not one CERTIFICATE REQUEST block at the very start: %q", data)
		}
		if !bytes.HasSuffix(bytes.TrimSpace(data), []byte("-----END CERTIFICATE REQUEST-----")) {
			t.Fatalf("accepted data after the END line: %q", data)
		}
		if x == nil {
			t.Fatal("nil request without an error")
		}
	})
}

// FuzzEvaluate builds requests from fuzzed parts (subject, SANs, usages,
// requester, the Node's addresses) and checks that Evaluate never panics and
// never approves what an independent reading of the rules forbids.
func FuzzEvaluate(f *testing.F) {
	f.Add(uint8(1), "system:node:n1", "system:nodes", "n1.example.com", "10.0.0.1", "", uint8(0b0011), "system:node:n1", true, "10.0.0.1,n1.example.com", true)
	f.Add(uint8(0), "system:node:n1", "system:nodes", "", "", "", uint8(0b0101), "system:node:n1", true, "", true)
	f.Add(uint8(0), "system:node:n1", "system:nodes", "", "", "", uint8(0b0101), "system:bootstrap:abcdef", false, "", true)
	f.Add(uint8(1), "system:node:n1", "system:nodes,system:masters", "N1.example.com.", "::ffff:10.0.0.1", "a@b", uint8(0b0111), "system:node:n1", true, "10.0.0.1,n1.example.com", true)
	f.Add(uint8(1), "system:node:n1", "system:nodes", "*.example.com,localhost", "127.0.0.1,0.0.0.0", "", uint8(0b0011), "system:node:n1", true, "127.0.0.1,localhost", false)
	f.Add(uint8(1), "system:node:n2", "system:nodes", "n2", "10.0.0.2", "", uint8(0b0011), "system:node:n1", true, "10.0.0.2,n2", true)
	f.Fuzz(func(t *testing.T, kind uint8, cn, orgs, dnsCSV, ipCSV, emailCSV string, usageBits uint8, username string, nodesGroup bool, addrCSV string, authorized bool) {
		signer := certificatesv1.KubeAPIServerClientKubeletSignerName
		usages := usagesFrom(usageBits, certificatesv1.UsageClientAuth)
		if kind%2 == 1 {
			signer = certificatesv1.KubeletServingSignerName
			usages = usagesFrom(usageBits, certificatesv1.UsageServerAuth)
		}
		var ipList []net.IP
		for _, s := range split(ipCSV) {
			if ip := net.ParseIP(s); ip != nil {
				ipList = append(ipList, ip)
			}
		}
		groups := []string{"system:authenticated"}
		if nodesGroup {
			groups = append(groups, "system:nodes")
		}
		c := pki.CSR{
			Name: "fuzz", SignerName: signer, Username: username, Groups: groups, Usages: usages,
			Created: now.Add(-time.Minute),
			Request: pki.Request{
				Subject:        pkix.Name{CommonName: cn, Organization: split(orgs)},
				DNSNames:       split(dnsCSV),
				IPAddresses:    ipList,
				EmailAddresses: split(emailCSV),
				Key:            key(t, pki.ECDSAP256),
			},
		}
		obj, err := c.Object()
		if err != nil {
			return // x509 refused to encode it (non-ASCII names, say)
		}
		r := approver.Read(obj)
		var node *corev1.Node
		if r.NodeName != "" {
			node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName}}
			for _, a := range split(addrCSV) {
				node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
			}
		}
		// Another registered node, whose addresses no other node may get.
		other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}, {Type: corev1.NodeHostName, Address: "n2.example.com"},
		}}}
		p := approver.DefaultPolicy()
		v := approver.NewReview(r, &p)
		f := &approver.Facts{Now: now, Node: node, Authorization: &approver.Authorization{Allowed: authorized},
			Claimants: v.Claimants([]*corev1.Node{other})}
		d := v.Evaluate(f)
		if d.Verdict != approver.Approve {
			return
		}
		// An independent reading of the mandatory rules.
		x := r.X509
		if x == nil || x.CheckSignature() != nil {
			t.Fatal("approved a request that does not parse or verify")
		}
		if !slices.Equal(x.Subject.Organization, []string{"system:nodes"}) {
			t.Fatalf("approved Organization %q", x.Subject.Organization)
		}
		nodeName, ok := strings.CutPrefix(x.Subject.CommonName, "system:node:")
		if !ok || nodeName == "" {
			t.Fatalf("approved CommonName %q", x.Subject.CommonName)
		}
		if len(x.EmailAddresses) > 0 || len(x.URIs) > 0 {
			t.Fatal("approved email or URI SANs")
		}
		if signer == certificatesv1.KubeAPIServerClientKubeletSignerName {
			if !authorized {
				t.Fatal("approved a client CSR the SubjectAccessReview refused")
			}
			if len(x.DNSNames)+len(x.IPAddresses) > 0 {
				t.Fatal("approved a client CSR with SANs")
			}
			return
		}
		if username != x.Subject.CommonName || !nodesGroup {
			t.Fatalf("approved a serving CSR from %q (nodes group %v) for %q", username, nodesGroup, x.Subject.CommonName)
		}
		if len(x.DNSNames)+len(x.IPAddresses) == 0 {
			t.Fatal("approved a serving CSR without SANs")
		}
		for _, ip := range x.IPAddresses {
			if ip.IsLoopback() || ip.IsUnspecified() || !nodeHasIP(node, ip) || (nodeHasIP(other, ip) && r.NodeName != "n2") {
				t.Fatalf("approved IP %s; node addresses %v", ip, node.Status.Addresses)
			}
		}
		for _, name := range x.DNSNames {
			if strings.Contains(name, "*") || !nodeHasName(node, name) || (nodeHasName(other, name) && r.NodeName != "n2") {
				t.Fatalf("approved DNS name %q; node addresses %v", name, node.Status.Addresses)
			}
		}
	})
}

func split(csv string) []string {
	if csv == "" {
		return nil
	}
	return strings.Split(csv, ",")
}

func usagesFrom(bits uint8, auth certificatesv1.KeyUsage) []certificatesv1.KeyUsage {
	all := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, auth, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageCertSign, certificatesv1.UsageClientAuth, certificatesv1.UsageServerAuth}
	var out []certificatesv1.KeyUsage
	for i, u := range all {
		if bits&(1<<i) != 0 {
			out = append(out, u)
		}
	}
	return out
}

func nodeHasIP(n *corev1.Node, ip net.IP) bool {
	for _, a := range n.Status.Addresses {
		if parsed := net.ParseIP(a.Address); parsed != nil && parsed.Equal(ip) {
			return true
		}
	}
	return false
}

func nodeHasName(n *corev1.Node, name string) bool {
	for _, a := range n.Status.Addresses {
		if strings.EqualFold(strings.TrimSuffix(a.Address, "."), strings.TrimSuffix(name, ".")) {
			return true
		}
	}
	return false
}
