//go:build e2ekubelet

package e2ekubelet

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

const (
	chartDir  = "../../charts/kubelet-csr-controller"
	release   = "kubelet-csr-controller"
	namespace = "kubelet-csr-controller"
)

// startChartController installs the chart with its default values, then
// runs the controller binary out of cluster as the chart's ServiceAccount,
// with the installed ConfigMap's configuration (the CA files on disk in
// place of the Secret mount, every certificate living d), leading through
// the chart's Role. No kube-controller-manager runs, so no pod does.
func startChartController(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset, d time.Duration) *cluster.Controller {
	t.Helper()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	helmInstall(t, c)

	cfg, err := c.InstalledConfig(ctx, admin, namespace, release)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(c.Dir, "chart-config.yaml")
	if err := cluster.WriteConfig(cluster.ShortLived(cfg, d), cfgFile); err != nil {
		t.Fatal(err)
	}
	user, groups := cluster.ServiceAccountUser(namespace, release)
	if err := cluster.WaitForChartRBAC(ctx, admin, namespace, user, groups); err != nil {
		t.Fatal(err)
	}
	sa, err := c.ServiceAccountConfig(ctx, admin, namespace, release)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(c.Dir, "serviceaccount.kubeconfig")
	if err := cluster.WriteKubeconfig(sa, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{
		Binary: cluster.ControllerBinaryForTest(ctx, t), ConfigFile: cfgFile, Kubeconfig: kubeconfig, Name: "controller",
		ExtraArgs: []string{"--leader-election-namespace", namespace}, SecureMetrics: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ctrl.Stop()
		if t.Failed() {
			logTail(t, ctrl.LogFile, 60)
		}
	})
	return ctrl
}

// helmInstall installs the chart with $HELM, as `make test` sets it.
func helmInstall(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Fatal("HELM is not set: run `make e2e-kubelet`, or export HELM=$(hack/build-tools.sh helm)/helm")
	}
	home := t.TempDir()
	cmd := exec.Command(bin, "install", release, chartDir, "--namespace", namespace, "--kubeconfig", c.AdminKubeconfig) //nolint:gosec // the test's own tool
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out.String())
	}
}
