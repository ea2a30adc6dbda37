package controllers

import (
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
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

// Failed is the number of Events the API server refused.
func (r *EventRecorder) Failed() float64 {
	var m dto.Metric
	if err := r.failed.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
