package main

import (
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
)

// memoryLimitEnv holds the container's memory limit, in bytes or as a
// Kubernetes quantity; the chart sets it from limits.memory with a
// resourceFieldRef.
const memoryLimitEnv = "KUBELET_CSR_CONTROLLER_MEMORY_LIMIT"

// memoryLimitShare of the container's limit is the Go runtime's soft limit:
// the heap is not all a process holds (stacks, the runtime's own structures,
// memory not yet returned to the kernel), and a soft limit at 100% lets the
// kernel kill the process before the collector works hard.
const memoryLimitShare = 0.9

// softMemoryLimit returns the soft memory limit to set from the environment:
// 90% of memoryLimitEnv, or nothing when GOMEMLIMIT is set (the runtime has
// read it: an operator's choice wins) or no limit is known.
func softMemoryLimit(getenv func(string) string) (int64, bool, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, false, nil
	}
	v := strings.TrimSpace(getenv(memoryLimitEnv))
	if v == "" {
		return 0, false, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 {
		return 0, false, fmt.Errorf("%s=%q is not a memory limit in bytes", memoryLimitEnv, v)
	}
	return int64(float64(q.Value()) * memoryLimitShare), true, nil
}

// applyMemoryLimit sets the soft memory limit softMemoryLimit finds with set
// (debug.SetMemoryLimit) and logs it.
func applyMemoryLimit(logger logr.Logger, getenv func(string) string, set func(int64) int64) error {
	limit, ok, err := softMemoryLimit(getenv)
	if err != nil || !ok {
		return err
	}
	set(limit)
	logger.Info("soft memory limit set", "bytes", limit, "containerLimit", getenv(memoryLimitEnv), "share", memoryLimitShare)
	return nil
}
