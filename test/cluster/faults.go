package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// RestartAPIServer kills kube-apiserver (SIGKILL, a crash: a graceful
// stop drains requests for seconds first), keeps it down for down, and
// starts it again with the same flags, certificates and etcd. It returns
// once /readyz answers.
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	pid, args, err := c.apiServerProcess()
	if err != nil {
		return err
	}
	if c.restarted != nil && c.restarted.Process.Pid == pid {
		if err := c.restarted.Process.Kill(); err != nil {
			return err
		}
		_ = c.restarted.Wait()
	} else {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("stop kube-apiserver: %w", err)
		}
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			return syscall.Kill(pid, 0) != nil, nil
		}); err != nil {
			return fmt.Errorf("kube-apiserver did not stop: %w", err)
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down): // the outage itself
	}
	cmd := exec.Command(args[0], args[1:]...) //nolint:gosec // the same binary and flags
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	c.restarted = cmd
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(b) == "ok", nil
	})
}

// apiServerProcess finds this cluster's kube-apiserver by its certificate
// directory and returns its PID and command line.
func (c *Cluster) apiServerProcess() (int, []string, error) {
	certDir := filepath.Join(c.Dir, "apiserver")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(raw, []byte(certDir)) {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" {
			return pid, args, nil
		}
	}
	return 0, nil, errors.New("kube-apiserver of this cluster not found in /proc")
}
