package controllers

import (
	"fmt"
	"testing"
)

func TestRecentSetForgetsTheOldest(t *testing.T) {
	t.Parallel()
	v := newRecentSet(3)
	for i := range 4 {
		v.add(fmt.Appendf(nil, "request %d", i))
	}
	if v.add([]byte("request 3")) { // again: not new, no eviction
		t.Error("add() of a remembered entry reported it new")
	}
	for i, want := range []bool{false, true, true, true} {
		if got := v.has(fmt.Appendf(nil, "request %d", i)); got != want {
			t.Errorf("has(request %d) = %v, want %v", i, got, want)
		}
	}
	if v.has([]byte("never added")) {
		t.Error("has() of an unknown request")
	}
}
