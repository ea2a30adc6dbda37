package controllers

import (
	"time"

	"github.com/go-logr/logr"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
)

// NewEventRecorderForTest exposes the Event recorder to the envtest tests.
func NewEventRecorderForTest(client eventsclient.EventsV1Interface, busy func() bool, busyInterval time.Duration) *EventRecorder {
	r := newEventRecorder(client, "kubelet-csr-controller-test", busy, time.Now, logr.Discard(), NewMetrics())
	r.busyInterval = busyInterval
	return r
}

// EventRecorder is the recorder, for tests.
type EventRecorder = eventRecorder
