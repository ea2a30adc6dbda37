package controllers_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	count := func() int {
		list, err := h.admin.EventsV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range list.Items {
			if e.Regarding.Name == csr.Name && e.Reason == "Test" {
				n++
			}
		}
		return n
	}
	waitUntil(t, "the first Event is recorded", func() bool { return count() == 1 })
	if got := count(); got != 1 {
		t.Fatalf("%d Events recorded while CSRs wait, want 1", got)
	}
	busy.Store(false)
	waitUntil(t, "the others follow once nothing waits", func() bool { return count() == len(notes) })
	if err := cluster.WaitEvent(context.Background(), h.admin, csr.Name, "note four", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != len(notes) {
		t.Errorf("%d Events, want %d: a repeated Event must be recorded once", got, len(notes))
	}
}
