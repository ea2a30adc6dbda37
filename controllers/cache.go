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
// its conditions' types and times (state, cleaner) and a summary of its
// certificate (summarizeCertificate: its expiry for the cleaner and the
// start-up taint, its subject for the node index). The request, the
// requester's groups and extra, condition reasons and messages and the
// certificate's PEM go: in a cluster most CSRs are decided, and they were
// two thirds of a cached CSR. The strings every CSR repeats (its signer,
// its conditions' types and statuses) are shared. Pending and
// approved-but-unissued CSRs are kept whole for the approver and the
// signer.
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
		Spec: certificatesv1.CertificateSigningRequestSpec{SignerName: shared(csr.Spec.SignerName, knownSigners), Username: csr.Spec.Username},
	}
	if s.Issued {
		slim.Status.Certificate = csr.Status.Certificate
		if summary, ok := summarizeCertificate(csr.Status.Certificate); ok {
			slim.Status.Certificate = summary
		}
	}
	for _, c := range csr.Status.Conditions {
		slim.Status.Conditions = append(slim.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: shared(c.Type, knownConditionTypes), Status: shared(c.Status, knownConditionStatuses),
			LastUpdateTime: c.LastUpdateTime, LastTransitionTime: c.LastTransitionTime,
		})
	}
	return slim, nil
}

var (
	knownSigners = []string{
		certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName,
		certificatesv1.KubeAPIServerClientSignerName,
	}
	knownConditionTypes    = []certificatesv1.RequestConditionType{certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed}
	knownConditionStatuses = []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}
)

// shared returns the constant equal to s, when there is one, so that the
// cache holds one copy of it rather than one per object.
func shared[S ~string](s S, known []S) S {
	for _, k := range known {
		if s == k {
			return k
		}
	}
	return s
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
