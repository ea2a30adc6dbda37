// Package controllers is the Kubernetes plumbing of kubelet-csr-controller:
// it watches CSRs and Nodes, gathers the facts the approver asks for, calls
// the pure approver and signer packages, writes /approval and /status,
// records Events and metrics, and deletes old CSRs.
package controllers

import (
	"fmt"
	"maps"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/go-logr/logr"
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
	ReasonSignerValidation    = "SignerValidationFailure"
	eventActionApprove        = "Approve"
	eventActionSign           = "Sign"
	failureReasonCA           = "CAUnavailable"
)

// appendCondition adds a True condition of the given type.
func appendCondition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType, reason, message string, now time.Time) {
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type:           typ,
		Status:         corev1.ConditionTrue,
		Reason:         reason,
		Message:        message,
		LastUpdateTime: metav1.NewTime(now),
	})
}

// writeGuard remembers the resourceVersion a CSR had when this process wrote
// to it. A reconcile that reads exactly that version again is reading a
// cache that has not caught up with the write yet: it must not decide or sign
// a second time. The write's own watch event will bring the CSR back.
type writeGuard struct {
	mu      sync.Mutex
	m       map[types.UID]guardEntry
	pruneAt int // the size at which expired entries are dropped next
}

// pruneWhenGrown drops the expired entries of m once it has reached *at
// entries, and sets *at to twice what is left (at least 1024): a burst of
// fresh entries then costs amortized O(1) per insert rather than a full scan
// each.
func pruneWhenGrown[K comparable, V any](m map[K]V, at *int, expired func(V) bool) {
	if len(m) < *at {
		return
	}
	maps.DeleteFunc(m, func(_ K, v V) bool { return expired(v) })
	*at = max(1024, 2*len(m))
}

type guardEntry struct {
	rv string
	at time.Time
}

// guardTTL bounds how long an entry is kept; a cache lags by milliseconds.
const guardTTL = time.Minute

func (g *writeGuard) wrote(csr *certificatesv1.CertificateSigningRequest, rvBeforeWrite string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[types.UID]guardEntry{}
	}
	pruneWhenGrown(g.m, &g.pruneAt, func(e guardEntry) bool { return now.Sub(e.at) > guardTTL })
	g.m[csr.UID] = guardEntry{rv: rvBeforeWrite, at: now}
}

// stale reports whether csr is the version this process already wrote from.
func (g *writeGuard) stale(csr *certificatesv1.CertificateSigningRequest) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.m[csr.UID]
	if !ok {
		return false
	}
	if e.rv == csr.ResourceVersion {
		return true
	}
	delete(g.m, csr.UID)
	return false
}

// inCSR names the CSR in an error a reconcile returns. controller-runtime
// logs it as "Reconciler error" with the logger controllerOptions builds,
// which does not name the request, and an error such as a connection lost
// mid-write does not name it either.
func inCSR(req reconcile.Request, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("CSR %s: %w", req.Name, err)
}

// controllerOptions are the options of the controllers: workers, a
// back-off, one logger built once (controller-runtime's default builds a
// logger with the request's name for every reconcile, which with zap costs a
// buffer per CSR; our log lines name the CSR themselves), and a priority
// queue whose depth queues, if not nil, can tell.
func controllerOptions(mgr ctrl.Manager, name string, workers int, queues *queueDepth) controller.Options {
	logger := mgr.GetLogger().WithValues("controller", name)
	o := controller.Options{
		MaxConcurrentReconciles: workers,
		RateLimiter:             rateLimiter(),
		LogConstructor:          func(*reconcile.Request) logr.Logger { return logger },
	}
	if queues != nil {
		o.NewQueue = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			q := priorityqueue.New(name, func(o *priorityqueue.Opts[reconcile.Request]) {
				o.Log = logger
				o.RateLimiter = rl
			})
			queues.add(q)
			return q
		}
	}
	return o
}

// queueDepth tells whether work is waiting in the approver's and the
// signer's queues: the Event recorder holds Events back while it is.
type queueDepth struct {
	mu     sync.Mutex
	queues []interface{ Len() int }
}

func (d *queueDepth) add(q interface{ Len() int }) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queues = append(d.queues, q)
}

// waiting reports whether any queue holds work ready for a worker.
func (d *queueDepth) waiting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queues {
		if q.Len() > 0 {
			return true
		}
	}
	return false
}

// rateLimiter backs off failed reconciles from 50ms up to 2 minutes, so that
// a CA that is fixed or an API server that comes back is used again soon.
func rateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](50*time.Millisecond, 2*time.Minute)
}
