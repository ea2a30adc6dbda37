package controllers

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/tools/reference"
)

// Event reasons. Decision reasons (approver.Reason*) go into the note.
const (
	EventApproved             = "Approved"
	EventDenied               = "Denied"
	EventWaiting              = "Waiting"
	EventLeftPending          = "LeftPending"
	EventWouldApprove         = "WouldApprove"
	EventWouldDeny            = "WouldDeny"
	EventIssued               = "Issued"
	EventSigningFailed        = "SigningFailed"
	EventSigningError         = "SigningError"
	EventCertificateShortened = "CertificateShortened"
	EventSuspiciousRequest    = "SuspiciousRequest"
	// EventServingCertificateAudit: a Node whose kubelet serves a
	// certificate the audit refuses.
	EventServingCertificateAudit = "ServingCertificateAudit"
	eventActionApprove           = "Approve"
	eventActionSign              = "Sign"
)

// Signer failure reasons: the Failed condition's, and the retried one of
// the signing_failures_total metric.
const (
	ReasonSignerValidation = "SignerValidationFailure"
	failureReasonCA        = "CAUnavailable"
)

// eventRecorder records the Events about CSRs (events.k8s.io/v1) without
// letting them compete with approvals and certificates for the API server.
//
// An Event costs the API server about as much as a CSR update, and a CSR
// gets two (decided, issued): written at once, they cut the throughput of a
// burst by a third. So Events wait in a queue: while approvals or
// certificates are waiting for a worker they go out at a trickle (one per
// busyInterval), and as soon as the work queues are empty, at full speed. At
// a steady rate the queues are empty nearly all the time and Events go out
// within milliseconds; after a burst they follow the certificates by
// seconds. An identical Event for the same object is recorded once, so a CSR
// retried every 30 seconds does not fill the queue.
type eventRecorder struct {
	client     eventsclient.EventsV1Interface
	controller string
	instance   string
	// busy reports work waiting for the controllers' workers; while it
	// does, one Event goes out per busyInterval.
	busy         func() bool
	busyInterval time.Duration
	now          func() time.Time
	log          logr.Logger

	mu    sync.Mutex
	queue []*eventsv1.Event
	wake  chan struct{}
	seen  *recentSet

	queued          prometheus.Gauge
	dropped, failed prometheus.Counter
}

// eventKey identifies an Event for seen: its object, type, reason and note.
// An Event dropped or refused is forgotten under it, so that it is recorded
// when it happens again.
func eventKey(uid types.UID, eventtype, reason, note string) []byte {
	return []byte(string(uid) + "\x00" + eventtype + "\x00" + reason + "\x00" + note)
}

// Bounds of the recorder.
const (
	maxQueuedEvents     = 10000                  // a few megabytes at most
	defaultBusyInterval = 100 * time.Millisecond // Events per second while busy: 10
	maxNote             = 1024                   // the API server's limit on an Event's note
)

func newEventRecorder(client eventsclient.EventsV1Interface, controller string, busy func() bool, now func() time.Time, log logr.Logger, m *Metrics) *eventRecorder {
	host, _ := os.Hostname()
	instance := controller + "-" + host
	if len(instance) > 128 {
		instance = instance[:128]
	}
	return &eventRecorder{
		client: client, controller: controller, instance: instance, busy: busy, busyInterval: defaultBusyInterval, now: now, log: log,
		wake: make(chan struct{}, 1), seen: newRecentSet(4096),
		queued: m.EventsQueued, dropped: m.EventsDropped, failed: m.EventsFailed,
	}
}

// Eventf queues an Event about regarding (related is not used here). It
// never blocks: with maxQueuedEvents waiting it drops the Event and counts
// it.
func (r *eventRecorder) Eventf(regarding runtime.Object, _ runtime.Object, eventtype, reason, action, note string, args ...interface{}) {
	ref, err := reference.GetReference(clientgoscheme.Scheme, regarding)
	if err != nil {
		r.log.Error(err, "cannot refer to the object of an Event", "reason", reason)
		return
	}
	msg := fmt.Sprintf(note, args...)
	if len(msg) > maxNote {
		msg = msg[:maxNote-3] + "..."
	}
	key := eventKey(ref.UID, eventtype, reason, msg)
	if !r.seen.add(key) {
		return // recorded before
	}
	now := r.now()
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault // where Events about cluster-scoped objects live
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ns},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                msg,
		Type:                eventtype,
	}
	r.mu.Lock()
	if len(r.queue) >= maxQueuedEvents {
		r.mu.Unlock()
		r.seen.remove(key)
		r.dropped.Inc()
		return
	}
	r.queue = append(r.queue, ev)
	r.queued.Set(float64(len(r.queue)))
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start sends queued Events until ctx ends. It runs on every replica; only
// the leader's reconcilers queue Events.
func (r *eventRecorder) Start(ctx context.Context) error {
	var lastSent time.Time
	for {
		ev, ok := r.next()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-r.wake:
				continue
			}
		}
		// While approvals or certificates wait, trickle.
		for r.busy() {
			wait := r.busyInterval - r.now().Sub(lastSent)
			if wait <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(wait, 10*time.Millisecond)):
			}
		}
		r.pop()
		if _, err := r.client.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // stopping: Events are best effort
			}
			r.seen.remove(eventKey(ev.Regarding.UID, ev.Type, ev.Reason, ev.Note))
			r.failed.Inc()
			r.log.V(1).Info("Event not recorded", "regarding", ev.Regarding.Name, "reason", ev.Reason, "error", err.Error())
		}
		lastSent = r.now()
	}
}

// NeedLeaderElection is false: the sender is idle unless reconcilers, which
// run on the leader only, queue Events.
func (r *eventRecorder) NeedLeaderElection() bool { return false }

func (r *eventRecorder) next() (*eventsv1.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return nil, false
	}
	return r.queue[0], true
}

func (r *eventRecorder) pop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue[0] = nil
	r.queue = r.queue[1:]
	if len(r.queue) == 0 {
		r.queue = nil // let the backing array go
	}
	r.queued.Set(float64(len(r.queue)))
}
