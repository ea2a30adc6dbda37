package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/kubelet"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

var auditNow = pki.Now().Truncate(time.Second)

// auditNode is a Node with an IP, a host name and a kubelet port.
func auditNode(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name + ".example.com"}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
	return n
}

// servingChain issues a serving certificate and returns its chain as a
// kubelet would present it.
func servingChain(t *testing.T, ca *pki.CA, cn string, dns []string, ips []net.IP, notBefore, notAfter time.Time) []*x509.Certificate {
	t.Helper()
	c, err := ca.ServingCert(cn, dns, ips, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{leaf}
}

func TestAuditServedJudgesTrustNameAddressesAndExpiry(t *testing.T) {
	ca := pki.MustCA(t, pki.CAOptions{NotBefore: auditNow.Add(-time.Hour), NotAfter: auditNow.Add(24 * time.Hour)})
	other := pki.MustCA(t, pki.CAOptions{NotBefore: auditNow.Add(-time.Hour), NotAfter: auditNow.Add(24 * time.Hour)})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	n := auditNode("n1", "10.0.0.1")
	valid := func(c *pki.CA, cn string, dns []string, ips ...string) []*x509.Certificate {
		return servingChain(t, c, cn, dns, pki.IPs(ips...), auditNow.Add(-time.Minute), auditNow.Add(time.Hour))
	}
	tests := []struct {
		name  string
		chain []*x509.Certificate
		want  controllers.AuditResult
	}{
		{"a certificate of the CA for the node's name and addresses is ok",
			valid(ca, "system:node:n1", []string{"n1.example.com"}, "10.0.0.1"),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditOK, Trusted: true, CommonName: true, SANs: true}},
		{"upper case names and IPv4-mapped addresses still cover the Node's",
			valid(ca, "system:node:n1", []string{"N1.Example.COM."}, "::ffff:10.0.0.1"),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditOK, Trusted: true, CommonName: true, SANs: true}},
		{"a certificate of another CA is untrusted",
			valid(other, "system:node:n1", []string{"n1.example.com"}, "10.0.0.1"),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditUntrusted, CommonName: true, SANs: true}},
		{"another node's CommonName is what KEP-4872 will refuse",
			valid(ca, "system:node:n2", []string{"n1.example.com"}, "10.0.0.1"),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditWrongCommonName, Trusted: true, SANs: true}},
		{"a certificate without one of the Node's addresses misses SANs",
			valid(ca, "system:node:n1", nil, "10.0.0.1"),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditSANsMissing, Trusted: true, CommonName: true}},
		{"an expired certificate of the CA is expired, not untrusted",
			servingChain(t, ca, "system:node:n1", []string{"n1.example.com"}, pki.IPs("10.0.0.1"), auditNow.Add(-2*time.Hour), auditNow.Add(-time.Second)),
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditExpired, Trusted: true, CommonName: true, SANs: true}},
		{"nothing served is unreachable", nil,
			controllers.AuditResult{Node: "n1", Outcome: controllers.AuditUnreachable}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := controllers.AuditServed(n, tc.chain, roots, auditNow)
			if (got.Outcome == controllers.AuditOK) == (got.Detail != "") {
				t.Errorf("detail %q with outcome %s: a failure says why, a success says nothing", got.Detail, got.Outcome)
			}
			if len(tc.chain) > 0 && !got.NotAfter.Equal(tc.chain[0].NotAfter) {
				t.Errorf("NotAfter %s, want the leaf's %s", got.NotAfter, tc.chain[0].NotAfter)
			}
			got.Detail, got.NotAfter = "", time.Time{}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("AuditServed() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKubeletAddressPrefersAnIPAndNeedsAPort(t *testing.T) {
	n := auditNode("n1", "10.0.0.1")
	n.Status.Addresses = append([]corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n1"}}, n.Status.Addresses...)
	if got, ok := controllers.KubeletAddress(n); !ok || got != "10.0.0.1:10250" {
		t.Errorf("KubeletAddress() = %q, %v; want the InternalIP before the host name", got, ok)
	}
	v6 := auditNode("n2", "fd00::2")
	if got, _ := controllers.KubeletAddress(v6); got != "[fd00::2]:10250" {
		t.Errorf("KubeletAddress() = %q; want an IPv6 address in brackets", got)
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = 0
	if got, ok := controllers.KubeletAddress(n); ok {
		t.Errorf("KubeletAddress() = %q without a kubelet port", got)
	}
}

// kubelets serves TLS for simulated kubelets on loopback and maps each
// Node's kubelet address to its listener.
type kubelets struct {
	mu    sync.Mutex
	addrs map[string]string // kubelet address -> listener address
	// inFlight and most count connections open at once; dials counts per
	// kubelet address.
	inFlight, most atomic.Int32
	dials          map[string]int
}

func newKubelets() *kubelets {
	return &kubelets{addrs: map[string]string{}, dials: map[string]int{}}
}

// serve starts a TLS server for the Node's kubelet address; with hang it
// accepts and never answers.
func (k *kubelets) serve(t *testing.T, n *corev1.Node, cert *tls.Certificate, hang bool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn // the silent kubelet's, closed at the end
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if hang {
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
				continue
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
				_ = tc.HandshakeContext(context.Background())
				// Stay open a moment, so that concurrent dials overlap.
				time.Sleep(50 * time.Millisecond)
			}()
		}
	}()
	addr, _ := controllers.KubeletAddress(n)
	k.mu.Lock()
	k.addrs[addr] = l.Addr().String()
	k.mu.Unlock()
}

// route sends dials of a kubelet address to a local one.
func (k *kubelets) route(kubeletAddr, local string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.addrs[kubeletAddr] = local
}

func (k *kubelets) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	k.mu.Lock()
	local, ok := k.addrs[addr]
	k.dials[addr]++
	k.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError("no kubelet at " + addr)}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, local)
	if err != nil {
		return nil, err
	}
	n := k.inFlight.Add(1)
	for {
		m := k.most.Load()
		if n <= m || k.most.CompareAndSwap(m, n) {
			break
		}
	}
	return &countedConn{Conn: c, done: func() { k.inFlight.Add(-1) }}, nil
}

type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

func TestAuditNodesDialsEachNodeOnceWithBoundedConcurrencyAndTimeouts(t *testing.T) {
	ca := pki.MustCA(t, pki.CAOptions{NotBefore: auditNow.Add(-time.Hour), NotAfter: auditNow.Add(24 * time.Hour)})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	k := newKubelets()
	var nodes []*corev1.Node
	for i := range 8 {
		n := auditNode("n"+string(rune('a'+i)), "10.9.0."+string(rune('1'+i)))
		cert, err := ca.ServingCert("system:node:"+n.Name, []string{n.Name + ".example.com"}, pki.IPs(n.Status.Addresses[0].Address), auditNow.Add(-time.Minute), auditNow.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		k.serve(t, n, &cert, i == 7) // the last one never answers
		nodes = append(nodes, n)
	}
	noPort := auditNode("no-port", "10.9.1.1")
	noPort.Status.DaemonEndpoints.KubeletEndpoint.Port = 0
	nodes = append(nodes, noPort)

	start := time.Now()
	o := controllers.AuditOptions{Timeout: time.Second, Concurrency: 3, Dial: k.dial}
	results := controllers.AuditNodes(context.Background(), nodes, roots, o, func() time.Time { return auditNow })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the pass took %s; the one silent kubelet should cost its timeout (1s) only", took)
	}
	var outcomes []string
	for _, r := range results {
		outcomes = append(outcomes, r.Outcome)
	}
	want := []string{"ok", "ok", "ok", "ok", "ok", "ok", "ok", controllers.AuditUnreachable, controllers.AuditNoEndpoint}
	if diff := cmp.Diff(want, outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if m := k.most.Load(); m > int32(o.Concurrency) || m < 2 {
		t.Errorf("%d connections at once, want between 2 and the bound %d", m, o.Concurrency)
	}
	for addr, n := range k.dials {
		if n != 1 {
			t.Errorf("%s dialled %d times in one pass", addr, n)
		}
	}
}

// The leader audits every Node on its own: metrics by outcome, and a
// Warning Event on the Node whose kubelet serves another CA's certificate.
func TestTheAuditorReportsByOutcomeAndWarnsTheFailingNode(t *testing.T) {
	k := newKubelets()
	h := start(t, func(o *controllers.Options) {
		o.Audit = &controllers.AuditOptions{Interval: 300 * time.Millisecond, Timeout: 2 * time.Second, Concurrency: 2, Dial: k.dial}
	})
	// Nodes get their kubelet port as a kubelet writes it.
	other := pki.MustCA(t, pki.CAOptions{})
	for _, tc := range []struct {
		name, ip string
		ca       *pki.CA
	}{{"audit-good", "10.30.0.1", env.CA}, {"audit-foreign", "10.30.0.2", other}} {
		h.registerNode(tc.name, tc.ip)
		n, err := h.admin.CoreV1().Nodes().Get(context.Background(), tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
		if _, err := h.admin.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		cert, err := tc.ca.ServingCert("system:node:"+tc.name, nil, pki.IPs(tc.ip), pki.Now().Add(-time.Minute), pki.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		k.serve(t, n, &cert, false)
	}
	cluster.Poll(context.Background(), t, 50*time.Millisecond, 30*time.Second, "a pass finds one good and one untrusted kubelet", func() bool {
		return h.counter("kubelet_csr_controller_audit_nodes", map[string]string{"outcome": controllers.AuditOK}) == 1 &&
			h.counter("kubelet_csr_controller_audit_nodes", map[string]string{"outcome": controllers.AuditUntrusted}) == 1
	})
	h.waitForEvent("audit-foreign", "Warning ServingCertificateAudit: untrusted")
	if n := h.countEvents("audit-good", controllers.EventServingCertificateAudit); n != 0 {
		t.Errorf("the good Node got %d audit Events", n)
	}
	if h.counter("kubelet_csr_controller_audit_passes_total", nil) < 1 || h.counter("kubelet_csr_controller_audit_earliest_not_after_timestamp_seconds", nil) <= 0 {
		t.Error("audit_passes_total and audit_earliest_not_after_timestamp_seconds are not reported")
	}
}

// Simulated kubelets, with the kubelet's own certificate manager, serve
// what they were issued: the audit finds the honest one ok, and the one
// denied a serving certificate unreachable (its handshakes fail, as a
// kubelet's do without a certificate).
func TestTheAuditFindsWhatSimulatedKubeletsServe(t *testing.T) {
	routes := newKubelets()
	h := start(t, func(o *controllers.Options) {
		o.Audit = &controllers.AuditOptions{Interval: 300 * time.Millisecond, Timeout: 2 * time.Second, Concurrency: 2, Dial: routes.dial}
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	token, err := env.CreateBootstrapToken(ctx, "audit1", "0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	startKubelet := func(o kubelet.Options) *kubelet.Kubelet {
		o.Bootstrap, o.CertDir, o.Serve = env.BootstrapConfig(token), t.TempDir(), true
		k, err := kubelet.Start(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
		_, port, _ := net.SplitHostPort(k.ServingAddr())
		routes.route(net.JoinHostPort(o.Addresses[0].Address, port), k.ServingAddr())
		return k
	}
	honest := startKubelet(kubelet.Options{NodeName: "audit-honest", Addresses: kubelet.Addresses("audit-honest", 41)})
	cluster.Poll(ctx, t, 50*time.Millisecond, 30*time.Second, "the honest kubelet has its serving certificate", func() bool {
		return honest.ServingCertificate() != nil
	})
	startKubelet(kubelet.Options{NodeName: "audit-liar", Addresses: kubelet.Addresses("audit-liar", 42), ExtraServingIPs: pki.IPs("10.0.0.41")})
	cluster.Poll(ctx, t, 50*time.Millisecond, 30*time.Second, "the audit finds the honest kubelet ok and the denied one unreachable", func() bool {
		return h.counter("kubelet_csr_controller_audit_nodes", map[string]string{"outcome": controllers.AuditOK}) == 1 &&
			h.counter("kubelet_csr_controller_audit_nodes", map[string]string{"outcome": controllers.AuditUnreachable}) == 1
	})
	h.waitForEvent("audit-liar", "Warning ServingCertificateAudit: unreachable")
}
