package chart

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// approveOnly is the install for a managed cluster, where there is no CA key
// to give: no signers and no ca values.
const approveOnly = "config: {signers: []}"

// approveOnlyTainted is approveOnly for nodes that register with a
// start-up taint: the release lifts it once another signer has issued.
const approveOnlyTainted = "config: {signers: [], approver: {kubeletServing: {startupTaint: {key: example.com/no-serving-cert, effect: NoSchedule}}}}"

func TestApproveOnlyRendersNoCAAndNoSigningRights(t *testing.T) {
	t.Parallel()
	m := render(t, approveOnly)
	pod := m.deployment(t).Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			t.Errorf("volume %q mounts Secret %q; an approve-only release mounts no CA", v.Name, v.Secret.SecretName)
		}
	}
	for _, vm := range pod.Containers[0].VolumeMounts {
		if vm.Name == "ca" {
			t.Errorf("the container mounts %q at %s", vm.Name, vm.MountPath)
		}
	}
	for _, g := range grants(m.clusterRole(t).Rules) {
		if strings.HasPrefix(g, "sign ") || strings.Contains(g, "certificatesigningrequests/status") {
			t.Errorf("the ClusterRole grants %q; an approve-only release signs nothing", g)
		}
	}
	// (The top-level ca keeps its default path, which no signer then reads.)
	if cfg := controllerConfig(t, m); len(cfg.Signers) != 0 {
		t.Errorf("the configuration lists signers %v; want none", cfg.Signers)
	}

	// A signer that names its own CA needs no Secret mount either.
	m = render(t, `config:
  signers:
    - name: kubernetes.io/kubelet-serving
      ca: {certFile: /pki/serving/tls.crt, keyFile: /pki/serving/tls.key}`)
	for _, v := range m.deployment(t).Spec.Template.Spec.Volumes {
		if v.Name == "ca" {
			t.Errorf("the ca.existingSecret is mounted although the only signer names its own CA")
		}
	}
	for _, sc := range controllerConfig(t, m).Signers {
		if sc.CA == nil || sc.CA.CertFile != "/pki/serving/tls.crt" {
			t.Errorf("signer %s signs with %+v; want its own CA", sc.Name, sc.CA)
		}
	}
}

// TestApproveOnlyInstallsIntoARealAPIServer installs the approve-only
// release (with a start-up taint) with no CA Secret anywhere and runs the
// controller binary as its ServiceAccount: serving CSRs are approved,
// nothing is signed, the ServiceAccount may not sign, and once another
// signer issues, the Node's start-up taint is lifted.
func TestApproveOnlyInstallsIntoARealAPIServer(t *testing.T) {
	t.Parallel()
	ctx, c, admin := startForInstall(t)
	notes, err := helm(t, append([]string{"install", release, chartDir, "--namespace", namespace, "--kubeconfig", c.AdminKubeconfig}, valuesFile(t, approveOnlyTainted)...)...)
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, notes)
	}
	flat := strings.Join(strings.Fields(notes), " ")
	for _, want := range []string{"Approve-only: this release signs nothing and mounts no CA.", "--controllers=*,bootstrapsigner,tokencleaner,-csrapproving"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the notes lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "create secret tls") {
		t.Errorf("the notes ask for a CA Secret:\n%s", notes)
	}

	cm, err := admin.CoreV1().ConfigMaps(namespace).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(c.Dir, "approve-only.yaml")
	if err := os.WriteFile(configFile, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl, _ := startAsServiceAccount(ctx, t, c, admin, configFile, "approve-only")
	if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	taint := corev1.Taint{Key: "example.com/no-serving-cert", Effect: corev1.TaintEffectNoSchedule}
	if err := c.RegisterTaintedNode(ctx, "node-a", []corev1.Taint{taint}, "node-a", "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	obj, err := cluster.CreateCSR(ctx, c.Node("node-a"), pki.Serving("node-a", []string{"node-a"}, []net.IP{net.ParseIP("10.0.0.1")}))
	if err != nil {
		t.Fatal(err)
	}
	var last *certificatesv1.CertificateSigningRequest
	poll(ctx, t, obj.Name+" approved", func(ctx context.Context) (bool, error) {
		last, err = admin.CertificatesV1().CertificateSigningRequests().Get(ctx, obj.Name, metav1.GetOptions{})
		return err == nil && approver.StateOf(last).Approved, err
	})
	if len(last.Status.Certificate) != 0 {
		t.Errorf("%s was issued by an approve-only release", obj.Name)
	}
	// Another signer (the cloud's) issues; the release lifts the taint.
	certPEM, _, err := c.CA.ClientCert("system:node:node-a", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	last.Status.Certificate = certPEM
	if _, err := admin.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, last, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "node-a's start-up taint is lifted", func(ctx context.Context) (bool, error) {
		n, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == taint.Key }), err
	})

	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Group: "certificates.k8s.io", Resource: "signers", Verb: "sign", Name: certificatesv1.KubeletServingSignerName},
		{Group: "certificates.k8s.io", Resource: "signers", Verb: "sign", Name: certificatesv1.KubeAPIServerClientKubeletSignerName},
		{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: "status", Verb: "update"},
		{Group: "", Resource: "secrets", Verb: "get", Namespace: namespace},
	} {
		sar, err := cluster.Review(ctx, admin, saUser, saGroups, attrs)
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed {
			t.Errorf("the approve-only ServiceAccount may %s %s/%s %s", attrs.Verb, attrs.Resource, attrs.Subresource, attrs.Name)
		}
	}
	neverRefused(t, ctrl)
}
