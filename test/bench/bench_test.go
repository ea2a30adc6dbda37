package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain lets the test binary be the ideal loop's process too, as the
// benchmark binary is: the benchmark starts os.Executable() ideal-loop.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "ideal-loop" {
		main()
		return
	}
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark with small numbers so that it cannot
// rot: every contender, every workload, the memory run. It checks that the
// benchmark measures (every CSR issued and verified, numbers present), not
// how fast anything is.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six control planes")
	}
	o := &options{n: 20, rate: 10, repeat: 2, steady: 2 * time.Second, timeout: 2 * time.Minute, nodes: 10, noisy: 20, noisyRuns: 1, memoryCached: []int{0, 40}, out: filepath.Join(t.TempDir(), "results.jsonl")}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, line := range lines {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		seen[r.Contender] = true
		if r.Issued != r.N || r.Verified != r.N || r.TimedOut {
			t.Errorf("%s, %s: %d of %d issued, %d verified, timed out %v", r.Contender, r.Workload, r.Issued, r.N, r.Verified, r.TimedOut)
		}
		if r.PerSecond <= 0 || len(r.IssuedMS) != 3 || r.PeakRSSMiB <= 0 {
			t.Errorf("%s, %s: missing measurements %+v", r.Contender, r.Workload, r)
		}
		if r.Workload == noisyWorkload(o) && (len(r.Ratios) != 1 || r.Ratio <= 0) {
			t.Errorf("the noisy-node run measured no ratio: %+v", r)
		}
	}
	if want := len(contenders())*4 + len(o.memoryCached) + 1; len(lines) != want {
		t.Errorf("%d results, want %d (four workloads per contender, a memory run per count, the noisy-node run)", len(lines), want)
	}
	for _, c := range contenders() {
		if !seen[c.name] {
			t.Errorf("no result for %s", c.name)
		}
	}
	if !strings.Contains(out.String(), "| contender | workload |") {
		t.Errorf("no table in the output:\n%s", out.String())
	}
}
