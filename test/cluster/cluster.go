// Package cluster starts a real local control plane (etcd and kube-apiserver
// from the binaries hack/build-tools.sh builds, through envtest) set up the
// way kubeadm sets up a cluster for kubelet certificates: Node and RBAC
// authorization, NodeRestriction, bootstrap token authentication, the
// bootstrap RBAC bindings, and one cluster CA that the API server trusts for
// client certificates and that the controller signs with. Tests, the demo and
// the benchmark all use it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// Options tune the control plane.
type Options struct {
	// APIServerLog, when set, receives the API server's output.
	APIServerLog io.Writer
}

// Cluster is a running control plane.
type Cluster struct {
	Env *envtest.Environment
	// Admin is a system:masters client configuration.
	Admin *rest.Config
	// CA is the cluster CA; CACertFile and CAKeyFile hold it on disk.
	CA                    *pki.CA
	CACertFile, CAKeyFile string
	// AdminKubeconfig is a kubeconfig file for Admin.
	AdminKubeconfig string
	// Dir holds the CA files, kubeconfigs and logs: a temporary directory
	// that Stop removes.
	Dir string

	restarted *exec.Cmd
}

// AssetsDir returns the directory of kube-apiserver and etcd: the
// KUBEBUILDER_ASSETS environment variable, as `make test` sets it.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		return "", errors.New("KUBEBUILDER_ASSETS is not set: run through `make test`, or export KUBEBUILDER_ASSETS=$(hack/build-tools.sh)")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := exec.LookPath(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s has no usable %s: %w", dir, bin, err)
		}
	}
	return dir, nil
}

// Start starts etcd and kube-apiserver and sets the cluster up.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if d := pki.ClockShift(); d != 0 {
		return nil, fmt.Errorf("%s=%s moves the tests' clock, but kube-apiserver checks certificates against the real one; unset it for tests that start a control plane", pki.ClockShiftEnv, d)
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	if c.Dir, err = os.MkdirTemp("", "kubelet-csr-controller-cluster-"); err != nil {
		return nil, err
	}
	if c.CA, err = pki.NewCA(pki.CAOptions{CommonName: "kubernetes"}); err != nil {
		return nil, err
	}
	c.CACertFile, c.CAKeyFile = filepath.Join(c.Dir, "ca.crt"), filepath.Join(c.Dir, "ca.key")
	if err := os.WriteFile(c.CACertFile, c.CA.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.CAKeyFile, c.CA.KeyPEM, 0o600); err != nil {
		return nil, err
	}

	// A certificate directory of our own (envtest would make and remove a
	// temporary one) lets RestartAPIServer start the same server again.
	certDir := filepath.Join(c.Dir, "apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	api := &envtest.APIServer{Out: o.APIServerLog, Err: o.APIServerLog, CertDir: certDir}
	api.SecureServing.Authn = &caAuthn{ca: c.CA}
	args := api.Configure()
	args.Set("authorization-mode", "Node", "RBAC")
	args.Set("enable-bootstrap-token-auth", "true")
	args.Set("enable-admission-plugins", "NodeRestriction")
	c.Env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		ControlPlane:          envtest.ControlPlane{APIServer: api},
		// envtest gives etcd and the API server this long each (it
		// overrides their own StartTimeout); its 20 s default is tight on a
		// loaded 2-core CI machine.
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if c.Admin, err = c.Env.Start(); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("start the control plane: %w", err)
	}
	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := WriteKubeconfig(c.Admin, c.AdminKubeconfig); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := c.setUpKubeadm(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// StartForTest starts a control plane that stops when the test ends; one
// that does not start fails the test.
func StartForTest(ctx context.Context, t testing.TB) *Cluster {
	t.Helper()
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// Stop stops the control plane and removes what Start created.
func (c *Cluster) Stop() error {
	if c.restarted != nil {
		// envtest's process is gone: stop the one RestartAPIServer started.
		_ = c.restarted.Process.Kill()
		_ = c.restarted.Wait()
	}
	err := c.Env.Stop()
	c.cleanup()
	if c.restarted != nil {
		return nil // envtest reports its own, long dead process
	}
	return err
}

func (c *Cluster) cleanup() {
	_ = os.RemoveAll(c.Dir)
}

// As returns a client configuration of the admin impersonating user in
// groups: what the API server records as spec.username and groups of the
// CSRs it creates.
func (c *Cluster) As(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(c.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(append([]string{}, groups...), "system:authenticated")}
	return cfg
}

// Kubernetes' bootstrap-token constants, as kubeadm uses them.
const (
	BootstrappersGroup = "system:bootstrappers"
	NodesGroup         = "system:nodes"
)

// setUpKubeadm creates the RBAC bindings kubeadm creates for kubelet
// certificates (kubeadm binds the same roles; its bootstrap group is the
// narrower system:bootstrappers:kubeadm:default-node-token).
func (c *Cluster) setUpKubeadm(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	nodeClientCreate := func(sub string) authorizationv1.ResourceAttributes {
		a := csrCreate
		a.Subresource = sub
		return a
	}
	bindings := []struct {
		name, role, group string
		grants            authorizationv1.ResourceAttributes
	}{
		{"kubeadm:kubelet-bootstrap", "system:node-bootstrapper", BootstrappersGroup, csrCreate},
		{"kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", BootstrappersGroup, nodeClientCreate("nodeclient")},
		{"kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", NodesGroup, nodeClientCreate("selfnodeclient")},
	}
	// The API server creates the bootstrap ClusterRoles in a post-start hook
	// and authorizes from an informer; bindClusterRole waits until each
	// binding grants what it should, so that SubjectAccessReviews answer as
	// they will for the rest of the run.
	for _, b := range bindings {
		subject := rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: b.group}
		if err := bindClusterRole(ctx, cs, b.name, b.role, subject, b.grants); err != nil {
			return err
		}
	}
	return nil
}

// CreateBootstrapToken stores a bootstrap token (id.secret) for
// authentication in group system:bootstrappers, as `kubeadm token create`
// does, and returns the token string.
func (c *Cluster) CreateBootstrapToken(ctx context.Context, id, secret string, ttl time.Duration) (string, error) {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return "", err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"token-id":                       id,
			"token-secret":                   secret,
			"expiration":                     time.Now().Add(ttl).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              BootstrappersGroup + ":test",
		},
	}
	if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create bootstrap token secret: %w", err)
	}
	token := id + "." + secret
	// The bootstrap-token authenticator reads Secrets from an informer: wait
	// until the API server knows the token, so that its first user is not
	// turned away with 401.
	tc, err := kubernetes.NewForConfig(c.BootstrapConfig(token))
	if err != nil {
		return "", err
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, last = tc.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		return last == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("the API server does not accept bootstrap token %s: %w (last answer: %w)", id, err, last)
	}
	return token, nil
}

// BootstrapConfig is the client configuration a kubelet starts with: the API
// server's address and CA, and a bootstrap token.
func (c *Cluster) BootstrapConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Admin.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.Admin.CAData},
	}
}

// WriteKubeconfig writes cfg (certificate, token or impersonation
// credentials) as a kubeconfig file.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
		Impersonate:           cfg.Impersonate.UserName,
		ImpersonateGroups:     cfg.Impersonate.Groups,
	}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user"}
	kc.CurrentContext = "local"
	return clientcmd.WriteToFile(*kc, path)
}

// caAuthn makes the API server trust the cluster CA for client certificates
// and provisions users with certificates from it, so that certificates the
// controller issues with the same CA authenticate kubelets.
type caAuthn struct {
	ca   *pki.CA
	file string
}

var _ envtest.Authn = &caAuthn{}

func (a *caAuthn) Configure(workDir string, args *envtest.Arguments) error {
	a.file = filepath.Join(workDir, "client-ca.crt")
	args.Set("client-ca-file", a.file)
	return nil
}

func (a *caAuthn) Start() error { return os.WriteFile(a.file, a.ca.CertPEM, 0o600) }

func (a *caAuthn) AddUser(user envtest.User, base *rest.Config) (*rest.Config, error) {
	certPEM, keyPEM, err := a.ca.ClientCert(user.Name, user.Groups, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(base)
	cfg.CertData, cfg.KeyData = certPEM, keyPEM
	return cfg, nil
}

func (a *caAuthn) Stop() error { return nil }
