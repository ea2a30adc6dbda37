package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

// process is a running contender.
type process struct {
	pid  int
	stop func()
	// metrics is the address of the contender's metrics endpoint, and
	// pprof of its /debug/pprof with --profiling, when it has them.
	metrics, pprof string
}

// contender is one way of approving and signing kubelet CSRs.
type contender struct {
	name string
	// approvesServing is false for kube-controller-manager: the benchmark
	// approves serving CSRs for it and compares signing only.
	approvesServing bool
	// maxJoin, when set, is the most Nodes joining at once it is run with:
	// kube-controller-manager at its defaults issues 10 client CSRs a
	// second, so 5000 joining Nodes would take it a quarter of an hour.
	maxJoin int
	start   func(ctx context.Context, c *cluster.Cluster, o *options) (*process, error)
}

func contenders() []contender {
	return []contender{
		{name: "kubelet-csr-controller (defaults)", approvesServing: true, start: startThis},
		{name: "kubelet-csr-controller (authorizationCacheTTL: 0s)", approvesServing: true, start: startThisWith(func(c *config.ControllerConfig) {
			c.Approver.NodeClient.AuthorizationCacheTTL = metav1.Duration{}
		})},
		{name: "kube-controller-manager (defaults: QPS 20, burst 30)", maxJoin: 100, start: startKCM(nil)},
		{name: "kube-controller-manager (QPS 500, burst 1000)", start: startKCM([]string{"--kube-api-qps=500", "--kube-api-burst=1000"})},
		{name: "ideal loop (16 workers, no policy, no events)", approvesServing: true, start: startIdeal},
	}
}

// startThis runs the controller binary with an empty configuration file
// apart from the CA: its defaults are what users get.
func startThis(ctx context.Context, c *cluster.Cluster, o *options) (*process, error) {
	return startThisWith(nil)(ctx, c, o)
}

// startThisWith is startThis with the configuration edited.
func startThisWith(edit func(*config.ControllerConfig)) func(context.Context, *cluster.Cluster, *options) (*process, error) {
	return func(ctx context.Context, c *cluster.Cluster, o *options) (*process, error) {
		cfg := c.ControllerConfig()
		if edit != nil {
			edit(cfg)
		}
		return startController(ctx, c, o, cfg)
	}
}

func startController(ctx context.Context, c *cluster.Cluster, o *options, cfg *config.ControllerConfig) (*process, error) {
	cfgFile := filepath.Join(c.Dir, "config.yaml")
	if err := cluster.WriteConfig(cfg, cfgFile); err != nil {
		return nil, err
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{Binary: o.binary, ConfigFile: cfgFile, ExtraArgs: o.controllerArgs, Env: o.controllerEnv})
	if err != nil {
		return nil, err
	}
	if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
		_ = ctrl.Kill()
		return nil, err
	}
	return &process{pid: ctrl.Cmd.Process.Pid, stop: func() { _ = ctrl.Stop() }, metrics: ctrl.MetricsAddr, pprof: ctrl.PprofAddr}, nil
}

// startKCM runs kube-controller-manager v1.37.2 with only the CSR approving
// and signing controllers.
func startKCM(extra []string) func(context.Context, *cluster.Cluster, *options) (*process, error) {
	return func(ctx context.Context, c *cluster.Cluster, o *options) (*process, error) {
		args := append([]string{
			"--controllers=csrapproving,csrsigning",
			"--cluster-signing-cert-file=" + c.CACertFile,
			"--cluster-signing-key-file=" + c.CAKeyFile,
		}, extra...)
		return started(c.StartKubeControllerManager("kube-controller-manager", args...))
	}
}

// startIdeal runs this benchmark binary's ideal loop as its own process.
func startIdeal(_ context.Context, c *cluster.Cluster, _ *options) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return started(cluster.Spawn(self, []string{"ideal-loop", "--kubeconfig", c.AdminKubeconfig, "--ca-cert", c.CACertFile, "--ca-key", c.CAKeyFile}, filepath.Join(c.Dir, "ideal-loop.log")))
}

// started is a contender of a process Spawn started.
func started(p *cluster.Process, err error) (*process, error) {
	if err != nil {
		return nil, err
	}
	return &process{pid: p.Cmd.Process.Pid, stop: p.Stop}, nil
}
