package approver

import (
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
)

// State summarises a CSR's conditions as `kubectl get csr` shows them.
type State struct {
	Approved bool
	Denied   bool
	Failed   bool
	Issued   bool // status.certificate is set
}

// Pending reports a CSR that nobody has approved or denied yet.
func (s State) Pending() bool { return !s.Approved && !s.Denied }

// StateOf reads the state of csr. Only conditions with status True count, as
// in Kubernetes.
func StateOf(csr *certificatesv1.CertificateSigningRequest) State {
	s := State{Issued: len(csr.Status.Certificate) > 0}
	for _, c := range csr.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case certificatesv1.CertificateApproved:
			s.Approved = true
		case certificatesv1.CertificateDenied:
			s.Denied = true
		case certificatesv1.CertificateFailed:
			s.Failed = true
		}
	}
	return s
}

// Progress is how far the approver of this process has got with a pending
// CSR: the flood rules tell a request nobody has looked at yet from one
// that waits for facts.
type Progress int

const (
	// NotLookedAt means this process has not evaluated the CSR yet.
	NotLookedAt Progress = iota
	// LookedAt means evaluated, and decided or left pending on purpose (dry run,
	// leavePending); it waits for nothing.
	LookedAt
	// WaitingForFacts means evaluated, and waiting for its Node, its addresses, a
	// DNS answer or the authorizer. A flood of these is what
	// maxPendingPerNode caps.
	WaitingForFacts
)

// Sibling is another CSR for the same signer, node and requester, as far as
// the flood rules need to know it.
type Sibling struct {
	Name     string
	Created  time.Time
	State    State
	Progress Progress
}

// SiblingOf summarises csr for the flood rules; the caller adds Progress.
func SiblingOf(csr *certificatesv1.CertificateSigningRequest) Sibling {
	return Sibling{Name: csr.Name, Created: csr.CreationTimestamp.Time, State: StateOf(csr)}
}

// SiblingKey groups CSRs that compete for the same certificate: one signer,
// one node, one requester. It is "" for CSRs the flood rules do not apply to.
func SiblingKey(csr *certificatesv1.CertificateSigningRequest, nodeName string) string {
	if nodeName == "" || KindOf(csr.Spec.SignerName) == KindOther {
		return ""
	}
	return csr.Spec.SignerName + "|" + nodeName + "|" + csr.Spec.Username
}

// Newer orders siblings in the order they are decided: by creation time,
// then by name, so that the order is total. (Creation timestamps have
// one-second resolution: of two requests of the same second, the name
// decides, which only fixes an order, not which came first.)
func Newer(a, b Sibling) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Name > b.Name
}
