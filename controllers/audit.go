package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// Outcomes of a served-certificate audit, the outcome label of
// audit_nodes. A node gets the first that applies.
const (
	AuditOK              = "ok"
	AuditNoEndpoint      = "no_endpoint"       // no address or no kubelet port in the Node's status
	AuditUnreachable     = "unreachable"       // no TLS handshake within the timeout
	AuditUntrusted       = "untrusted"         // does not chain to this controller's kubelet-serving CA
	AuditWrongCommonName = "wrong_common_name" // CN is not system:node:<name> (KEP-4872 would refuse it)
	AuditSANsMissing     = "sans_missing"      // a Node address is not among the SANs
	AuditExpired         = "expired"
)

// AuditOutcomes lists every outcome, for metrics that start at zero.
var AuditOutcomes = []string{AuditOK, AuditNoEndpoint, AuditUnreachable, AuditUntrusted, AuditWrongCommonName, AuditSANsMissing, AuditExpired}

// AuditResult is what one node's kubelet served.
type AuditResult struct {
	Node    string
	Address string // host:port dialled ("" when none)
	Outcome string
	// The checks, each on its own (false when nothing was served).
	Trusted, CommonName, SANs bool
	NotAfter                  time.Time
	// Detail says what failed, for the Event and the report.
	Detail string
}

// kubeletAddressTypes are tried in this order for the address to dial: an
// IP needs no resolver, and is what the kubelet's certificate must carry.
var kubeletAddressTypes = []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeInternalDNS, corev1.NodeExternalDNS, corev1.NodeHostName}

// KubeletAddress is the host:port of a Node's kubelet, from
// status.daemonEndpoints.kubeletEndpoint and status.addresses.
func KubeletAddress(n *corev1.Node) (string, bool) {
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if port <= 0 {
		return "", false
	}
	for _, typ := range kubeletAddressTypes {
		for _, a := range n.Status.Addresses {
			if a.Type == typ && a.Address != "" {
				return net.JoinHostPort(a.Address, strconv.Itoa(int(port))), true
			}
		}
	}
	return "", false
}

// AuditServed judges the chain a node's kubelet served (leaf first)
// against roots (this controller's kubelet-serving CA) and the Node.
// Trust is checked within the leaf's validity, so that an expired but
// otherwise good certificate reads as expired, not untrusted.
func AuditServed(n *corev1.Node, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) AuditResult {
	r := AuditResult{Node: n.Name}
	if len(chain) == 0 {
		r.Outcome, r.Detail = AuditUnreachable, "no certificate served"
		return r
	}
	leaf := chain[0]
	r.NotAfter = leaf.NotAfter
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	r.Trusted = err == nil
	r.CommonName = leaf.Subject.CommonName == approver.NodeUserPrefix+n.Name
	var missing []string
	for _, a := range n.Status.Addresses {
		if !coveredBy(leaf, a) {
			missing = append(missing, a.Address)
		}
	}
	r.SANs = len(missing) == 0
	switch {
	case !r.Trusted:
		r.Outcome, r.Detail = AuditUntrusted, fmt.Sprintf("the certificate (issuer %q) does not chain to this controller's kubelet-serving CA: %v", leaf.Issuer.CommonName, err)
	case !r.CommonName:
		r.Outcome, r.Detail = AuditWrongCommonName, fmt.Sprintf("the certificate's CommonName is %q, not %q", leaf.Subject.CommonName, approver.NodeUserPrefix+n.Name)
	case !r.SANs:
		r.Outcome, r.Detail = AuditSANsMissing, fmt.Sprintf("the certificate does not cover the Node's addresses %q", missing)
	case !now.Before(leaf.NotAfter):
		r.Outcome, r.Detail = AuditExpired, fmt.Sprintf("the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	default:
		r.Outcome = AuditOK
	}
	return r
}

// coveredBy reports whether the leaf names a Node address: an IP as an IP
// SAN (compared as addresses), a name as a DNS SAN (case-folded).
func coveredBy(leaf *x509.Certificate, a corev1.NodeAddress) bool {
	if ip, ok := approver.ParseCanonicalIP(a.Address); ok {
		return slices.ContainsFunc(leaf.IPAddresses, func(sip net.IP) bool {
			c, ok := approver.CanonicalIP(sip)
			return ok && c == ip
		})
	}
	name := approver.CanonicalDNS(a.Address)
	return slices.ContainsFunc(leaf.DNSNames, func(d string) bool { return approver.CanonicalDNS(d) == name })
}

// AuditOptions configure the Auditor.
type AuditOptions struct {
	// Interval between passes; each Node is dialled at most once a pass.
	Interval time.Duration
	// Timeout bounds one dial and handshake.
	Timeout time.Duration
	// Concurrency bounds the dials in flight.
	Concurrency int
	// Dial connects to a kubelet (default: a net.Dialer); tests map
	// addresses to local servers.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// AuditNodes dials each Node's kubelet once, at most o.Concurrency at a
// time, and judges what it serves. Results are in the order of nodes.
func AuditNodes(ctx context.Context, nodes []*corev1.Node, roots *x509.CertPool, o AuditOptions, now func() time.Time) []AuditResult {
	out := make([]AuditResult, len(nodes))
	sem := make(chan struct{}, max(o.Concurrency, 1))
	var wg sync.WaitGroup
	for i, n := range nodes {
		addr, ok := KubeletAddress(n)
		if !ok {
			out[i] = AuditResult{Node: n.Name, Outcome: AuditNoEndpoint, Detail: "the Node reports no kubelet port or no address"}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			out[i] = AuditResult{Node: n.Name, Address: addr, Outcome: AuditUnreachable, Detail: ctx.Err().Error()}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			chain, err := servedChain(ctx, addr, o)
			r := AuditServed(n, chain, roots, now())
			if err != nil {
				r.Detail = "no TLS handshake with " + addr + ": " + err.Error()
			}
			r.Address = addr
			out[i] = r
		})
	}
	wg.Wait()
	return out
}

// servedChain returns the certificates a kubelet presents. It trusts
// nothing here (AuditServed verifies), and sends no client certificate.
func servedChain(ctx context.Context, addr string, o AuditOptions) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // verified by AuditServed against the CA
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return conn.ConnectionState().PeerCertificates, nil
}

// Auditor audits the certificates kubelets serve every Interval (on the
// leader only): metrics by outcome, with no per-node labels, and a Warning
// Event on each Node that fails.
type Auditor struct {
	Client   client.Reader // the cache's Nodes
	Recorder events.EventRecorder
	Metrics  *Metrics
	Options  AuditOptions
	// Roots returns the kubelet-serving CA now (nil while none is loaded:
	// the pass is skipped).
	Roots func() *x509.CertPool
	Now   func() time.Time
	Log   logr.Logger
}

// NeedLeaderElection is true: one replica dials the kubelets.
func (a *Auditor) NeedLeaderElection() bool { return true }

// Start runs a pass at once, then every Interval, until ctx ends.
func (a *Auditor) Start(ctx context.Context) error {
	t := time.NewTicker(a.Options.Interval)
	defer t.Stop()
	for {
		if err := a.pass(ctx); err != nil {
			a.Log.Error(err, "audit pass")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

var errNoCA = errors.New("no kubelet-serving CA is loaded")

// pass audits every Node once.
func (a *Auditor) pass(ctx context.Context) error {
	roots := a.Roots()
	if roots == nil {
		return errNoCA
	}
	var list corev1.NodeList
	if err := a.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list Nodes: %w", err)
	}
	nodes := make([]*corev1.Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = &list.Items[i]
	}
	results := AuditNodes(ctx, nodes, roots, a.Options, a.Now)
	counts := map[string]int{}
	var earliest time.Time
	for i, r := range results {
		counts[r.Outcome]++
		if !r.NotAfter.IsZero() && (earliest.IsZero() || r.NotAfter.Before(earliest)) {
			earliest = r.NotAfter
		}
		if r.Outcome != AuditOK {
			a.Recorder.Eventf(nodes[i], nil, corev1.EventTypeWarning, EventServingCertificateAudit, "Audit",
				"%s: %s.", r.Outcome, r.Detail)
		}
	}
	for _, o := range AuditOutcomes {
		a.Metrics.AuditNodes.WithLabelValues(o).Set(float64(counts[o]))
	}
	if !earliest.IsZero() {
		a.Metrics.AuditEarliestExpiry.Set(float64(earliest.Unix()))
	}
	a.Metrics.AuditPasses.Inc()
	a.Log.Info("audited served certificates", "nodes", len(nodes), "ok", counts[AuditOK])
	return nil
}
