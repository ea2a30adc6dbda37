package main

import (
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

func TestSoftMemoryLimitIsNinetyPercentOfTheContainers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    int64 // 0: nothing is set
		wantErr string
	}{
		{name: "a limit in bytes, as a resourceFieldRef writes it, gives 90% of it", env: map[string]string{memoryLimitEnv: "268435456"}, want: 241591910},
		{name: "a quantity is read too", env: map[string]string{memoryLimitEnv: "1Gi"}, want: 966367641},
		{name: "GOMEMLIMIT set by the operator wins", env: map[string]string{memoryLimitEnv: "268435456", "GOMEMLIMIT": "200MiB"}},
		{name: "no limit sets nothing", env: map[string]string{}},
		{name: "a limit that is not a number is an error", env: map[string]string{memoryLimitEnv: "lots"}, wantErr: memoryLimitEnv + `="lots"`},
		{name: "a limit of zero is an error", env: map[string]string{memoryLimitEnv: "0"}, wantErr: "is not a memory limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got int64
			err := applyMemoryLimit(logr.Discard(), func(k string) string { return tt.env[k] }, func(n int64) int64 { got = n; return 0 })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("set %d (error %v), want %d", got, err, tt.want)
			}
		})
	}
}
