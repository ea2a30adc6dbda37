package controllers

import (
	"fmt"
	"testing"
	"time"
)

func TestNodeEventLimiterBoundsEachNodeOnItsOwn(t *testing.T) {
	t.Parallel()
	limited := 0
	l := newNodeEventLimiter(func() { limited++ })
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	allowed := func(node string, at time.Time, n int) int {
		got := 0
		for range n {
			if l.allow(node, at) {
				got++
			}
		}
		return got
	}
	if got := allowed("noisy", now, 500); got != nodeEventBurst {
		t.Errorf("a flood of 500 at once: %d Events allowed, want %d", got, nodeEventBurst)
	}
	if limited != 500-nodeEventBurst {
		t.Errorf("limited counted %d, want %d", limited, 500-nodeEventBurst)
	}
	if got := allowed("quiet", now, 3); got != 3 {
		t.Errorf("another node, in the same instant: %d of 3 allowed", got)
	}
	if got := allowed("noisy", now.Add(nodeEventEvery), 5); got != 1 {
		t.Errorf("the noisy node %s later: %d allowed, want 1", nodeEventEvery, got)
	}
	if got := allowed("noisy", now.Add(time.Hour), 20); got != nodeEventBurst {
		t.Errorf("an hour later the allowance is whole again: %d allowed, want %d", got, nodeEventBurst)
	}
}

func TestNodeEventLimiterForgetsIdleNodesAndNeverGrowsPastItsBound(t *testing.T) {
	t.Parallel()
	l := newNodeEventLimiter(func() {})
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for i := range maxLimitedNodes {
		l.allow(fmt.Sprintf("n%d", i), now)
	}
	// Every node has used one Event: none is idle, so a new node is let
	// through untracked.
	if !l.allow("new", now) || len(l.buckets) != maxLimitedNodes {
		t.Fatalf("a node beyond the bound: tracked %d", len(l.buckets))
	}
	// Once their allowances are whole again they are forgotten.
	later := now.Add(nodeEventEvery)
	if !l.allow("new", later) || len(l.buckets) != 1 {
		t.Errorf("after the idle nodes' allowances refilled, %d nodes are tracked, want 1", len(l.buckets))
	}
}
