package controllers

import (
	"crypto/sha256"
	"sync"
)

// recentSet remembers, by SHA-256, the newest byte strings added to it, up
// to its capacity: a few hundred kilobytes, whatever it is fed.
//
// The approver adds the requests whose signature it verified, so that the
// signer does not verify again what the approver verified a moment before
// (an ECDSA verification costs more than everything else a CSR needs here);
// the Event recorder adds the Events it recorded, to record each once.
type recentSet struct {
	mu   sync.Mutex
	set  map[[sha256.Size]byte]struct{}
	ring [][sha256.Size]byte
	next int
}

func newRecentSet(capacity int) *recentSet {
	return &recentSet{set: make(map[[sha256.Size]byte]struct{}, capacity), ring: make([][sha256.Size]byte, capacity)}
}

// add remembers b and reports whether it was new.
func (v *recentSet) add(b []byte) bool {
	key := sha256.Sum256(b)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.set[key]; ok {
		return false
	}
	delete(v.set, v.ring[v.next])
	v.ring[v.next] = key
	v.next = (v.next + 1) % len(v.ring)
	v.set[key] = struct{}{}
	return true
}

// has reports whether b is remembered.
func (v *recentSet) has(b []byte) bool {
	key := sha256.Sum256(b)
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.set[key]
	return ok
}

// remove forgets b, so that adding it again reports it new.
func (v *recentSet) remove(b []byte) {
	key := sha256.Sum256(b)
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.set, key) // its ring slot stays; evicting it later is harmless
}
