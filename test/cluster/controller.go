package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

// ControllerBinary returns the kubelet-csr-controller binary to run: the
// KCC_BINARY environment variable (make test sets it to the one it built),
// or a fresh build into dir.
func ControllerBinary(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("KCC_BINARY"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("KCC_BINARY: %w", err)
		}
		return abs, nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	out := filepath.Join(dir, "kubelet-csr-controller")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/kubelet-csr-controller")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the controller: %w\n%s", err, b)
	}
	return out, nil
}

// ControllerBinaryForTest is ControllerBinary into the test's temporary
// directory; a binary that cannot be had fails the test.
func ControllerBinaryForTest(ctx context.Context, t testing.TB) string {
	t.Helper()
	bin, err := ControllerBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// ControllerConfig returns the configuration of an empty file with the
// cluster CA for every signer.
func (c *Cluster) ControllerConfig() *config.ControllerConfig {
	cfg := config.Default()
	cfg.CA = &config.CAFiles{CertFile: c.CACertFile, KeyFile: c.CAKeyFile}
	return cfg
}

// ShortLived sets every default signer's duration to d, without
// backdating, so that certificates live exactly d: kubelets rotate at 70-90%
// of that, several times a minute or two for the demo and the tests.
func ShortLived(cfg *config.ControllerConfig, d time.Duration) *config.ControllerConfig {
	cfg.Signers = nil
	for _, name := range config.DefaultSigners {
		cfg.Signers = append(cfg.Signers, config.Signer{
			Name:        name,
			Duration:    &metav1.Duration{Duration: d},
			MinDuration: &metav1.Duration{Duration: min(d, 10*time.Minute)},
			Backdate:    &metav1.Duration{},
		})
	}
	return cfg
}

// WriteConfig writes a configuration file.
func WriteConfig(cfg *config.ControllerConfig, path string) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// ControllerOptions describe one controller process.
type ControllerOptions struct {
	Binary     string
	ConfigFile string
	// Kubeconfig is the identity it runs as (default: the admin).
	Kubeconfig string
	// ExtraArgs are appended to its flags.
	ExtraArgs []string
	// Env is added to its environment (GOMEMLIMIT=..., say).
	Env []string
	// Name tells processes apart in logs and file names.
	Name string
	// SecureMetrics keeps the binary's default, /metrics over HTTPS for
	// authorized tokens (see Scrape); without it the tests read plain HTTP.
	SecureMetrics bool
}

// Controller is a running kubelet-csr-controller process.
type Controller struct {
	Cmd         *exec.Cmd
	MetricsAddr string
	// MetricsSecure says /metrics is HTTPS and needs a token.
	MetricsSecure bool
	ProbeAddr     string
	// PprofAddr serves /debug/pprof when ExtraArgs hold --profiling.
	PprofAddr string
	LogFile   string
	done      chan error
}

// StartController runs the real binary as a separate process, as a user
// would, with leader election in kube-system, and waits until it is alive
// (/healthz). Readiness, which a standby replica also reaches, is WaitReady.
func (c *Cluster) StartController(ctx context.Context, o ControllerOptions) (*Controller, error) {
	if o.Kubeconfig == "" {
		o.Kubeconfig = c.AdminKubeconfig
	}
	if o.Name == "" {
		o.Name = "controller"
	}
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probe, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &Controller{MetricsAddr: metrics, MetricsSecure: o.SecureMetrics, ProbeAddr: probe, PprofAddr: pprofAddr, done: make(chan error, 1)}
	args := []string{
		"--kubeconfig", o.Kubeconfig, "--config", o.ConfigFile,
		"--metrics-bind-address", metrics, "--health-probe-bind-address", probe, "--pprof-bind-address", pprofAddr,
		"--leader-election-namespace", "kube-system", "--zap-encoder", "json",
	}
	if !o.SecureMetrics {
		args = append(args, "--metrics-secure=false")
	}
	args = append(args, o.ExtraArgs...)
	p.Cmd = exec.Command(o.Binary, args...) //nolint:gosec // the test's own binary
	if len(o.Env) > 0 {
		p.Cmd.Env = append(os.Environ(), o.Env...)
	}
	// Its output goes to a file in the cluster's directory.
	p.LogFile = filepath.Join(c.Dir, o.Name+".log")
	f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child keeps its own descriptor
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	go func() { p.done <- p.Cmd.Wait() }()
	if err := p.waitFor(ctx, "/healthz", time.Minute); err != nil {
		_ = p.Kill()
		return nil, err
	}
	// The metrics server may listen later than the probes: secure serving
	// first makes its self-signed certificate (most of a second here).
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		conn, err := net.Dial("tcp", p.MetricsAddr)
		if err != nil {
			return false, nil //nolint:nilerr // not listening yet: keep polling
		}
		_ = conn.Close()
		return true, nil
	}); err != nil {
		_ = p.Kill()
		return nil, fmt.Errorf("waiting for the metrics server on %s: %w", p.MetricsAddr, err)
	}
	return p, nil
}

// WaitReady waits until /readyz answers 200.
func (p *Controller) WaitReady(ctx context.Context, timeout time.Duration) error {
	return p.waitFor(ctx, "/readyz", timeout)
}

func (p *Controller) waitFor(ctx context.Context, path string, timeout time.Duration) error {
	url := "http://" + p.ProbeAddr + path
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-p.done:
			p.done <- err
			return false, fmt.Errorf("the controller exited (log: %s): %w", p.LogFile, err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil //nolint:nilerr // not listening yet: keep polling
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", url, err)
	}
	return nil
}

// Metrics returns the process's /metrics text (served over plain HTTP).
func (p *Controller) Metrics(ctx context.Context) (string, error) {
	code, body, err := p.Scrape(ctx, "")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET /metrics: %d %s", code, body)
	}
	return body, err
}

// Scrape reads /metrics as Prometheus does, with token as the bearer
// token when not empty. Secure metrics are read over HTTPS without
// verifying the self-signed certificate, as the chart's ServiceMonitor does
// by default.
func (p *Controller) Scrape(ctx context.Context, token string) (int, string, error) {
	scheme, hc := "http", http.DefaultClient
	if p.MetricsSecure {
		scheme = "https"
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed, as in the chart
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+p.MetricsAddr+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 30s).
func (p *Controller) Stop() error {
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = p.Kill()
		return errors.New("the controller did not stop within 30s of SIGTERM; killed")
	}
}

// Kill stops the process at once (SIGKILL), as a node failure would.
func (p *Controller) Kill() error {
	if err := p.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	err := <-p.done
	p.done <- err
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
