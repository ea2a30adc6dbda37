package controllers

import (
	"context"

	certificatesv1 "k8s.io/api/certificates/v1"
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

// IndexFields registers the cache indexes the controllers use. Call it once
// per manager, before the manager starts.
func IndexFields(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &certificatesv1.CertificateSigningRequest{}, nodeIndex, indexNodeName)
}
