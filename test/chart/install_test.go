package chart

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

// TestChartInstallsIntoARealAPIServer installs the chart with its default
// values (monitoring off: the Prometheus Operator's CRDs are not there) and
// then proves its RBAC with the real controller binary running as the
// chart's ServiceAccount. No kubelet runs, so no pod does either.
func TestChartInstallsIntoARealAPIServer(t *testing.T) {
	t.Parallel()
	ctx, c, admin := startForInstall(t)
	caSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelet-csr-controller-ca", Namespace: namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: c.CA.CertPEM, corev1.TLSPrivateKeyKey: c.CA.KeyPEM},
	}
	if _, err := admin.CoreV1().Secrets(namespace).Create(ctx, caSecret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	notes, err := helm(t, "install", release, chartDir, "--namespace", namespace, "--kubeconfig", c.AdminKubeconfig)
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, notes)
	}

	t.Run("the notes tell how to give the CA, stop kube-controller-manager's controllers and watch", func(t *testing.T) {
		for _, want := range []string{
			"kubectl -n " + namespace + " create secret tls kubelet-csr-controller-ca --cert=/etc/kubernetes/pki/ca.crt --key=/etc/kubernetes/pki/ca.key",
			"--controllers=*,bootstrapsigner,tokencleaner,-csrapproving,-csrcleaner",
			"--cluster-signing-cert-file= --cluster-signing-key-file=",
			"kubectl get csr -w",
			"kubectl describe csr",
			// The leader's log, not an arbitrary replica's.
			"kubectl -n " + namespace + " logs $(kubectl -n " + namespace + " get lease kubelet-csr-controller -o jsonpath='{.spec.holderIdentity}' | cut -d_ -f1)",
			"helm test " + release,
		} {
			if !strings.Contains(strings.Join(strings.Fields(notes), " "), want) {
				t.Errorf("the notes lack %q:\n%s", want, notes)
			}
		}
	})

	t.Run("the API server holds every object of the release", func(t *testing.T) {
		out, err := helm(t, "get", "manifest", release, "--namespace", namespace, "--kubeconfig", c.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"}
		var kinds []string
		for kind := range m.docs {
			kinds = append(kinds, kind)
		}
		slices.Sort(kinds)
		if !slices.Equal(want, kinds) {
			t.Errorf("the release holds %v, want %v", kinds, want)
		}
		getAll(ctx, t, c, m)
	})

	ctrl := proveRBAC(ctx, t, c, admin)
	proveHelmTest(ctx, t, c, admin)
	proveDashboardMetrics(ctx, t, ctrl, admin)
}

// startForInstall starts a control plane with the release's namespace. Its
// context is generous: the control plane, helm and the controller start here
// while other packages' API servers run beside it under -race.
func startForInstall(t *testing.T) (context.Context, *cluster.Cluster, *kubernetes.Clientset) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	c := cluster.StartForTest(ctx, t)
	admin := kubernetes.NewForConfigOrDie(c.Admin)
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ctx, c, admin
}

// getAll reads every object of the manifest back from the API server.
func getAll(ctx context.Context, t *testing.T, c *cluster.Cluster, m *manifest) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn := dynamic.NewForConfigOrDie(c.Admin)
	for kind, docs := range m.docs {
		for _, doc := range docs {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(doc); err != nil {
				t.Fatalf("decode %s: %v", kind, err)
			}
			gvk := u.GroupVersionKind()
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Errorf("%s: %v", gvk, err)
				continue
			}
			var r dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if mapping.Scope.Name() == apimeta.RESTScopeNameNamespace {
				ns := u.GetNamespace()
				if ns == "" {
					ns = namespace
				}
				r = dyn.Resource(mapping.Resource).Namespace(ns)
			}
			if _, err := r.Get(ctx, u.GetName(), metav1.GetOptions{}); err != nil {
				t.Errorf("%s %s was not stored: %v", kind, u.GetName(), err)
			}
		}
	}
}

// dumpOnFailure logs a file (the controller's log) if the test fails.
func dumpOnFailure(t *testing.T, path string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if b, err := os.ReadFile(path); err == nil {
			t.Logf("controller log %s:\n%s", path, b)
		}
	})
}
