package main

import (
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// stamp sets the build variables as -ldflags would, for one test.
func stamp(t *testing.T, v, c, d string) {
	t.Helper()
	oldV, oldC, oldD := version, commit, date
	version, commit, date = v, c, d
	t.Cleanup(func() { version, commit, date = oldV, oldC, oldD })
}

func TestVersionStringNamesVersionCommitDateAndGo(t *testing.T) {
	for name, tc := range map[string]struct {
		version, commit, date string
		want                  string
	}{
		"a release build shows the short commit": {
			"v0.2.0", "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "2026-12-01T10:00:00Z",
			"kubelet-csr-controller v0.2.0 (commit 1a2b3c4, built 2026-12-01T10:00:00Z, ",
		},
		"an unstamped build says so": {
			"dev", "unknown", "unknown",
			"kubelet-csr-controller dev (commit unknown, built unknown, ",
		},
	} {
		t.Run(name, func(t *testing.T) {
			stamp(t, tc.version, tc.commit, tc.date)
			want := tc.want + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
			if diff := cmp.Diff(want, versionString()); diff != "" {
				t.Errorf("versionString() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildInfoIsOneWithTheBuildsLabelsAndMayBeRegisteredTwice(t *testing.T) {
	stamp(t, "v0.2.0", "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "2026-12-01T10:00:00Z")
	reg := prometheus.NewRegistry()
	for range 2 {
		if err := registerBuildInfo(reg); err != nil {
			t.Fatalf("registerBuildInfo: %v", err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type sample struct {
		Name   string
		Labels map[string]string
		Value  float64
	}
	var got []sample
	for _, f := range families {
		for _, m := range f.GetMetric() {
			s := sample{Name: f.GetName(), Labels: map[string]string{}, Value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			got = append(got, s)
		}
	}
	want := []sample{{
		Name: "kubelet_csr_controller_build_info",
		Labels: map[string]string{
			"version":   "v0.2.0",
			"revision":  "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
			"goversion": runtime.Version(),
		},
		Value: 1,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gathered metrics (-want +got):\n%s", diff)
	}
}
