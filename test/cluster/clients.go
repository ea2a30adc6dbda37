package cluster

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// Clientset returns a clientset acting as user in groups (the admin
// impersonating them).
func (c *Cluster) Clientset(user string, groups ...string) kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.As(user, groups...))
}

// Node and Bootstrap are the two identities of a kubelet.
func (c *Cluster) Node(name string) kubernetes.Interface {
	return c.Clientset("system:node:"+name, NodesGroup)
}

// Bootstrap acts as bootstrap token id.
func (c *Cluster) Bootstrap(id string) kubernetes.Interface {
	return c.Clientset("system:bootstrap:"+id, BootstrappersGroup)
}

// AdminClientset is the system:masters clientset.
func (c *Cluster) AdminClientset() kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.Admin)
}

// CreateCSR files a CSR with the given identity: spec.username, UID, groups
// and extra are left for the API server to set from that identity, as they
// are for a real requester.
func CreateCSR(ctx context.Context, cs kubernetes.Interface, c pki.CSR) (*certificatesv1.CertificateSigningRequest, error) {
	obj, err := c.Object()
	if err != nil {
		return nil, err
	}
	obj.Spec.Username, obj.Spec.Groups, obj.Spec.UID, obj.Spec.Extra = "", nil, "", nil
	obj.CreationTimestamp = metav1.Time{}
	return cs.CertificatesV1().CertificateSigningRequests().Create(ctx, obj, metav1.CreateOptions{})
}

// RegisterNode creates a Node with the given addresses as its kubelet does
// (the node itself creates it, then sets its status). Addresses that parse
// as IPs are InternalIP, the others Hostname.
func (c *Cluster) RegisterNode(ctx context.Context, name string, addrs ...string) error {
	return c.RegisterTaintedNode(ctx, name, nil, addrs...)
}

// RegisterTaintedNode is RegisterNode for a kubelet started with
// --register-with-taints.
func (c *Cluster) RegisterTaintedNode(ctx context.Context, name string, taints []corev1.Taint, addrs ...string) error {
	cs := c.Node(name)
	nodes := cs.CoreV1().Nodes()
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	var want []corev1.NodeAddress
	for _, a := range addrs {
		typ := corev1.NodeInternalIP
		if net.ParseIP(a) == nil {
			typ = corev1.NodeHostName
		}
		want = append(want, corev1.NodeAddress{Type: typ, Address: a})
	}
	// A real kube-controller-manager (test/cutover) taints and annotates a
	// new Node at once, so the status write may meet a newer version.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n.Status.Addresses = want
		_, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			if latest, getErr := nodes.Get(ctx, name, metav1.GetOptions{}); getErr == nil {
				n = latest
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("set the addresses of node %s: %w", name, err)
	}
	return nil
}

// SetCondition adds a True condition to a CSR as an administrator (or a
// second approver, or another signer) would: Approved and Denied through
// /approval, Failed through /status.
func SetCondition(ctx context.Context, cs kubernetes.Interface, name string, typ certificatesv1.RequestConditionType, reason string) error {
	csrs := cs.CertificatesV1().CertificateSigningRequests()
	csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: typ, Status: corev1.ConditionTrue, Reason: reason, Message: "set by " + reason,
	})
	if typ == certificatesv1.CertificateFailed {
		_, err = csrs.UpdateStatus(ctx, csr, metav1.UpdateOptions{})
	} else {
		_, err = csrs.UpdateApproval(ctx, name, csr, metav1.UpdateOptions{})
	}
	return err
}

// WaitCSR polls a CSR until cond holds and returns it; on timeout the error
// describes the CSR as last seen.
func WaitCSR(ctx context.Context, cs kubernetes.Interface, name, what string, timeout time.Duration, cond func(*certificatesv1.CertificateSigningRequest) bool) (*certificatesv1.CertificateSigningRequest, error) {
	var last *certificatesv1.CertificateSigningRequest
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // not there yet, or a blip: keep polling
		}
		last = csr
		return cond(csr), nil
	})
	if err != nil {
		return last, fmt.Errorf("CSR %s: not %s within %s; last seen: %s", name, what, timeout, Describe(last))
	}
	return last, nil
}

// Describe summarises a CSR's conditions and certificate for messages.
func Describe(csr *certificatesv1.CertificateSigningRequest) string {
	if csr == nil {
		return "nothing"
	}
	var parts []string
	for _, c := range csr.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s/%s: %s", c.Type, c.Reason, c.Message))
	}
	return fmt.Sprintf("conditions %q, certificate %d bytes", parts, len(csr.Status.Certificate))
}

// Events returns the Events about an object as "Type Reason: note".
func Events(ctx context.Context, cs kubernetes.Interface, name string) ([]string, error) {
	list, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list.Items))
	for _, e := range list.Items {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return out, nil
}

// WaitEvent polls until an Event about the object contains want.
func WaitEvent(ctx context.Context, cs kubernetes.Interface, name, want string, timeout time.Duration) error {
	var last []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		events, err := Events(ctx, cs, name)
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		last = events
		for _, e := range events {
			if strings.Contains(e, want) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s: no Event containing %q within %s; events: %q", name, want, timeout, last)
	}
	return nil
}

// Flood files csrs with creators concurrent creators, as cs. A create that
// fails (the API server restarting, say) is retried until it succeeds or
// ctx ends; one whose first attempt did succeed is not filed twice.
func Flood(ctx context.Context, cs kubernetes.Interface, csrs []pki.CSR, creators int) error {
	return FloodNotifying(ctx, cs, csrs, creators, nil)
}

// FloodNotifying is Flood that calls created (from the creators'
// goroutines) once each CSR is filed.
func FloodNotifying(ctx context.Context, cs kubernetes.Interface, csrs []pki.CSR, creators int, created func(pki.CSR)) error {
	next := make(chan pki.CSR)
	errs := make(chan error, creators)
	for range creators {
		go func() {
			for c := range next {
				err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
					_, err := CreateCSR(ctx, cs, c)
					return err == nil || apierrors.IsAlreadyExists(err), nil
				})
				if err != nil {
					errs <- fmt.Errorf("file %s: %w", c.Name, err)
					for range next { //nolint:revive // drain
					}
					return
				}
				if created != nil {
					created(c)
				}
			}
			errs <- nil
		}()
	}
	go func() {
		defer close(next)
		for _, c := range csrs {
			select {
			case next <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	var first error
	for range creators {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Condition returns the True condition of that type on csr, or nil: the
// API server allows a condition type once, and only True ones count (as
// approver.StateOf reads them).
func Condition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if c := &csr.Status.Conditions[i]; c.Type == typ && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// Poll calls cond every interval until it holds and returns how long that
// took; after timeout it fails the test, naming what it waited for.
func Poll(ctx context.Context, t testing.TB, interval, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatalf("timed out after %s waiting until %s", timeout, what)
	}
	return time.Since(start)
}
