package controllers

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// nodeIndex indexes kubelet CSRs by the node their CommonName names, so that
// a CSR's siblings and a Node's waiting CSRs are found in the cache without
// a list call.
const nodeIndex = "nodecsr.io/node"

// indexNodeName is the nodeIndex function. The index only groups CSRs; the
// approver reads each request strictly.
func indexNodeName(o client.Object) []string {
	csr, ok := o.(*certificatesv1.CertificateSigningRequest)
	if !ok || approver.KindOf(csr.Spec.SignerName) == approver.KindOther {
		return nil
	}
	if name := nodeNameOf(csr); name != "" {
		return []string{name}
	}
	return nil
}

// nodeNameOf returns the node a kubelet CSR's CommonName names, or "". It
// reads only the subject: it runs on every informer update. An issued CSR
// in the cache has no request any more (slimCSR); its certificate carries
// the same subject.
func nodeNameOf(csr *certificatesv1.CertificateSigningRequest) string {
	if len(csr.Spec.Request) == 0 {
		return approver.NodeNameFromCN(certificateCommonName(csr.Status.Certificate))
	}
	return approver.NodeNameFromCN(approver.CommonName(csr.Spec.Request))
}

// csrsOfNode lists the cached kubelet CSRs whose CommonName names node. The
// objects are the cache's own, not copies: callers only read them.
func csrsOfNode(ctx context.Context, c client.Reader, node string) ([]certificatesv1.CertificateSigningRequest, error) {
	var list certificatesv1.CertificateSigningRequestList
	if err := c.List(ctx, &list, client.MatchingFields{nodeIndex: node}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// addressIndex indexes Nodes by each of their addresses in canonical form
// (approver.AddressKey), so that the other Nodes listing a serving
// request's SANs are found in the cache without a list call.
const addressIndex = "nodecsr.io/address"

func indexNodeAddresses(o client.Object) []string {
	if n, ok := o.(*corev1.Node); ok {
		return approver.NodeAddressKeys(n)
	}
	return nil
}

// nodesListing lists the cached Nodes that list the address key. The
// objects are the cache's own: read only.
func nodesListing(ctx context.Context, c client.Reader, key string) ([]*corev1.Node, error) {
	var list corev1.NodeList
	if err := c.List(ctx, &list, client.MatchingFields{addressIndex: key}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make([]*corev1.Node, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// siblingsOf lists the cached CSRs with the same signer, node and requester
// as csr (approver.SiblingKey), csr included. Read only, as csrsOfNode.
func siblingsOf(ctx context.Context, c client.Reader, csr *certificatesv1.CertificateSigningRequest, node string) ([]certificatesv1.CertificateSigningRequest, error) {
	csrs, err := csrsOfNode(ctx, c, node)
	if err != nil {
		return nil, fmt.Errorf("list CSRs of node %q: %w", node, err)
	}
	key := approver.SiblingKey(csr, node)
	out := csrs[:0]
	for i := range csrs {
		if approver.SiblingKey(&csrs[i], node) == key {
			out = append(out, csrs[i])
		}
	}
	return out, nil
}

// IndexFields registers the cache indexes the controllers use under policy
// p. Call it once per manager, before the manager starts. Nodes are indexed
// (and so cached) only when serving CSRs are approved.
func IndexFields(ctx context.Context, indexer client.FieldIndexer, p *approver.Policy) error {
	if err := indexer.IndexField(ctx, &certificatesv1.CertificateSigningRequest{}, nodeIndex, indexNodeName); err != nil {
		return fmt.Errorf("index CSRs by node: %w", err)
	}
	if p.Serving.Enabled {
		if err := indexer.IndexField(ctx, &corev1.Node{}, addressIndex, indexNodeAddresses); err != nil {
			return fmt.Errorf("index Nodes by address: %w", err)
		}
	}
	return nil
}
