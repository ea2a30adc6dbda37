package controllers_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/rest"

	"github.com/nodecsr/kubelet-csr-controller/controllers"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestEventsWaitWhileCSRsDoAndAreRecordedOnce(t *testing.T) {
	h := start(t, func(o *controllers.Options) { signerOnly(o) })
	csr := h.create(asNode("ev-1"), named(pki.ClientRenewal("ev-1"), "ev-csr"))
	var busy atomic.Bool
	busy.Store(true)
	// While busy, one Event per hour: the first goes out, the rest wait.
	r := controllers.NewEventRecorderForTest(h.admin.EventsV1(), busy.Load, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Start(ctx) }()

	notes := []string{"one", "two", "three", "four"}
	for _, n := range notes {
		r.Eventf(csr, nil, corev1.EventTypeNormal, "Test", "Testing", "note %s", n)
	}
	r.Eventf(csr, nil, corev1.EventTypeNormal, "Test", "Testing", "note %s", "one") // a repeat
	count := func() int { return h.countEvents(csr.Name, "Test") }
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the first Event is recorded", func() bool { return count() == 1 })
	if got := count(); got != 1 {
		t.Fatalf("%d Events recorded while CSRs wait, want 1", got)
	}
	busy.Store(false)
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the others follow once nothing waits", func() bool { return count() == len(notes) })
	if err := cluster.WaitEvent(context.Background(), h.admin, csr.Name, "note four", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != len(notes) {
		t.Errorf("%d Events, want %d: a repeated Event must be recorded once", got, len(notes))
	}
}

// An Event the API server refuses is not remembered as recorded: when it
// happens again, it is sent again.
func TestARefusedEventIsRecordedWhenItHappensAgain(t *testing.T) {
	h := start(t, func(o *controllers.Options) { signerOnly(o) })
	ctx := context.Background()
	csr := h.create(asNode("ev-2"), named(pki.ClientRenewal("ev-2"), "ev-csr-2"))
	// The recorder acts as a user that may not create Events, yet.
	const user = "event-recorder-test"
	cfg := rest.CopyConfig(env.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	r := controllers.NewEventRecorderForTest(eventsclient.NewForConfigOrDie(cfg), func() bool { return false }, 0)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = r.Start(rctx) }()

	r.Eventf(csr, nil, corev1.EventTypeNormal, "Refused", "Testing", "the same note")
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the API server refuses the Event", func() bool { return r.Failed() == 1 })

	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: metav1.NamespaceDefault},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: metav1.NamespaceDefault},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}}}
	if _, err := h.admin.RbacV1().Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.RbacV1().RoleBindings(binding.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.admin.RbacV1().RoleBindings(binding.Namespace).Delete(ctx, binding.Name, metav1.DeleteOptions{})
		_ = h.admin.RbacV1().Roles(role.Namespace).Delete(ctx, role.Name, metav1.DeleteOptions{})
	})
	// The same Event again (until RBAC has caught up) is sent, and then
	// recorded once.
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the repeated Event is recorded", func() bool {
		r.Eventf(csr, nil, corev1.EventTypeNormal, "Refused", "Testing", "the same note")
		return h.countEvents(csr.Name, "Refused") == 1
	})
	// Repeated once more, then followed by a different note: Events go out
	// in order, so once the later note is recorded, the repeat would have
	// been too.
	r.Eventf(csr, nil, corev1.EventTypeNormal, "Refused", "Testing", "the same note")
	r.Eventf(csr, nil, corev1.EventTypeNormal, "Refused", "Testing", "a later note")
	cluster.Poll(context.Background(), t, 20*time.Millisecond, 30*time.Second, "the later note is recorded", func() bool { return h.countEvents(csr.Name, "Refused") >= 2 })
	if n := h.countEvents(csr.Name, "Refused"); n != 2 {
		t.Errorf("%d Events after a recorded one was repeated and another followed, want 2", n)
	}
}

// countEvents counts the Events about the CSR name with reason.
func (h *harness) countEvents(name, reason string) int {
	list, err := h.admin.EventsV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			n++
		}
	}
	return n
}
