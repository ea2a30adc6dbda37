package controllers

import (
	"fmt"
	"testing"
)

func TestVerifiedRequestsForgetsTheOldest(t *testing.T) {
	t.Parallel()
	v := newVerifiedRequests(3)
	for i := range 4 {
		v.add(fmt.Appendf(nil, "request %d", i))
	}
	v.add([]byte("request 3")) // again: no eviction
	for i, want := range []bool{false, true, true, true} {
		if got := v.has(fmt.Appendf(nil, "request %d", i)); got != want {
			t.Errorf("has(request %d) = %v, want %v", i, got, want)
		}
	}
	if v.has([]byte("never added")) {
		t.Error("has() of an unknown request")
	}
}
