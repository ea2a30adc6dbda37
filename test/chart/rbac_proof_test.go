package chart

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// proveRBAC runs the real controller out of cluster with a token of the
// installed chart's ServiceAccount and the installed ConfigMap's
// configuration, drives kubelet CSRs through it, and checks that the same
// identity is refused what it must never do. It returns the controller,
// still running and leading.
func proveRBAC(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset) *cluster.Controller {
	t.Helper()
	ctrl, sa := startAsServiceAccount(ctx, t, c, admin, installedConfig(ctx, t, c, admin), "chart-serviceaccount")

	t.Run("the controller becomes ready and leads through the Role's Lease", func(t *testing.T) {
		if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		poll(ctx, t, "the Lease has a holder", func(ctx context.Context) (bool, error) {
			l, err := admin.CoordinationV1().Leases(namespace).Get(ctx, "kubelet-csr-controller", metav1.GetOptions{})
			return err == nil && ptr.Deref(l.Spec.HolderIdentity, "") != "", nil
		})
		poll(ctx, t, "a LeaderElection Event about the Lease", func(ctx context.Context) (bool, error) {
			return hasEvent(ctx, admin, namespace, "kubelet-csr-controller", "LeaderElection")
		})
	})

	t.Run("kubelet CSRs are approved and issued", func(t *testing.T) {
		// As its kubelet does: the host name, then the address.
		if err := c.RegisterNode(ctx, "node-a", "node-a", "10.0.0.1"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			as   kubernetes.Interface
			csr  pki.CSR
		}{
			{"a bootstrap client CSR made with a bootstrap token", c.Bootstrap("abcdef"), pki.ClientBootstrap("node-b", "abcdef")},
			{"a renewal client CSR made by the node", c.Node("node-a"), pki.ClientRenewal("node-a")},
			{"a serving CSR for the node's own addresses", c.Node("node-a"), pki.Serving("node-a", []string{"node-a"}, []net.IP{net.ParseIP("10.0.0.1")})},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// The API server sets the requester from the identity.
				obj, err := cluster.CreateCSR(ctx, tt.as, tt.csr)
				if err != nil {
					t.Fatal(err)
				}
				var last *certificatesv1.CertificateSigningRequest
				poll(ctx, t, obj.Name+" approved and issued", func(ctx context.Context) (bool, error) {
					csr, err := admin.CertificatesV1().CertificateSigningRequests().Get(ctx, obj.Name, metav1.GetOptions{})
					if err != nil {
						return false, err
					}
					last = csr
					s := approver.StateOf(csr)
					return s.Approved && s.Issued, nil
				})
				verifyChain(t, last.Status.Certificate, c.CA.Cert)
				poll(ctx, t, "an Issued Event about "+obj.Name, func(ctx context.Context) (bool, error) {
					return hasEvent(ctx, admin, metav1.NamespaceDefault, obj.Name, "Issued")
				})
			})
		}
	})

	t.Run("the kubelet-serving CA is published as a ClusterTrustBundle", func(t *testing.T) {
		name := "kubernetes.io:kubelet-serving:kubelet-csr-controller"
		poll(ctx, t, "ClusterTrustBundle "+name, func(ctx context.Context) (bool, error) {
			b, err := admin.CertificatesV1().ClusterTrustBundles().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			return b.Spec.SignerName == certificatesv1.KubeletServingSignerName && b.Spec.TrustBundle == string(c.CA.CertPEM), nil
		})
	})

	t.Run("metrics are refused without a token and served to the metrics-reader role", func(t *testing.T) {
		scrapes(ctx, t, ctrl, admin)
	})

	t.Run("the ServiceAccount is refused what it must never do", func(t *testing.T) {
		forbidden(ctx, t, c, admin, kubernetes.NewForConfigOrDie(sa))
	})

	t.Run("the controller was never refused a request", func(t *testing.T) { neverRefused(t, ctrl) })
	return ctrl
}

// scrapes reads /metrics as nobody, as a ServiceAccount without a role,
// and as one bound to the chart's metrics-reader ClusterRole. (A refusal is
// remembered for ten seconds, so the allowed one is a ServiceAccount of its
// own, bound before its first scrape.)
func scrapes(ctx context.Context, t *testing.T, ctrl *cluster.Controller, admin *kubernetes.Clientset) {
	t.Helper()
	token := map[string]string{}
	for _, name := range []string{"scraper", "stranger"} {
		if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		token[name] = serviceAccountToken(ctx, t, admin, name)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: fullname + "-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: namespace}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "the API server allows the scraper get /metrics", func(ctx context.Context) (bool, error) {
		r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:" + namespace + ":scraper", Groups: saGroups,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
		}}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed, err
	})
	scrape := func(token string) (int, string) {
		t.Helper()
		code, body, err := ctrl.Scrape(ctx, token)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		return code, body
	}
	if code, _ := scrape(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := scrape("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("a token the API server does not know: %d, want 401", code)
	}
	if code, _ := scrape(token["stranger"]); code != http.StatusForbidden {
		t.Errorf("a ServiceAccount without the role: %d, want 403", code)
	}
	if code, body := scrape(token["scraper"]); code != http.StatusOK || !strings.Contains(body, "kubelet_csr_controller_certificates_issued_total") {
		t.Errorf("the metrics-reader role: %d, want 200 with the controller's metrics:\n%.300s", code, body)
	}
}

// The chart's ServiceAccount, as the API server names it and its groups.
var saUser, saGroups = cluster.ServiceAccountUser(namespace, fullname)

// startAsServiceAccount runs the controller binary with configFile and the
// chart's ServiceAccount's token, once its bindings grant what they bind,
// and returns it with that identity's client configuration.
func startAsServiceAccount(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset, configFile, name string) (*cluster.Controller, *rest.Config) {
	t.Helper()
	sa, err := c.ServiceAccountConfig(ctx, admin, namespace, fullname)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitForChartRBAC(ctx, admin, namespace, saUser, saGroups); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(c.Dir, name+".kubeconfig")
	if err := cluster.WriteKubeconfig(sa, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{
		Binary: cluster.ControllerBinaryForTest(ctx, t), ConfigFile: configFile, Kubeconfig: kubeconfig, Name: name,
		// The chart's Role covers Leases in the release namespace only.
		ExtraArgs: []string{"--leader-election-namespace", namespace},
		// As the chart runs it: TokenReviews and SubjectAccessReviews for
		// every scrape.
		SecureMetrics: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Stop() })
	dumpOnFailure(t, ctrl.LogFile)
	return ctrl, sa
}

// neverRefused fails the test if the controller's log reports a refused
// request: the chart's RBAC lacks a permission it uses.
func neverRefused(t *testing.T, ctrl *cluster.Controller) {
	t.Helper()
	if err := ctrl.NeverRefused(); err != nil {
		t.Error(err)
	}
}

// tokenConfig returns a client configuration with a token of the
// ServiceAccount name in the release namespace.
func tokenConfig(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset, name string) *rest.Config {
	t.Helper()
	cfg, err := c.ServiceAccountConfig(ctx, admin, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serviceAccountToken returns an hour's token of a ServiceAccount in the
// release namespace.
func serviceAccountToken(ctx context.Context, t *testing.T, admin *kubernetes.Clientset, name string) string {
	t.Helper()
	token, err := cluster.ServiceAccountToken(ctx, admin, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// installedConfig writes the installed ConfigMap's configuration with the
// CA files on disk in place of the Secret mount, and returns its path.
func installedConfig(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset) string {
	t.Helper()
	cfg, err := c.InstalledConfig(ctx, admin, namespace, fullname)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.Dir, "chart-config.yaml")
	if err := cluster.WriteConfig(cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// forbidden checks that the ServiceAccount cannot approve or sign CSRs of a
// signer the defaults do not cover, nor read Secrets. Objects are read with
// the admin, so that only the tested request can be refused.
func forbidden(ctx context.Context, t *testing.T, c *cluster.Cluster, admin, sa *kubernetes.Clientset) {
	t.Helper()
	csrs := admin.CertificatesV1().CertificateSigningRequests()
	pending, approvedCSR := apiClientCSR(ctx, t, admin, "api-client-pending"), apiClientCSR(ctx, t, admin, "api-client-approved")
	approvedCSR.Status.Conditions = append(approvedCSR.Status.Conditions, approvedCondition("ApprovedByTest"))
	approvedCSR, err := csrs.UpdateApproval(ctx, approvedCSR.Name, approvedCSR, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := c.CA.ClientCert("someone", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forgedCA := pki.MustCA(t, pki.CAOptions{CommonName: "forged"})

	tests := []struct {
		name string
		do   func(context.Context) error
	}{
		{"approving a CSR of kubernetes.io/kube-apiserver-client", func(ctx context.Context) error {
			csr := pending.DeepCopy()
			csr.Status.Conditions = append(csr.Status.Conditions, approvedCondition("ApprovedByServiceAccount"))
			_, err := sa.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
			return err
		}},
		{"issuing a certificate for an approved CSR of kubernetes.io/kube-apiserver-client", func(ctx context.Context) error {
			csr := approvedCSR.DeepCopy()
			csr.Status.Certificate = certPEM
			_, err := sa.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{})
			return err
		}},
		{"publishing a trust bundle for kubernetes.io/kube-apiserver-client", func(ctx context.Context) error {
			_, err := sa.CertificatesV1().ClusterTrustBundles().Create(ctx, &certificatesv1.ClusterTrustBundle{
				ObjectMeta: metav1.ObjectMeta{Name: "kubernetes.io:kube-apiserver-client:forged"},
				Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: certificatesv1.KubeAPIServerClientSignerName, TrustBundle: string(c.CA.CertPEM)},
			}, metav1.CreateOptions{})
			return err
		}},
		// (Reading one is not refused: trust bundles are public.)
		{"replacing the anchors of a kubelet-serving bundle that is not its own", func(ctx context.Context) error {
			other, err := admin.CertificatesV1().ClusterTrustBundles().Create(ctx, &certificatesv1.ClusterTrustBundle{
				ObjectMeta: metav1.ObjectMeta{Name: "kubernetes.io:kubelet-serving:someone-else"},
				Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: certificatesv1.KubeletServingSignerName, TrustBundle: string(c.CA.CertPEM)},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			other.Spec.TrustBundle = string(forgedCA.CertPEM)
			_, err = sa.CertificatesV1().ClusterTrustBundles().Update(ctx, other, metav1.UpdateOptions{})
			return err
		}},
		{"patching a Node (the defaults set no start-up taint)", func(ctx context.Context) error {
			_, err := sa.CoreV1().Nodes().Patch(ctx, "node-a", types.JSONPatchType, []byte(`[{"op":"add","path":"/spec/taints","value":[]}]`), metav1.PatchOptions{})
			return err
		}},
		{"listing Secrets in kube-system", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"reading a Secret in kube-system", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-abcdef", metav1.GetOptions{})
			return err
		}},
		{"reading its own CA Secret through the API (the pods mount it)", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(namespace).Get(ctx, "kubelet-csr-controller-ca", metav1.GetOptions{})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(ctx); !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want Forbidden", err)
			}
		})
	}
}

// apiClientCSR creates, as the admin, a CSR of kubernetes.io/kube-apiserver-client.
func apiClientCSR(ctx context.Context, t *testing.T, admin *kubernetes.Clientset, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	req := pki.Request{}
	req.Subject.CommonName = "someone"
	obj := pki.MustObject(t, pki.CSR{
		Name: name, SignerName: certificatesv1.KubeAPIServerClientSignerName, Request: req,
		Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
	})
	obj.CreationTimestamp = metav1.Time{}
	created, err := admin.CertificatesV1().CertificateSigningRequests().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

func approvedCondition(reason string) certificatesv1.CertificateSigningRequestCondition {
	return certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: reason, Message: "approved by the chart test",
	}
}

// verifyChain checks that an issued certificate chains to the CA.
func verifyChain(t *testing.T, certPEM []byte, ca *x509.Certificate) {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("status.certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the certificate does not chain to the cluster CA: %v", err)
	}
}

// hasEvent reports whether ns holds an Event about the object name with
// reason.
func hasEvent(ctx context.Context, admin *kubernetes.Clientset, ns, name, reason string) (bool, error) {
	list, err := admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.name", name), fields.OneTermEqualSelector("reason", reason)).String(),
	})
	return err == nil && len(list.Items) > 0, err
}

// poll waits up to 30 seconds for cond.
func poll(ctx context.Context, t *testing.T, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
