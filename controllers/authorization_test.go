package controllers

import (
	"fmt"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"

	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

func TestAuthzCacheKeepsAnAnswerForItsTTLOnly(t *testing.T) {
	t.Parallel()
	now := pki.Now()
	spec := func(user, sub string) authorizationv1.SubjectAccessReviewSpec {
		return authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:bootstrappers"},
			Extra:              map[string]authorizationv1.ExtraValue{"b": {"2"}, "a": {"1"}},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Subresource: sub}}
	}
	var c authzCache
	if c.hit(spec("u", "nodeclient"), now) {
		t.Fatal("an empty cache hit")
	}
	c.store(spec("u", "nodeclient"), now, 0)
	if c.hit(spec("u", "nodeclient"), now) {
		t.Fatal("a TTL of 0 must remember nothing")
	}
	c.store(spec("u", "nodeclient"), now, 5*time.Second)
	for _, tc := range []struct {
		name string
		spec authorizationv1.SubjectAccessReviewSpec
		at   time.Time
		want bool
	}{
		{"the same review within the TTL hits", spec("u", "nodeclient"), now.Add(4 * time.Second), true},
		{"the same review at the TTL misses", spec("u", "nodeclient"), now.Add(5 * time.Second), false},
		{"another user misses", spec("v", "nodeclient"), now, false},
		{"another permission misses", spec("u", "selfnodeclient"), now, false},
		{"another UID misses", with(spec("u", "nodeclient"), func(s *authorizationv1.SubjectAccessReviewSpec) { s.UID = "other" }), now, false},
		{"other groups miss", with(spec("u", "nodeclient"), func(s *authorizationv1.SubjectAccessReviewSpec) { s.Groups = []string{"system:nodes"} }), now, false},
		{"other extra misses", with(spec("u", "nodeclient"), func(s *authorizationv1.SubjectAccessReviewSpec) { s.Extra["a"] = []string{"9"} }), now, false},
		{"extra in another order hits", with(spec("u", "nodeclient"), func(s *authorizationv1.SubjectAccessReviewSpec) {
			s.Extra = map[string]authorizationv1.ExtraValue{"a": {"1"}, "b": {"2"}}
		}), now, true},
	} {
		if got := c.hit(tc.spec, tc.at); got != tc.want {
			t.Errorf("%s: hit() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func with(s authorizationv1.SubjectAccessReviewSpec, edit func(*authorizationv1.SubjectAccessReviewSpec)) authorizationv1.SubjectAccessReviewSpec {
	edit(&s)
	return s
}

// A burst of fresh entries is not rescanned at every store, and expired
// ones are dropped once the cache has grown.
func TestAuthzCachePrunesExpiredEntriesAmortized(t *testing.T) {
	t.Parallel()
	now := pki.Now()
	var c authzCache
	spec := func(i int) authorizationv1.SubjectAccessReviewSpec {
		return authorizationv1.SubjectAccessReviewSpec{User: fmt.Sprint("u", i)}
	}
	for i := range 5000 {
		c.store(spec(i), now, time.Second)
	}
	if len(c.expires) != 5000 {
		t.Fatalf("%d entries, want 5000: live entries are kept", len(c.expires))
	}
	if c.pruneAt < 5000 {
		t.Errorf("next prune at %d entries; it must not rescan at every store", c.pruneAt)
	}
	later := now.Add(time.Minute)
	for i := range c.pruneAt - len(c.expires) + 1 {
		c.store(spec(10000+i), later, time.Second)
	}
	if len(c.expires) > 5000 {
		t.Errorf("%d entries after the expired ones could go", len(c.expires))
	}
}
