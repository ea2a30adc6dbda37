package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a program a test runs beside the control plane, its output
// in a log file.
type Process struct {
	Cmd     *exec.Cmd
	LogFile string
	done    chan struct{}
}

// Spawn starts bin with args, its output in logFile.
func Spawn(bin string, args []string, logFile string) (*Process, error) {
	f, err := os.Create(logFile) //nolint:gosec // the test's own directory
	if err != nil {
		return nil, err
	}
	defer f.Close()                   // the child keeps its own descriptor
	cmd := exec.Command(bin, args...) //nolint:gosec // the test's own binaries
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Process{Cmd: cmd, LogFile: logFile, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Stop sends SIGTERM and waits (SIGKILL after 30 s).
func (p *Process) Stop() {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// StartKubeControllerManager runs kube-controller-manager (from
// KUBEBUILDER_ASSETS, where hack/build-tools.sh builds it) against the
// cluster as the admin, without leader election or a serving port, with
// args added. name tells its log file apart.
func (c *Cluster) StartKubeControllerManager(name string, args ...string) (*Process, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(assets, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kube-controller-manager is not built in KUBEBUILDER_ASSETS (hack/build-tools.sh kube-controller-manager): %w", err)
	}
	base := []string{"--kubeconfig=" + c.AdminKubeconfig, "--leader-elect=false", "--secure-port=0"}
	return Spawn(bin, append(base, args...), filepath.Join(c.Dir, name+".log"))
}
