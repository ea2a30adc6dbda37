package controllers

import (
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// CacheOptions keep the informer cache lean: no managedFields on anything,
// of a Node only what decisions read (its name and addresses; Node objects
// carry large image lists and conditions), its taints and its kubelet port, of a decided CSR only what is
// still read. Reads return the cache's
// own objects rather than deep copies: the reconcilers only read them and
// copy before they write.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		DefaultTransform:             cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Transform: slimNode},
			&certificatesv1.CertificateSigningRequest{}: {Transform: slimCSR},
		},
	}
}

// slimCSR keeps of a decided CSR (denied, failed or issued) only what is
// still read: its name, identity and age, signer and requester (siblings),
// its conditions' types and times (state, cleaner) and its certificate
// (the cleaner's expiry rule; its subject names the node). The request, the
// requester's groups and extra, and condition messages go: in a cluster
// most CSRs are decided, and they are a third of a cached CSR. Pending and
// approved-but-unissued CSRs are kept whole for the approver and the signer.
func slimCSR(o any) (any, error) {
	csr, ok := o.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return o, nil
	}
	s := approver.StateOf(csr)
	if !s.Denied && !s.Failed && !s.Issued {
		csr.ManagedFields = nil
		return csr, nil
	}
	slim := &certificatesv1.CertificateSigningRequest{
		TypeMeta: csr.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              csr.Name,
			UID:               csr.UID,
			ResourceVersion:   csr.ResourceVersion,
			CreationTimestamp: csr.CreationTimestamp,
			DeletionTimestamp: csr.DeletionTimestamp,
		},
		Spec:   certificatesv1.CertificateSigningRequestSpec{SignerName: csr.Spec.SignerName, Username: csr.Spec.Username},
		Status: certificatesv1.CertificateSigningRequestStatus{Certificate: csr.Status.Certificate},
	}
	for _, c := range csr.Status.Conditions {
		slim.Status.Conditions = append(slim.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: c.Type, Status: c.Status, LastUpdateTime: c.LastUpdateTime, LastTransitionTime: c.LastTransitionTime,
		})
	}
	return slim, nil
}

func slimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              n.Name,
			UID:               n.UID,
			ResourceVersion:   n.ResourceVersion,
			CreationTimestamp: n.CreationTimestamp,
			DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec:   corev1.NodeSpec{Taints: n.Spec.Taints},                                                      // the start-up taint's
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses, DaemonEndpoints: n.Status.DaemonEndpoints}, // the audit's
	}, nil
}
