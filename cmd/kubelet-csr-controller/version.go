package main

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// The build stamps these with -ldflags "-X main.version=... -X main.commit=...
// -X main.date=..." (hack/build-flags.sh, the one source of the flags for
// make, the Dockerfile and the image). date is the commit's time, never the
// build's, so that two builds of one commit are identical.
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

// versionString is the line --version prints:
//
//	kubelet-csr-controller v0.2.0 (commit 1a2b3c4, built 2026-12-01T10:00:00Z, go1.26.8 linux/amd64)
func versionString() string {
	return fmt.Sprintf("kubelet-csr-controller %s (commit %s, built %s, %s %s/%s)",
		version, shortCommit(commit), date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// shortCommit abbreviates a full commit hash as git does by default.
func shortCommit(c string) string {
	const n = 7
	if len(c) > n {
		return c[:n]
	}
	return c
}

// registerBuildInfo registers kubelet_csr_controller_build_info, 1 with the
// build's version, revision (the full commit) and Go version as labels, the
// usual way to join a running binary to its release in PromQL. Registering
// twice (tests call run several times in one process) is not an error.
func registerBuildInfo(reg prometheus.Registerer) error {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "kubelet_csr_controller",
		Name:      "build_info",
		Help:      "Always 1; the labels say which build is running.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version, commit, runtime.Version()).Set(1)
	if err := reg.Register(g); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return nil
		}
		return fmt.Errorf("register build_info: %w", err)
	}
	return nil
}
