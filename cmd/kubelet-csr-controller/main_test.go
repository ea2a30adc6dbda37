package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// TestMain installs the process-wide loggers before any test starts a client:
// klog's logger is read without a lock, so run() setting it while another
// test's client logs would race.
func TestMain(m *testing.M) {
	installGlobalLogger(logr.Discard())
	os.Exit(m.Run())
}

func TestConfigWithThreeMistakesExitsWithThreeFieldPathErrors(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, `apiVersion: config.nodecsr.io/v1alpha1
kind: ControllerConfig
approver:
  mode: strict
  keys: {rsaMinBits: 1024}
cleaner:
  deleteIssuedAftr: 1h
`)
	// The kubeconfig does not exist: the configuration must fail first,
	// before anything touches a cluster.
	err := run(context.Background(), []string{"--config", path, "--kubeconfig", "/nonexistent"})
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want a configuration error, got %v", err)
	}
	if code := exitCode(err); code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	want := []string{
		`unknown field "cleaner.deleteIssuedAftr"`,
		`approver.mode: Unsupported value: "strict"`,
		`approver.keys.rsaMinBits: Invalid value: 1024`,
	}
	if len(cerr.Problems) != len(want) {
		t.Fatalf("want %d problems, got %q", len(want), cerr.Problems)
	}
	for i, w := range want {
		if !strings.HasPrefix(cerr.Problems[i], w) {
			t.Errorf("problem %d = %q, want it to start with %q", i, cerr.Problems[i], w)
		}
	}
}

func TestUnreachableAPIServerIsOneClearError(t *testing.T) {
	t.Parallel()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
	err := run(context.Background(), []string{"--kubeconfig", kubeconfig, "--leader-elect=false", "--log-level=error"})
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the API server at https://127.0.0.1:1:") {
		t.Fatalf("want one clear error naming the server, got %v", err)
	}
	if code := exitCode(err); code != exitFailure {
		t.Errorf("exit code %d, want %d", code, exitFailure)
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--zap-encoder", "xml"}, {"--zap-log-level", "loud"}, {"--log-format", "xml"}, {"--log-level", "loud"}, {"--no-such-flag"}, {"stray"}, {"--metrics-secure=false", "--metrics-cert-dir", "/tmp"}} {
		if code := exitCode(run(context.Background(), args)); code != exitUsage {
			t.Errorf("%q: exit code %d, want %d", args, code, exitUsage)
		}
	}
}

// TestManagerLeadsServesProbesAndMetrics runs the whole binary's run()
// against a real API server with leader election.
func TestManagerLeadsServesProbesAndMetrics(t *testing.T) {
	ctx := context.Background()
	c := cluster.StartForTest(ctx, t)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	sample, err := os.ReadFile("../../config/samples/controller-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(sample), "/etc/kubelet-csr-controller/ca/tls.crt", c.CACertFile)
	cfg = strings.ReplaceAll(cfg, "/etc/kubelet-csr-controller/ca/tls.key", c.CAKeyFile)
	writeFile(t, cfgPath, cfg)
	metricsAddr, probeAddr, pprofAddr := freeAddr(t), freeAddr(t), freeAddr(t)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{
			"--kubeconfig", c.AdminKubeconfig, "--config", cfgPath,
			"--metrics-bind-address", metricsAddr, "--metrics-secure=false", "--health-probe-bind-address", probeAddr,
			"--leader-elect", "--leader-election-namespace", "kube-system", "--log-level", "error",
			"--profiling", "--pprof-bind-address", pprofAddr,
		})
	}()

	cs := kubernetes.NewForConfigOrDie(c.Admin)
	var lease *coordinationv1.Lease
	poll(t, "the Lease is held", func() bool {
		select {
		case err := <-done:
			t.Fatalf("run returned before taking the Lease: %v", err)
		default:
		}
		lease, err = cs.CoordinationV1().Leases("kube-system").Get(ctx, "kubelet-csr-controller", metav1.GetOptions{})
		return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != ""
	})
	poll(t, "/readyz answers 200", func() bool { return get(t, "http://"+probeAddr+"/readyz") == 200 })
	if code := get(t, "http://"+probeAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	var body string
	poll(t, "/metrics has controller-runtime's and our metrics", func() bool {
		body = getBody(t, "http://"+metricsAddr+"/metrics")
		return strings.Contains(body, "controller_runtime_reconcile_total") && strings.Contains(body, "kubelet_csr_controller_ca_ready")
	})
	if !strings.Contains(body, `leader_election_master_status{name="kubelet-csr-controller"} 1`) {
		t.Errorf("/metrics should report this replica as leader")
	}
	if !strings.Contains(body, `kubelet_csr_controller_build_info{goversion="`) {
		t.Errorf("/metrics has no build_info")
	}
	// Profiles only on their own (loopback by default) address, never beside
	// the metrics that a Service exposes.
	if code := get(t, "http://"+pprofAddr+"/debug/pprof/"); code != 200 {
		t.Errorf("--profiling: %s/debug/pprof/ = %d, want 200", pprofAddr, code)
	}
	if code := get(t, "http://"+metricsAddr+"/debug/pprof/"); code == 200 {
		t.Errorf("the metrics address serves /debug/pprof/")
	}

	// SIGTERM (here: the context) stops it cleanly and releases the Lease.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v after a graceful stop", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return within a minute of the stop")
	}
	lease, err = cs.CoordinationV1().Leases("kube-system").Get(ctx, "kubelet-csr-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease is still held by %q after a graceful stop", *h)
	}
}

func TestCheckDecidesOffline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	node := filepath.Join(dir, "node.yaml")
	writeFile(t, node, `apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: n1}]
`)
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, csrYAML(t, "n1", []string{"n1"}, []net.IP{net.ParseIP("10.0.0.1")}))
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, csrYAML(t, "n1", nil, []net.IP{net.ParseIP("10.0.0.2")}))

	var out bytes.Buffer
	if err := runCheck(context.Background(), []string{"--node", node, good}, &out); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "decision: Approve") {
		t.Errorf("output:\n%s", out.String())
	}
	// Its "Approve" is not the controller's verdict: it says what it
	// could not know.
	if !strings.Contains(out.String(), "assumed:  no other CSR of this node is pending (the flood rules") {
		t.Errorf("check must say it skipped the flood rules:\n%s", out.String())
	}
	out.Reset()
	client := filepath.Join(dir, "client.yaml")
	c := pki.ClientRenewal("n1")
	c.Created = time.Now()
	b, err := yaml.Marshal(pki.MustObject(t, c))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, client, "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\n"+string(b))
	if err := runCheck(context.Background(), []string{client}, &out); err != nil {
		t.Fatalf("check of a client CSR: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "assumed:  the requester's SubjectAccessReview answers allowed=true (--authorized)") {
		t.Errorf("check must say it assumed the SubjectAccessReview:\n%s", out.String())
	}
	out.Reset()
	err = runCheck(context.Background(), []string{"--node", node, bad}, &out)
	if exitCode(err) != exitNotAllow || !strings.Contains(out.String(), "reason:   SANNotOwnedByNode") {
		t.Errorf("want exit %d with SANNotOwnedByNode, got %v:\n%s", exitNotAllow, err, out.String())
	}
	if strings.Contains(out.String(), "suspect:") {
		t.Errorf("an address no Node lists is a mistake, not a suspect:\n%s", out.String())
	}
	out.Reset()
	err = runCheck(context.Background(), []string{good}, &out)
	if exitCode(err) != exitNotAllow || !strings.Contains(out.String(), "reason:   NodeNotFound") {
		t.Errorf("without --node the Node counts as missing; got %v:\n%s", err, out.String())
	}

	// A node list in which n2 lists 10.0.0.1 too: n1's request for it is
	// refused, whichever Node lied.
	nodes := filepath.Join(dir, "nodes.yaml")
	writeFile(t, nodes, `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}, status: {addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: n1}]}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}, status: {addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: n2}]}}
`)
	out.Reset()
	err = runCheck(context.Background(), []string{"--node", nodes, good}, &out)
	if exitCode(err) != exitNotAllow || !strings.Contains(out.String(), "reason:   SANOwnedByOtherNode") || !strings.Contains(out.String(), "suspect:  other-nodes-address") {
		t.Errorf("want a suspect SANOwnedByOtherNode from a node list; got %v:\n%s", err, out.String())
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	cluster.Poll(context.Background(), t, 50*time.Millisecond, time.Minute, what, cond)
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url) //nolint:gosec,noctx // a test's own local endpoint
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) //nolint:gosec,noctx // a test's own local endpoint
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// csrYAML is a serving CSR as `kubectl get csr -o yaml` prints it.
func csrYAML(t *testing.T, node string, dns []string, ips []net.IP) string {
	t.Helper()
	c := pki.Serving(node, dns, ips)
	c.Created = time.Now()
	b, err := yaml.Marshal(pki.MustObject(t, c))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\n%s", b)
}

func TestOldLogFlagNamesStillWorkAndWarn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		format     string
		level      zapcore.Level
		deprecated int
	}{
		{"controller-runtime's names set the format and level", []string{"--zap-encoder=console", "--zap-log-level=debug"}, "console", -1, 0},
		{"the old names set the same and are reported", []string{"--log-format=console", "--log-level=error"}, "console", zapcore.ErrorLevel, 2},
		{"the defaults are JSON at info", nil, "json", zapcore.InfoLevel, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := parseFlags(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if f.logFormat != tt.format || f.zapLevel != tt.level || len(f.deprecated) != tt.deprecated {
				t.Errorf("format %q level %v deprecated %q, want %q %v and %d warnings", f.logFormat, f.zapLevel, f.deprecated, tt.format, tt.level, tt.deprecated)
			}
		})
	}
}
