package controllers

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Per-node Event limits: a node may have nodeEventBurst Events recorded
// about its CSRs at once, then one per nodeEventEvery. A kubelet files a
// handful of CSRs per rotation and never comes near them.
const (
	nodeEventBurst = 10
	nodeEventEvery = 6 * time.Second
	// maxLimitedNodes bounds the limiter's memory. Beyond it, nodes whose
	// allowance is full are forgotten; if none is, an Event is let through
	// unlimited rather than one node's allowance taken from another.
	maxLimitedNodes = 10000
)

// nodeEventLimiter bounds the Events the approver records about one node's
// CSRs. A flood of requests from one node (each denied TooManyPending, say)
// then costs the shared API server one write per request, the denial, and
// not two. The decisions, their conditions, metrics and log lines are
// untouched: `kubectl describe csr` still shows why each was denied.
type nodeEventLimiter struct {
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	// limited counts the Events not recorded.
	limited func()
}

func newNodeEventLimiter(limited func()) *nodeEventLimiter {
	return &nodeEventLimiter{buckets: map[string]*rate.Limiter{}, limited: limited}
}

// allow reports whether an Event about a CSR of node (or, for a CSR that
// names no node, of its requester) may be recorded at now.
func (l *nodeEventLimiter) allow(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[node]
	if !ok {
		if len(l.buckets) >= maxLimitedNodes {
			for n, b := range l.buckets {
				if b.TokensAt(now) >= nodeEventBurst {
					delete(l.buckets, n)
				}
			}
			if len(l.buckets) >= maxLimitedNodes {
				return true
			}
		}
		b = rate.NewLimiter(rate.Every(nodeEventEvery), nodeEventBurst)
		l.buckets[node] = b
	}
	if b.AllowN(now, 1) {
		return true
	}
	l.limited()
	return false
}
