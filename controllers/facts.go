package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// NodeReader reads Nodes for the approver's facts.
type NodeReader interface {
	// Node returns the Node, or nil (and no error) when there is none.
	Node(ctx context.Context, name string) (*corev1.Node, error)
	// Listing returns the Nodes whose addresses hold an AddressKey.
	Listing(ctx context.Context, key string) ([]*corev1.Node, error)
}

// Resolver looks up host names; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Sources are where an approver's facts come from: the controller's cache
// and API server, or the files the check command is given. A nil source
// answers "nothing" (no siblings, no other Nodes to confirm with).
type Sources struct {
	// Nodes reads the Nodes (the controller's cache).
	Nodes NodeReader
	// Live re-reads Nodes from the API server to confirm a decision that
	// rests on them: the cache may lag a kubelet's own status update by a
	// moment. Nil when Nodes is the authority already.
	Live NodeReader
	// Siblings lists the other CSRs of the request's signer, node and
	// requester, with how far the approver has got with each.
	Siblings func(ctx context.Context, r *approver.Request) ([]approver.Sibling, error)
	// Authorize answers the SubjectAccessReview the request needs.
	Authorize func(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, attrs *authorizationv1.ResourceAttributes) (*approver.Authorization, error)
	// Resolve looks DNS names up.
	Resolve func(ctx context.Context, names []string) map[string]approver.Lookup
}

// maxFactRounds bounds the loop in Decide: every kind of fact once, plus
// the confirmation and the facts a live Node can add.
const maxFactRounds = 10

// Decide decides v: it gathers what v's Plan names, then each fact a
// decision reports Missing (the costly ones, a SubjectAccessReview and DNS,
// only once every rule the cheap ones answer has passed), and confirms a
// decision that rests on Nodes against Live before it returns it. The
// controller and the check command both decide through it.
func Decide(ctx context.Context, s *Sources, v *approver.Review, now time.Time) (approver.Decision, *approver.Facts, error) {
	f := &approver.Facts{Now: now}
	if d := v.Decided(); d != nil {
		return *d, f, nil
	}
	plan := v.Plan()
	if err := s.gatherPlanned(ctx, v, plan, f); err != nil {
		return approver.Decision{}, f, err
	}
	confirmed := false
	for range maxFactRounds {
		d := v.Evaluate(f)
		var err error
		switch d.Missing {
		case approver.FactNone:
			if !d.ConfirmNode || confirmed || s.Live == nil {
				return d, f, nil
			}
			confirmed = true
			err = s.confirm(ctx, v, plan, f)
		case approver.FactAuthorization:
			if plan.Permission == nil || f.Authorization != nil || s.Authorize == nil {
				return d, f, fmt.Errorf("the approver asked for a SubjectAccessReview it did not plan (or had): %s", d.Message)
			}
			f.Authorization, err = s.Authorize(ctx, v.Request.CSR, plan.Permission)
		case approver.FactLookup:
			err = s.lookUp(ctx, v, f)
		case approver.FactClaimants:
			err = s.gatherClaimants(ctx, v, f, nil)
		default:
			return d, f, fmt.Errorf("the approver asked for fact %d, which nothing gathers", d.Missing)
		}
		if err != nil {
			return d, f, err
		}
	}
	return approver.Decision{}, f, fmt.Errorf("the approver still missed facts after %d rounds", maxFactRounds)
}

// gatherPlanned reads the facts the cache answers: siblings, the Node, the
// other Nodes listing the request's SANs.
func (s *Sources) gatherPlanned(ctx context.Context, v *approver.Review, plan approver.Plan, f *approver.Facts) error {
	if plan.Siblings && s.Siblings != nil {
		siblings, err := s.Siblings(ctx, v.Request)
		if err != nil {
			return err
		}
		f.Siblings = siblings
	}
	if plan.Node != "" {
		n, err := s.Nodes.Node(ctx, plan.Node)
		if err != nil {
			return err
		}
		f.Node = n
	}
	if plan.Claimants {
		return s.gatherClaimants(ctx, v, f, nil)
	}
	return nil
}

// lookUp resolves the names the Node does not list itself and that have
// not been resolved yet.
func (s *Sources) lookUp(ctx context.Context, v *approver.Review, f *approver.Facts) error {
	var names []string
	for _, n := range v.NamesToResolve(f.Node) {
		if _, done := f.Lookups[n]; !done {
			names = append(names, n)
		}
	}
	if len(names) == 0 || s.Resolve == nil {
		return errors.New("the approver asked for a DNS lookup, but no name is left to resolve")
	}
	if f.Lookups == nil {
		f.Lookups = map[string]approver.Lookup{}
	}
	for n, l := range s.Resolve(ctx, names) {
		f.Lookups[n] = l
	}
	return nil
}

// gatherClaimants finds the other Nodes listing the request's SANs (when
// not known yet) and the addresses its names resolved to (for lookups that
// have none yet). The Nodes come from Nodes' address index; with live set,
// each one found is read again from live (one that claimed an address a
// moment ago and is not in the cache yet is not looked for: that would
// mean listing every Node).
func (s *Sources) gatherClaimants(ctx context.Context, v *approver.Review, f *approver.Facts, live NodeReader) error {
	sans := f.Claimants == nil || live != nil
	var keys []string
	if sans {
		keys = append(keys, v.ClaimKeys()...)
	}
	var pending []string // lookups whose claimants are to be found
	for name, l := range f.Lookups {
		if k := v.LookupClaimKeys(l, f.Node); len(k) > 0 && (l.Claimants == nil || live != nil) {
			pending = append(pending, name)
			keys = append(keys, k...)
		}
	}
	others, err := s.nodesListing(ctx, keys, live)
	if err != nil {
		return err
	}
	if sans {
		f.Claimants = v.Claimants(others)
	}
	for _, name := range pending {
		l := f.Lookups[name]
		l.Claimants = v.LookupClaimants(l, f.Node, others)
		f.Lookups[name] = l
	}
	return nil
}

// nodesListing returns the Nodes listing any of keys, read again from live
// when it is set.
func (s *Sources) nodesListing(ctx context.Context, keys []string, live NodeReader) ([]*corev1.Node, error) {
	var found []*corev1.Node
	var names []string
	for _, key := range keys {
		nodes, err := s.Nodes.Listing(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("list Nodes with address %s: %w", key, err)
		}
		for _, n := range nodes {
			if !slices.Contains(names, n.Name) {
				names = append(names, n.Name)
				found = append(found, n)
			}
		}
	}
	if live == nil {
		return found, nil
	}
	fresh := make([]*corev1.Node, 0, len(names))
	for _, name := range names {
		n, err := live.Node(ctx, name)
		if err != nil {
			return nil, err
		}
		if n != nil {
			fresh = append(fresh, n)
		}
	}
	return fresh, nil
}

// confirm reads the Node and the other Nodes the cache named from Live,
// before a decision that rests on them becomes final. Lookups are kept; a
// name the live Node newly needs resolved is asked for by the next
// evaluation.
func (s *Sources) confirm(ctx context.Context, v *approver.Review, plan approver.Plan, f *approver.Facts) error {
	if plan.Node != "" {
		n, err := s.Live.Node(ctx, plan.Node)
		if err != nil {
			return err
		}
		f.Node = n
	}
	if f.Claimants == nil {
		return nil
	}
	return s.gatherClaimants(ctx, v, f, s.Live)
}

// Resolve looks names up, each with its own timeout, and tells timeouts and
// server failures (temporary) from names that do not exist. Each name is
// looked up as an absolute name (with a trailing dot): inside a pod, a
// relative name is first tried under the pod's search domains
// (n1.nodes.corp.<namespace>.svc.cluster.local with ndots:5), where a
// tenant's headless Service could answer with an address of its choosing.
func Resolve(ctx context.Context, resolver Resolver, timeout time.Duration, names []string) map[string]approver.Lookup {
	out := make(map[string]approver.Lookup, len(names))
	for _, name := range names {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := resolver.LookupNetIP(lctx, "ip", absolute(name))
		cancel()
		l := approver.Lookup{Addrs: addrs, Err: err}
		if err != nil {
			var dnsErr *net.DNSError
			l.Temporary = errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &dnsErr) && (dnsErr.IsTimeout || dnsErr.IsTemporary))
		}
		out[name] = l
	}
	return out
}

// absolute makes a canonical DNS name fully qualified.
func absolute(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// cachedNodes reads Nodes through a client.Reader: the manager's cache
// (with the address index) or the API server (Listing is then never used:
// Live only reads Nodes by name).
type cachedNodes struct{ reader client.Reader }

func (c cachedNodes) Node(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	switch err := c.reader.Get(ctx, client.ObjectKey{Name: name}, n); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get node %q: %w", name, err)
	}
	return n, nil
}

func (c cachedNodes) Listing(ctx context.Context, key string) ([]*corev1.Node, error) {
	return nodesListing(ctx, c.reader, key)
}

// StaticNodes serves Nodes from a list (the check command's files).
type StaticNodes []*corev1.Node

// Node returns the Node of that name in the list, or nil.
func (s StaticNodes) Node(_ context.Context, name string) (*corev1.Node, error) {
	if i := slices.IndexFunc(s, func(n *corev1.Node) bool { return n.Name == name }); i >= 0 {
		return s[i], nil
	}
	return nil, nil
}

// Listing returns the Nodes of the list whose addresses hold key.
func (s StaticNodes) Listing(_ context.Context, key string) ([]*corev1.Node, error) {
	var out []*corev1.Node
	for _, n := range s {
		if slices.Contains(approver.NodeAddressKeys(n), key) {
			out = append(out, n)
		}
	}
	return out, nil
}
