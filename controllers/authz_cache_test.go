package controllers

import (
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
)

func TestAuthzCacheKeepsAnAnswerForItsTTLOnly(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
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
	} {
		if got := c.hit(tc.spec, tc.at); got != tc.want {
			t.Errorf("%s: hit() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
