package controllers_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

var (
	startupTaint = corev1.Taint{Key: "node.example.com/serving-certificate", Effect: corev1.TaintEffectNoSchedule}
	// otherTaint is a provisioner's or an operator's: never touched.
	otherTaint = corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
)

func withStartupTaint(o *controllers.Options) { o.StartupTaint = &startupTaint }

// registerTaintedNode registers a Node with taints and waits until the
// cache holds them.
func (h *harness) registerTaintedNode(name string, taints []corev1.Taint, addrs ...string) {
	h.t.Helper()
	if err := env.RegisterTaintedNode(context.Background(), name, taints, addrs...); err != nil {
		h.t.Fatal(err)
	}
	cluster.Poll(context.Background(), h.t, 20*time.Millisecond, 30*time.Second, "the cache has Node "+name, func() bool {
		var n corev1.Node
		err := h.cache.Get(context.Background(), client.ObjectKey{Name: name}, &n)
		return err == nil && len(n.Status.Addresses) == len(addrs) && len(n.Spec.Taints) >= len(taints)
	})
}

// taintKeys lists a Node's taints as key=value:effect, but for those the
// API server adds itself (TaintNodesByCondition's not-ready taint).
func (h *harness) taintKeys(name string) []string {
	h.t.Helper()
	n, err := h.admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, t := range n.Spec.Taints {
		if !strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			out = append(out, t.Key+"="+t.Value+":"+string(t.Effect))
		}
	}
	slices.Sort(out)
	return out
}

func (h *harness) waitForTaints(name string, want ...string) {
	h.t.Helper()
	slices.Sort(want)
	cluster.Poll(context.Background(), h.t, 20*time.Millisecond, 30*time.Second, "Node "+name+" has taints "+strings.Join(want, ", "), func() bool {
		return slices.Equal(h.taintKeys(name), want)
	})
}

func TestTheStartupTaintIsLiftedOnceTheServingCertificateIsIssued(t *testing.T) {
	h := start(t, withStartupTaint)
	h.registerTaintedNode("taint-1", []corev1.Taint{otherTaint, startupTaint}, "10.20.0.1")
	h.registerTaintedNode("taint-untainted", nil, "10.20.0.2")

	c := h.create(asNode("taint-1"), named(pki.Serving("taint-1", nil, pki.IPs("10.20.0.1")), "taint-serving"))
	h.waitFor(c.Name, "issued", issued)
	h.waitForTaints("taint-1", "dedicated=gpu:NoSchedule")
	if err := cluster.WaitEvent(context.Background(), h.admin, "taint-1", "Normal StartupTaintRemoved", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// It is never added: a Node without it stays without it.
	u := h.create(asNode("taint-untainted"), named(pki.Serving("taint-untainted", nil, pki.IPs("10.20.0.2")), "untainted-serving"))
	h.waitFor(u.Name, "issued", issued)
	if got := h.taintKeys("taint-untainted"); len(got) != 0 {
		t.Errorf("a Node without the start-up taint got taints %v", got)
	}
}

func TestANodeWhoseServingCSRIsDeniedKeepsTheTaintAndIsWarned(t *testing.T) {
	h := start(t, withStartupTaint)
	h.registerNode("taint-victim", "10.20.1.2")
	h.registerTaintedNode("taint-liar", []corev1.Taint{startupTaint}, "10.20.1.1")
	c := h.create(asNode("taint-liar"), named(pki.Serving("taint-liar", nil, pki.IPs("10.20.1.1", "10.20.1.2")), "taint-denied"))
	h.waitFor(c.Name, "denied", condition(certificatesv1.CertificateDenied))
	if err := cluster.WaitEvent(context.Background(), h.admin, "taint-liar", "Warning ServingCertificateDenied", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := h.taintKeys("taint-liar"); !slices.Equal(got, []string{startupTaint.Key + "=:NoSchedule"}) {
		t.Errorf("a denied node's taints are %v, want the start-up taint kept", got)
	}
}

// A Node deleted and registered again under the same name (a replaced
// machine) is not untainted by the certificate its predecessor got.
func TestAnEarlierNodesCertificateDoesNotLiftANewNodesTaint(t *testing.T) {
	h := start(t, withStartupTaint)
	h.registerNode("taint-reborn", "10.20.2.1")
	c := h.create(asNode("taint-reborn"), named(pki.Serving("taint-reborn", nil, pki.IPs("10.20.2.1")), "taint-old-serving"))
	approvedAt := cluster.Condition(h.waitFor(c.Name, "issued", issued), certificatesv1.CertificateApproved).LastUpdateTime.Time
	if err := h.admin.CoreV1().Nodes().Delete(context.Background(), "taint-reborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Times have one-second resolution: the new Node must be created in a
	// later second than the approval to be told apart from it.
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 5*time.Second, "a second has passed since the approval", func() bool {
		return time.Now().Truncate(time.Second).After(approvedAt)
	})
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the old Node is gone from the cache", func() bool {
		return h.cache.Get(context.Background(), client.ObjectKey{Name: "taint-reborn"}, &corev1.Node{}) != nil
	})
	h.registerTaintedNode("taint-reborn", []corev1.Taint{startupTaint}, "10.20.2.1")
	// A marker Node registered after it is untainted by its own certificate;
	// by then the reborn Node has been looked at too.
	h.registerTaintedNode("taint-marker", []corev1.Taint{startupTaint}, "10.20.2.9")
	m := h.create(asNode("taint-marker"), named(pki.Serving("taint-marker", nil, pki.IPs("10.20.2.9")), "taint-marker-serving"))
	h.waitFor(m.Name, "issued", issued)
	h.waitForTaints("taint-marker")
	if got := h.taintKeys("taint-reborn"); len(got) != 1 {
		t.Errorf("the new Node's taints are %v: its predecessor's certificate lifted its start-up taint", got)
	}
	// Its own certificate lifts it.
	n := h.create(asNode("taint-reborn"), named(pki.Serving("taint-reborn", nil, pki.IPs("10.20.2.1")), "taint-new-serving"))
	h.waitFor(n.Name, "issued", issued)
	h.waitForTaints("taint-reborn")
}

// A taint added between the controller's read and its patch is not lost:
// the patch tests the taint list it read, fails, and is made again.
func TestATaintAddedMeanwhileIsKept(t *testing.T) {
	var raced atomic.Bool
	added := corev1.Taint{Key: "added-meanwhile", Effect: corev1.TaintEffectNoExecute}
	funcs := &interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if _, ok := obj.(*corev1.Node); ok && patch.Type() == types.JSONPatchType && raced.CompareAndSwap(false, true) {
			n, err := env.AdminClientset().CoreV1().Nodes().Get(ctx, obj.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			added.TimeAdded = &now
			// First, so that a patch by position would remove it instead.
			n.Spec.Taints = append([]corev1.Taint{added}, n.Spec.Taints...)
			if _, err := env.AdminClientset().CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		return c.Patch(ctx, obj, patch, opts...)
	}}
	h := startIntercepted(t, withStartupTaint, funcs)
	h.registerTaintedNode("taint-race", []corev1.Taint{startupTaint, otherTaint}, "10.20.3.1")
	c := h.create(asNode("taint-race"), named(pki.Serving("taint-race", nil, pki.IPs("10.20.3.1")), "taint-race-serving"))
	h.waitFor(c.Name, "issued", issued)
	h.waitForTaints("taint-race", "dedicated=gpu:NoSchedule", "added-meanwhile=:NoExecute")
	if !raced.Load() {
		t.Fatal("the race was never run")
	}
}
