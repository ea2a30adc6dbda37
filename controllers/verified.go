package controllers

import (
	"crypto/sha256"
	"sync"
)

// verifiedRequests remembers, by SHA-256, the certificate requests whose
// signature this process has verified, so that the signer does not verify
// again what the approver verified a moment before (an ECDSA verification
// costs more than everything else a CSR needs here). It holds the newest
// entries up to its capacity, a few hundred kilobytes.
type verifiedRequests struct {
	mu   sync.Mutex
	set  map[[sha256.Size]byte]struct{}
	ring [][sha256.Size]byte
	next int
}

func newVerifiedRequests(capacity int) *verifiedRequests {
	return &verifiedRequests{set: make(map[[sha256.Size]byte]struct{}, capacity), ring: make([][sha256.Size]byte, capacity)}
}

func (v *verifiedRequests) add(request []byte) {
	key := sha256.Sum256(request)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.set[key]; ok {
		return
	}
	old := v.ring[v.next]
	delete(v.set, old)
	v.ring[v.next] = key
	v.next = (v.next + 1) % len(v.ring)
	v.set[key] = struct{}{}
}

func (v *verifiedRequests) has(request []byte) bool {
	key := sha256.Sum256(request)
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.set[key]
	return ok
}
