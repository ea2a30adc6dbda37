package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
)

// authzCache remembers allowed SubjectAccessReview answers for a short
// time, so that a flood of bootstrap CSRs made with one bootstrap token (a
// cluster scaling up) costs one review, not one each. A denial is never
// remembered, and a revoked permission applies after at most the TTL, as
// with the API server's own webhook authorizer cache. The zero value
// remembers nothing.
type authzCache struct {
	mu      sync.Mutex
	expires map[[sha256.Size]byte]time.Time
	pruneAt int // the size at which expired entries are dropped next
}

// hit reports whether spec was allowed less than its TTL ago.
func (c *authzCache) hit(spec authorizationv1.SubjectAccessReviewSpec, now time.Time) bool {
	key, ok := authzKey(spec)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, found := c.expires[key]
	return found && now.Before(exp)
}

// store remembers that spec was allowed, for ttl.
func (c *authzCache) store(spec authorizationv1.SubjectAccessReviewSpec, now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	key, ok := authzKey(spec)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expires == nil {
		c.expires = map[[sha256.Size]byte]time.Time{}
	}
	pruneWhenGrown(c.expires, &c.pruneAt, func(exp time.Time) bool { return !now.Before(exp) })
	c.expires[key] = now.Add(ttl)
}

// authzKey identifies a review by everything it asks: user, UID, groups,
// extra and attributes (JSON encodes map keys sorted, so equal reviews give
// equal keys).
func authzKey(spec authorizationv1.SubjectAccessReviewSpec) ([sha256.Size]byte, bool) {
	b, err := json.Marshal(spec)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(b), true
}
