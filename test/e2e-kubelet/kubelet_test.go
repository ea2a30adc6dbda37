//go:build e2ekubelet

package e2ekubelet

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

// kubeletDir returns the directory of the kubelet and fakecri binaries:
// KCC_KUBELET_DIR, as `make e2e-kubelet` sets it from hack/build-tools.sh
// (`make compat` points it at an older kubelet).
func kubeletDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KCC_KUBELET_DIR")
	if dir == "" {
		t.Fatal("KCC_KUBELET_DIR is not set: run `make e2e-kubelet`, or export KCC_KUBELET_DIR=$(hack/build-tools.sh kubelet fakecri)")
	}
	for _, bin := range []string{"kubelet", "fakecri"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			t.Fatalf("KCC_KUBELET_DIR=%s has no %s (hack/build-tools.sh kubelet fakecri builds both): %v", dir, bin, err)
		}
	}
	return dir
}

// requireHost fails the test unless it runs as root (the kubelet mounts its
// root directory, writes under /var/lib/kubelet and /var/log and reads every
// cgroup) and the host has a non-loopback IPv4 address (the kubelet refuses
// a loopback node IP, and the serving certificate names the node's IP). It
// returns that address: KCC_NODE_IP, or the first one found.
func requireHost(t *testing.T) net.IP {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("make e2e-kubelet runs a real kubelet, which needs root (it mounts its root directory and writes under /var/lib/kubelet); this test runs as uid %d", os.Geteuid())
	}
	if s := os.Getenv("KCC_NODE_IP"); s != "" {
		ip := net.ParseIP(s).To4()
		if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
			t.Fatalf("KCC_NODE_IP=%s is not a non-loopback IPv4 address; the kubelet refuses a loopback node IP", s)
		}
		return ip
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4()
		}
	}
	t.Fatalf("make e2e-kubelet needs a non-loopback IPv4 address on this host (the kubelet refuses a loopback node IP); found only %v. Set KCC_NODE_IP to one", addrs)
	return nil
}

// kubeletOptions describe one real kubelet.
type kubeletOptions struct {
	name                    string
	nodeIP                  net.IP
	port, healthzPort       int
	bootstrapKubeconfig, ca string
	binDir                  string
}

// realKubelet is a kubelet process and the in-memory runtime it talks to.
type realKubelet struct {
	kubeletOptions
	dir          string // root of all it writes: root dir, certificates, logs
	certDir      string
	cri, kubelet *cluster.Process
}

// The host paths the kubelet creates whatever its flags say (its device
// plugin socket and the containers' log links are not configurable).
var hostPaths = []string{"/var/lib/kubelet", "/var/log/containers"}

// startKubelet starts fakecri and a kubelet, and registers the cleanup of
// everything they create on the host.
func startKubelet(t *testing.T, o kubeletOptions) *realKubelet {
	t.Helper()
	if _, err := os.Stat("/var/lib/kubelet/device-plugins/kubelet.sock"); err == nil {
		t.Fatal("/var/lib/kubelet/device-plugins/kubelet.sock exists: a kubelet runs on this host already, and a second one would take its device-plugin socket")
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "kcc-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	k := &realKubelet{kubeletOptions: o, dir: dir, certDir: filepath.Join(dir, "pki")}
	cleanup := hostCleanup(t, dir)
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			for _, p := range []*cluster.Process{k.kubelet, k.cri} {
				if p != nil {
					logTail(t, p.LogFile, 60)
				}
			}
		}
		cleanup()
	})
	endpoint := "unix://" + filepath.Join(dir, "cri.sock")
	if k.cri, err = cluster.Spawn(filepath.Join(o.binDir, "fakecri"), []string{"--endpoint", endpoint}, filepath.Join(dir, "fakecri.log")); err != nil {
		t.Fatal(err)
	}
	// The kubelet checks the runtime once at start and exits if it does not
	// answer: wait until the socket accepts connections.
	socket := filepath.Join(dir, "cri.sock")
	for deadline := time.Now().Add(30 * time.Second); ; {
		conn, err := net.Dial("unix", socket)
		if err == nil {
			_ = conn.Close()
			break
		}
		if k.cri.Exited() || time.Now().After(deadline) {
			t.Fatalf("fakecri does not listen on %s (log %s): %v", socket, filepath.Join(dir, "fakecri.log"), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	configFile := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(configFile, []byte(kubeletConfig(o, endpoint, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--config", configFile,
		"--bootstrap-kubeconfig", o.bootstrapKubeconfig,
		"--kubeconfig", filepath.Join(dir, "kubelet.kubeconfig"),
		"--cert-dir", k.certDir,
		"--root-dir", filepath.Join(dir, "root"),
		"--hostname-override", o.name,
		"--node-ip", o.nodeIP.String(),
		"--v", "2",
	}
	if k.kubelet, err = cluster.Spawn(filepath.Join(o.binDir, "kubelet"), args, filepath.Join(dir, "kubelet.log")); err != nil {
		t.Fatal(err)
	}
	return k
}

// kubeletConfig is a KubeletConfiguration for a host that is not a
// Kubernetes node: cgroupfs without per-QoS cgroups (nothing to enforce
// allocatable on), swap and cgroup v1 tolerated, logs and state in dir, the
// server on the node IP with a certificate from the cluster, the client
// certificate rotated.
func kubeletConfig(o kubeletOptions, endpoint, dir string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
rotateCertificates: true
serverTLSBootstrap: true
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: %s
imageServiceEndpoint: %s
podLogsDir: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
`, o.nodeIP, o.port, o.healthzPort, endpoint, endpoint, filepath.Join(dir, "pod-logs"), o.ca)
}

func (k *realKubelet) stop() {
	if k.kubelet != nil {
		k.kubelet.Stop()
	}
	if k.cri != nil {
		k.cri.Stop()
	}
}

// hostCleanup records the host's state (hostPaths, the cgroup directories)
// and returns a function that stops at nothing short of putting it back:
// it unmounts whatever is mounted under dir (the kubelet bind-mounts its
// root directory onto itself), removes dir, the host paths that were not
// there before and cgroups that were not there before, and fails the test
// if anything is left.
func hostCleanup(t *testing.T, dir string) func() {
	t.Helper()
	existed := map[string]bool{}
	for _, p := range hostPaths {
		_, err := os.Stat(p)
		existed[p] = err == nil
	}
	cgroupsBefore := cgroupDirs(t)
	return func() {
		for _, m := range mountsUnder(t, dir) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", m, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
		for _, p := range hostPaths {
			if !existed[p] {
				if err := os.RemoveAll(p); err != nil {
					t.Errorf("remove %s: %v", p, err)
				}
			}
		}
		before := map[string]bool{}
		for _, d := range cgroupsBefore {
			before[d] = true
		}
		after := cgroupDirs(t)
		slices.Reverse(after) // children first
		for _, d := range after {
			// Only the kubelet's own: other processes on the host make
			// cgroups of their own meanwhile.
			if !before[d] && isKubeletCgroup(d) {
				if err := os.Remove(d); err != nil {
					t.Errorf("remove the cgroup %s the kubelet made: %v", d, err)
				}
			}
		}
		if left := mountsUnder(t, dir); len(left) > 0 {
			t.Errorf("still mounted after the kubelet stopped: %v", left)
		}
	}
}

// isKubeletCgroup reports whether a cgroup path is one the kubelet makes
// (kubepods, its QoS classes and pods, or its own and the runtime's).
func isKubeletCgroup(path string) bool {
	base := filepath.Base(path)
	return strings.Contains(path, "kubepods") || strings.HasPrefix(base, "pod") || strings.HasPrefix(base, "kubelet")
}

// cgroupDirs lists every cgroup directory of every hierarchy, parents
// before children.
func cgroupDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir("/sys/fs/cgroup", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		t.Errorf("list cgroups: %v", err)
	}
	return dirs
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("read mounts: %v", err)
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// logTail logs the last n lines of a file.
func logTail(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path) //nolint:gosec // the test's own log
	if err != nil {
		t.Logf("%s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last lines of %s:\n%s", path, strings.Join(lines, "\n"))
}

// freePort returns a TCP port free on ip.
func freePort(t *testing.T, ip net.IP) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
