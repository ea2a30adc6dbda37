package controllers

import (
	"maps"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/types"
)

// writeGuard remembers the resourceVersion a CSR had when this process wrote
// to it. A reconcile that reads exactly that version again is reading a
// cache that has not caught up with the write yet: it must not decide or sign
// a second time. The write's own watch event will bring the CSR back.
type writeGuard struct {
	mu      sync.Mutex
	m       map[types.UID]guardEntry
	pruneAt int // the size at which expired entries are dropped next
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
