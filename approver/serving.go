package approver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ruleServingSANs checks the names and addresses of a serving request on
// their own, before any Node is read: the kinds and number of SANs, their
// spelling, and the names and addresses no node may ever own.
func ruleServingSANs(r *Request, p *Policy) *Decision {
	x := r.X509
	if len(x.EmailAddresses) > 0 || len(x.URIs) > 0 {
		d := deny(ReasonSANTypeNotAllowed, fmt.Sprintf("The request carries %d email and %d URI subject alternative names; kubelet serving certificates carry only DNS names and IP addresses.", len(x.EmailAddresses), len(x.URIs)))
		return &d
	}
	n := len(x.DNSNames) + len(x.IPAddresses)
	if n == 0 {
		d := deny(ReasonNoSANs, "The request carries no DNS name or IP address; a serving certificate needs at least one.")
		return &d
	}
	if p.Serving.MaxSANs > 0 && n > p.Serving.MaxSANs {
		d := deny(ReasonTooManySANs, fmt.Sprintf("The request carries %d DNS names and IP addresses; approver.kubeletServing.maxSANs allows %d.", n, p.Serving.MaxSANs))
		return &d
	}
	if p.Serving.RequireIP && len(x.IPAddresses) == 0 {
		d := deny(ReasonNoIPAddress, "The request carries no IP address; since Kubernetes 1.31 a kubelet asks for a serving certificate only once its Node has one (approver.kubeletServing.requireIP: false allows DNS-only requests).")
		return &d
	}
	for _, name := range x.DNSNames {
		if d := checkDNSName(name, p); d != nil {
			return d
		}
	}
	for _, ip := range x.IPAddresses {
		a, ok := CanonicalIP(ip)
		if !ok {
			d := deny(ReasonSANInvalid, fmt.Sprintf("IP address %v is not a valid address.", ip))
			return &d
		}
		if why := forbiddenIP(a, &p.Serving); why != "" {
			d := deny(ReasonSANForbidden, fmt.Sprintf("IP address %s is %s; no node may hold a certificate for it.", a, why))
			return &d
		}
		if !inRequired(a, &p.Serving) {
			d := deny(ReasonSANOutsideRequired, fmt.Sprintf("IP address %s is outside approver.kubeletServing.requiredCIDRs %s.", a, prefixList(p.Serving.RequiredPrefixes)))
			return &d
		}
	}
	return nil
}

// inRequired reports whether a lies in approver.kubeletServing.requiredCIDRs
// (always, when none are set).
func inRequired(a netip.Addr, s *ServingPolicy) bool {
	return len(s.RequiredPrefixes) == 0 || inAny(s.RequiredPrefixes, a)
}

func prefixList(prefixes []netip.Prefix) string {
	s := make([]string, len(prefixes))
	for i, pr := range prefixes {
		s[i] = pr.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// maxLabel is the longest DNS label (RFC 1035); IsDNS1123Subdomain bounds
// the whole name (253) but not its labels.
const maxLabel = 63

func checkDNSName(name string, p *Policy) *Decision {
	c := CanonicalDNS(name)
	if strings.Contains(c, "*") {
		d := deny(ReasonSANForbidden, fmt.Sprintf("DNS name %q is a wildcard; kubelet serving certificates name one host.", name))
		return &d
	}
	if errs := validation.IsDNS1123Subdomain(c); len(errs) > 0 {
		d := deny(ReasonSANInvalid, fmt.Sprintf("DNS name %q is not a valid host name: %s.", name, errs[0]))
		return &d
	}
	for label := range strings.SplitSeq(c, ".") {
		if len(label) > maxLabel {
			d := deny(ReasonSANInvalid, fmt.Sprintf("DNS name %q has a label of %d octets; DNS allows at most %d (RFC 1035).", name, len(label), maxLabel))
			return &d
		}
	}
	if endsInNumber(c) {
		d := deny(ReasonSANInvalid, fmt.Sprintf("DNS name %q reads as an IPv4 address; an address belongs in the request's IP addresses, where policy checks it as one.", name))
		return &d
	}
	if why := forbiddenName(c, &p.Serving); why != "" {
		d := deny(ReasonSANForbidden, fmt.Sprintf("DNS name %q is %s; no node may hold a certificate for it.", name, why))
		return &d
	}
	return nil
}

// endsInNumber reports whether URL parsers read the canonical name c as an
// IPv4 address: the WHATWG URL standard does so when its last label is a
// decimal number or 0x-prefixed hexadecimal ("10.0.0.1", "2130706433",
// "host.0x7f000001"). Such a name is no host name; admitted as one, it would
// escape the checks IP addresses get (forbidden and denied ranges, other
// Nodes' addresses outside sharedCIDRs).
func endsInNumber(c string) bool {
	last := c[strings.LastIndexByte(c, '.')+1:]
	if strings.HasPrefix(last, "0x") {
		last = last[2:]
		return strings.Trim(last, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// loopbackNames are the names that hosts resolve to their own loopback
// address: RFC 6761's localhost (and every name under .localhost, above),
// and the spellings of common /etc/hosts files.
var loopbackNames = map[string]bool{
	"localhost": true, "localhost4": true, "localhost6": true,
	"localhost.localdomain": true, "localhost4.localdomain4": true, "localhost6.localdomain6": true,
	"ip6-localhost": true, "ip6-loopback": true,
}

// forbiddenName says why a canonical DNS name may never be in a kubelet
// serving certificate (by nature, or by s.DeniedNames), or "".
func forbiddenName(c string, s *ServingPolicy) string {
	clusterDomain := s.ClusterDomain
	switch {
	case loopbackNames[c] || strings.HasSuffix(c, ".localhost"):
		return "a loopback name"
	case c == "kubernetes" || c == "kubernetes.default" || strings.HasPrefix(c, "kubernetes.default."):
		return "the Kubernetes API server's service name"
	case c == "svc" || strings.HasSuffix(c, ".svc"):
		return "a service name"
	case clusterDomain != "" && (c == clusterDomain || strings.HasSuffix(c, "."+clusterDomain)):
		return "under the cluster domain " + clusterDomain
	}
	for _, denied := range s.DeniedNames {
		if c == denied || (strings.HasPrefix(denied, ".") && strings.HasSuffix(c, denied)) {
			return "in approver.kubeletServing.deniedNames"
		}
	}
	return ""
}

// forbiddenIP says why an address may never be in a kubelet serving
// certificate (by nature, or by s.DeniedPrefixes), or "".
func forbiddenIP(a netip.Addr, s *ServingPolicy) string {
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	case inAny(s.DeniedPrefixes, a):
		return "in approver.kubeletServing.deniedCIDRs"
	}
	return ""
}

// inAny reports whether a is in one of prefixes.
func inAny(prefixes []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(prefixes, func(pr netip.Prefix) bool { return pr.Contains(a) })
}

// nodeAddresses are a Node's status.addresses in canonical form.
type nodeAddresses struct {
	ips   []netip.Addr
	names []string
}

// addressesOf reads a Node's addresses: whatever parses as an IP is an IP
// (the kubelet reports a Hostname that is an IP that way too), the rest are
// DNS names.
func addressesOf(n *corev1.Node) nodeAddresses {
	var a nodeAddresses
	for _, addr := range n.Status.Addresses {
		if ip, ok := ParseCanonicalIP(addr.Address); ok {
			a.ips = append(a.ips, ip)
		} else if c := CanonicalDNS(addr.Address); c != "" {
			a.names = append(a.names, c)
		}
	}
	return a
}

// AddressKey is the canonical form of a Node address or a SAN, for
// comparing and indexing: an IP in netip's form (IPv4-mapped addresses as
// IPv4), a DNS name folded by CanonicalDNS.
func AddressKey(address string) string {
	if ip, ok := ParseCanonicalIP(address); ok {
		return ip.String()
	}
	return CanonicalDNS(address)
}

// NodeAddressKeys lists the AddressKeys of a Node's status.addresses, each
// once.
func NodeAddressKeys(n *corev1.Node) []string {
	keys := make([]string, 0, len(n.Status.Addresses))
	for _, addr := range n.Status.Addresses {
		if k := AddressKey(addr.Address); k != "" && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// Claimants answers Facts.Claimants: for each of the request's ClaimKeys,
// the Nodes among others, except the request's own, whose addresses list
// it. The map is never nil.
func (v *Review) Claimants(others []*corev1.Node) map[string][]string {
	return claimantsOf(v.claimKeys, v.Request.NodeName, others)
}

// ClaimKeys lists the AddressKeys of the request's SANs that no other Node
// may list, computed once by NewReview: its DNS names, and its IP addresses
// outside sharedCIDRs (which several Nodes may list, so no other Node's
// listing is looked for).
func (v *Review) ClaimKeys() []string { return v.claimKeys }

func claimKeys(r *Request, p *Policy) []string {
	keys := make([]string, 0, len(r.X509.DNSNames)+len(r.X509.IPAddresses))
	for _, n := range r.X509.DNSNames {
		keys = append(keys, CanonicalDNS(n))
	}
	for _, ip := range r.X509.IPAddresses {
		if a, ok := CanonicalIP(ip); ok && !inAny(p.Serving.SharedPrefixes, a) {
			keys = append(keys, a.String())
		}
	}
	return keys
}

// claimantsOf finds, for each key, the Nodes among others (except self)
// whose addresses list it. The map is never nil.
func claimantsOf(keys []string, self string, others []*corev1.Node) map[string][]string {
	claimants := map[string][]string{}
	for _, n := range others {
		if n.Name == self {
			continue
		}
		for _, k := range NodeAddressKeys(n) {
			if slices.Contains(keys, k) && !slices.Contains(claimants[k], n.Name) {
				claimants[k] = append(claimants[k], n.Name)
			}
		}
	}
	return claimants
}

// LookupClaimKeys lists the addresses of a Lookup that could admit its
// name, and so must be looked for among the other Nodes: those of the
// request's Node, outside sharedCIDRs.
func (v *Review) LookupClaimKeys(l Lookup, node *corev1.Node) []string {
	if node == nil {
		return nil
	}
	own := addressesOf(node)
	var keys []string
	for _, a := range l.Addrs {
		a = a.Unmap()
		if slices.Contains(own.ips, a) && !inAny(v.Policy.Serving.SharedPrefixes, a) && !slices.Contains(keys, a.String()) {
			keys = append(keys, a.String())
		}
	}
	return keys
}

// LookupClaimants answers Lookup.Claimants for l: for each of its
// LookupClaimKeys, the Nodes among others, except the request's own, that
// list it. The map is never nil.
func (v *Review) LookupClaimants(l Lookup, node *corev1.Node, others []*corev1.Node) map[string][]string {
	return claimantsOf(v.LookupClaimKeys(l, node), v.Request.NodeName, others)
}

// checkServingNode checks every SAN against the Node the CommonName names.
// The Node is found by the CN, never by a name taken from the SANs. A
// kubelet writes its own Node's addresses, so a SAN that another Node also
// lists is refused whatever else would admit it: one compromised node must
// not obtain a certificate for another's name or address. viaDNS reports a
// name admitted by what it resolves to.
func checkServingNode(v *Review, f *Facts) (d *Decision, viaDNS bool) {
	r, p := v.Request, v.Policy
	if f.Node == nil {
		d := waitOrDeny(r, f, p, ReasonNodeNotFound, fmt.Sprintf("Node %q is not registered.", r.NodeName))
		return &d, false
	}
	own := addressesOf(f.Node)
	if len(own.ips) == 0 && len(own.names) == 0 {
		d := waitOrDeny(r, f, p, ReasonNodeHasNoAddresses, fmt.Sprintf("Node %q reports no addresses yet.", r.NodeName))
		return &d, false
	}
	if f.Claimants == nil {
		return missingFact(FactClaimants, "the other Nodes' addresses"), false
	}
	for _, key := range v.claimKeys {
		if others := f.Claimants[key]; len(others) > 0 {
			d := deny(ReasonSANOwnedByOtherNode, fmt.Sprintf("%s is an address of Node %q; a node may only hold a certificate for its own addresses that no other Node lists.", key, others[0]))
			d.Suspicion = SuspicionOtherNodesAddress
			return &d, false
		}
	}
	for _, ip := range r.X509.IPAddresses {
		a, _ := CanonicalIP(ip) // checked by ruleServingSANs
		if slices.Contains(own.ips, a) {
			continue
		}
		if inAny(p.Serving.IPPrefixes, a) {
			continue
		}
		d := deny(ReasonSANNotOwnedByNode, fmt.Sprintf("IP address %s is not one of Node %q's addresses %s; allow it with approver.kubeletServing.ipCIDRs.", a, r.NodeName, own.ipList()))
		return &d, false
	}
	for _, name := range r.X509.DNSNames {
		c := CanonicalDNS(name)
		if slices.Contains(own.names, c) {
			continue
		}
		if !p.extraNameAllowed(c) {
			d := deny(ReasonSANNotOwnedByNode, fmt.Sprintf("DNS name %q is not one of Node %q's addresses %s; allow it with approver.kubeletServing.dnsSuffixes or dnsPatterns.", name, r.NodeName, own.nameList()))
			return &d, false
		}
		if !p.Serving.ResolveDNS {
			continue
		}
		if d := v.checkResolution(f, name, c, own); d != nil {
			return d, false
		}
		viaDNS = true
	}
	return nil, viaDNS
}

// checkResolution requires a name admitted by suffix or pattern to resolve
// to an address that would pass as an IP SAN of the Node: one of its own,
// neither forbidden nor denied, inside requiredCIDRs when set, that no
// other Node lists (unless sharedCIDRs holds it). A node writes its own
// Node's addresses, so "one of its own" alone would let it list a
// neighbour's address and claim the neighbour's name.
func (v *Review) checkResolution(f *Facts, name, c string, own nodeAddresses) *Decision {
	r, p := v.Request, v.Policy
	l, ok := f.Lookups[c]
	if !ok {
		return missingFact(FactLookup, "the DNS lookup of "+c)
	}
	if l.Err != nil {
		if l.Temporary {
			d := waitOrDeny(r, f, p, ReasonDNSResolutionFailed, fmt.Sprintf("DNS name %q could not be resolved: %v.", name, l.Err))
			return &d
		}
		d := deny(ReasonDNSResolutionFailed, fmt.Sprintf("DNS name %q does not resolve (%v); approver.kubeletServing.dnsResolution requires it to resolve to one of Node %q's addresses.", name, l.Err, r.NodeName))
		return &d
	}
	if len(v.LookupClaimKeys(l, f.Node)) > 0 && l.Claimants == nil {
		return missingFact(FactClaimants, "the other Nodes listing the addresses of "+c)
	}
	var refused string
	for _, a := range l.Addrs {
		a = a.Unmap()
		if !slices.Contains(own.ips, a) {
			continue
		}
		switch why := forbiddenIP(a, &p.Serving); {
		case why != "":
			refused = fmt.Sprintf("%s, which is %s", a, why)
		case !inRequired(a, &p.Serving):
			refused = fmt.Sprintf("%s, which is outside approver.kubeletServing.requiredCIDRs", a)
		case len(l.Claimants[a.String()]) > 0 && !inAny(p.Serving.SharedPrefixes, a):
			d := deny(ReasonSANOwnedByOtherNode, fmt.Sprintf("DNS name %q resolves to %s, an address of Node %q; a name is admitted only through an address of the Node's own that no other Node lists (approver.kubeletServing.dnsResolution).", name, a, l.Claimants[a.String()][0]))
			return &d
		default:
			return nil
		}
	}
	if refused != "" {
		d := deny(ReasonSANForbidden, fmt.Sprintf("DNS name %q resolves to %s; no node may hold a certificate through it.", name, refused))
		return &d
	}
	d := deny(ReasonSANNotOwnedByNode, fmt.Sprintf("DNS name %q resolves to %v, none of which is one of Node %q's addresses %s (approver.kubeletServing.dnsResolution).", name, l.Addrs, r.NodeName, own.ipList()))
	return &d
}

// NamesToResolve lists the canonical DNS names of the request that Evaluate
// will want resolved given the Node: those admitted by suffix or pattern
// rather than by the Node's own addresses.
func (v *Review) NamesToResolve(node *corev1.Node) []string {
	r, p := v.Request, v.Policy
	if v.early != nil || node == nil || !p.Serving.ResolveDNS {
		return nil
	}
	own := addressesOf(node)
	var out []string
	for _, name := range r.X509.DNSNames {
		c := CanonicalDNS(name)
		if !slices.Contains(own.names, c) && p.extraNameAllowed(c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// extraNameAllowed reports whether a canonical DNS name is admitted by
// approver.kubeletServing.dnsSuffixes or dnsPatterns.
func (p *Policy) extraNameAllowed(c string) bool {
	for _, s := range p.Serving.DNSSuffixes {
		if strings.HasSuffix(c, "."+s) {
			return true
		}
	}
	for _, re := range p.Serving.DNSPatterns {
		if re.MatchString(c) {
			return true
		}
	}
	return false
}

func (a nodeAddresses) ipList() string {
	s := make([]string, len(a.ips))
	for i, ip := range a.ips {
		s[i] = ip.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func (a nodeAddresses) nameList() string { return "[" + strings.Join(a.names, " ") + "]" }
