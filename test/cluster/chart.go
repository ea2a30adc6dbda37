package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

// What the tests that install the Helm chart and run the controller out of
// cluster as its ServiceAccount (test/chart, test/e2e-kubelet) share.

// ServiceAccountUser returns the user name and groups the API server gives
// a token of ServiceAccount namespace/name.
func ServiceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name, []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace}
}

// ServiceAccountToken returns an hour's token of ServiceAccount namespace/name.
func ServiceAccountToken(ctx context.Context, admin kubernetes.Interface, namespace, name string) (string, error) {
	tr, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create a token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountConfig returns a client configuration with a token of
// ServiceAccount namespace/name.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, admin kubernetes.Interface, namespace, name string) (*rest.Config, error) {
	token, err := ServiceAccountToken(ctx, admin, namespace, name)
	if err != nil {
		return nil, err
	}
	return &rest.Config{Host: c.Admin.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.Admin.CAData}}, nil
}

// WaitForChartRBAC waits until each of the chart's three bindings (its
// ClusterRole's, its leader-election Role's in namespace, its Events Role's)
// grants user in groups what it binds: helm returns once the objects exist,
// but the API server authorizes from an informer, and one refusal logged by
// the controller fails the tests.
func WaitForChartRBAC(ctx context.Context, admin kubernetes.Interface, namespace, user string, groups []string) error {
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "list"},     // the ClusterRole
		{Group: "coordination.k8s.io", Resource: "leases", Verb: "create", Namespace: namespace}, // leader election
		{Group: "events.k8s.io", Resource: "events", Verb: "create", Namespace: metav1.NamespaceDefault},
	} {
		if err := WaitAllowed(ctx, admin, user, groups, attrs); err != nil {
			return err
		}
	}
	return nil
}

// InstalledConfig returns the configuration in an installed chart's
// ConfigMap namespace/name with the cluster's CA files on disk in place of
// the Secret mount.
func (c *Cluster) InstalledConfig(ctx context.Context, admin kubernetes.Interface, namespace, name string) (*config.ControllerConfig, error) {
	cm, err := admin.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	cfg, _, err := config.Parse([]byte(cm.Data["config.yaml"]), "the installed ConfigMap")
	if err != nil {
		return nil, err
	}
	cfg.CA = &config.CAFiles{CertFile: c.CACertFile, KeyFile: c.CAKeyFile}
	return cfg, nil
}

// NeverRefused returns an error if the controller's log reports a refused
// request: the RBAC it runs with lacks a permission it uses.
func (p *Controller) NeverRefused() error {
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		return err
	}
	if strings.Contains(strings.ToLower(string(b)), "forbidden") {
		return errors.New("the controller's log reports a forbidden request: the chart's RBAC lacks a permission")
	}
	return nil
}
