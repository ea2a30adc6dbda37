// Package kubelet simulates the certificate side of a kubelet with the
// kubelet's own code: client-go's certificate manager
// (k8s.io/client-go/util/certificate), configured as the kubelet configures
// it (k8s.io/kubernetes v1.37.2, pkg/kubelet/certificate/kubelet.go). A
// simulated kubelet bootstraps its client certificate with a bootstrap token,
// renews it as system:node:<name>, registers its Node with addresses, and
// obtains and rotates a serving certificate for those addresses, keeping
// both in a per-node certificate directory as the kubelet does.
package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate"
	"k8s.io/klog/v2"

	"github.com/go-logr/logr"
)

// Options describe one simulated node.
type Options struct {
	NodeName string
	// Addresses are what the Node reports in status.addresses.
	Addresses []corev1.NodeAddress
	// ExtraServingIPs are claimed in serving CSRs beyond the Node's own
	// addresses: a misbehaving node.
	ExtraServingIPs []net.IP
	// Bootstrap is the kubelet's bootstrap kubeconfig: the API server and
	// its CA, and a bootstrap token.
	Bootstrap *rest.Config
	// CertDir holds kubelet-client-current.pem and kubelet-server-current.pem.
	CertDir string
	// RegisterDelay holds the Node's registration back after the client
	// certificate arrives (a Node that appears late). The serving CSRs are
	// filed meanwhile.
	RegisterDelay time.Duration
	// RegisterWithTaints are the Node's taints at registration, as the
	// kubelet's --register-with-taints sets them.
	RegisterWithTaints []corev1.Taint
	// Serve listens on a loopback port with the current serving
	// certificate, as the kubelet's server does on 10250, and writes that
	// port to the Node's status.daemonEndpoints (for the served-certificate
	// audit; the Node's addresses are not this machine's, so the auditor
	// maps them to ServingAddr).
	Serve bool
}

// Kubelet is a running simulated kubelet.
type Kubelet struct {
	opts    Options
	client  certificate.Manager
	serving certificate.Manager

	clientRotations, servingRotations atomic.Int64
	cancel                            context.CancelFunc
	wg                                sync.WaitGroup
	// listener is the serving endpoint's, with Serve.
	listener net.Listener
}

// counter counts the rotations the certificate manager reports.
type counter struct{ n *atomic.Int64 }

func (c counter) Observe(float64) { c.n.Add(1) }

// Start starts the node: its client certificate manager at once (it
// bootstraps with the token), then, once it has a client certificate, its
// Node registration and its serving certificate manager.
func Start(ctx context.Context, o Options) (*Kubelet, error) {
	ctx, cancel := context.WithCancel(ctx)
	// The managers log every denial as an error: quiet.
	ctx = klog.NewContext(ctx, logr.Discard())
	k := &Kubelet{opts: o, cancel: cancel}

	clientStore, err := certificate.NewFileStore("kubelet-client", o.CertDir, o.CertDir, "", "")
	if err != nil {
		cancel()
		return nil, err
	}
	// As the kubelet does: with no certificate yet, the bootstrap token makes
	// the request (a bootstrap CSR); afterwards the current certificate does
	// (a renewal by system:node:<name>).
	k.client, err = certificate.NewManager(&certificate.Config{
		Ctx: &ctx,
		ClientsetFn: func(current *tls.Certificate) (kubernetes.Interface, error) {
			if current == nil {
				return kubernetes.NewForConfig(o.Bootstrap)
			}
			return k.clientsetWith(current)
		},
		Template: &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}},
		},
		SignerName:          certificatesv1.KubeAPIServerClientKubeletSignerName,
		GetUsages:           certificate.DefaultKubeletClientGetUsages,
		CertificateStore:    clientStore,
		CertificateRotation: counter{&k.clientRotations},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client certificate manager: %w", err)
	}
	servingStore, err := certificate.NewFileStore("kubelet-server", o.CertDir, o.CertDir, "", "")
	if err != nil {
		cancel()
		return nil, err
	}
	dnsNames, ips := addressesToHostnamesAndIPs(o.Addresses)
	ips = append(ips, o.ExtraServingIPs...)
	k.serving, err = certificate.NewManager(&certificate.Config{
		Ctx: &ctx,
		ClientsetFn: func(*tls.Certificate) (kubernetes.Interface, error) {
			return k.clientsetWith(k.client.Current())
		},
		GetTemplate: func() *x509.CertificateRequest {
			return &x509.CertificateRequest{
				Subject:     pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}},
				DNSNames:    dnsNames,
				IPAddresses: ips,
			}
		},
		SignerName:          certificatesv1.KubeletServingSignerName,
		GetUsages:           certificate.DefaultKubeletServingGetUsages,
		CertificateStore:    servingStore,
		CertificateRotation: counter{&k.servingRotations},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("serving certificate manager: %w", err)
	}

	if o.Serve {
		if err := k.serveTLS(); err != nil {
			cancel()
			return nil, err
		}
	}
	k.client.Start()
	k.wg.Go(func() { k.afterClientCertificate(ctx) })
	return k, nil
}

// serveTLS accepts TLS connections with the current serving certificate;
// before there is one, handshakes fail, as a kubelet's do.
func (k *Kubelet) serveTLS() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("serving endpoint: %w", err)
	}
	k.listener = tls.NewListener(l, &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := k.serving.Current(); c != nil {
				return c, nil
			}
			return nil, errors.New("no serving certificate yet")
		},
	})
	k.wg.Go(func() {
		for {
			c, err := k.listener.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	})
	return nil
}

// ServingAddr is the serving endpoint's address ("" without Serve).
func (k *Kubelet) ServingAddr() string {
	if k.listener == nil {
		return ""
	}
	return k.listener.Addr().String()
}

// afterClientCertificate waits for the first client certificate, then starts
// the serving certificate manager and registers the Node.
func (k *Kubelet) afterClientCertificate(ctx context.Context) {
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return k.client.Current() != nil, nil
	}); err != nil {
		return
	}
	k.serving.Start()
	if d := k.opts.RegisterDelay; d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	_ = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		return k.register(ctx) == nil, nil
	})
}

// register creates or updates the Node with its addresses, as the node.
func (k *Kubelet) register(ctx context.Context) error {
	cs, err := k.clientsetWith(k.client.Current())
	if err != nil {
		return err
	}
	nodes := cs.CoreV1().Nodes()
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName}, Spec: corev1.NodeSpec{Taints: k.opts.RegisterWithTaints}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		n, err = nodes.Get(ctx, k.opts.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	n.Status.Addresses = k.opts.Addresses
	if k.listener != nil {
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.listener.Addr().(*net.TCPAddr).Port) //nolint:gosec // a TCP port
	}
	if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return nil
}

// clientsetWith returns a clientset authenticated with a client certificate.
func (k *Kubelet) clientsetWith(cert *tls.Certificate) (kubernetes.Interface, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no client certificate yet")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	cfg := &rest.Config{
		Host: k.opts.Bootstrap.Host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   k.opts.Bootstrap.CAData,
			CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
			KeyData:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	}
	return kubernetes.NewForConfig(cfg)
}

// Stop stops both certificate managers.
func (k *Kubelet) Stop() {
	k.cancel()
	if k.listener != nil {
		_ = k.listener.Close()
	}
	k.client.Stop()
	k.serving.Stop()
	k.wg.Wait()
}

// Name is the node's name.
func (k *Kubelet) Name() string { return k.opts.NodeName }

// ClientCertificate and ServingCertificate return the current leaf
// certificates, or nil.
func (k *Kubelet) ClientCertificate() *x509.Certificate { return leaf(k.client.Current()) }

// ServingCertificate returns the current serving leaf certificate, or nil.
func (k *Kubelet) ServingCertificate() *x509.Certificate { return leaf(k.serving.Current()) }

// Rotations counts certificates replaced after the first, per kind.
func (k *Kubelet) Rotations() (client, serving int) {
	return int(k.clientRotations.Load()), int(k.servingRotations.Load())
}

// ExpectedSANs are the names and addresses the serving certificate should
// carry.
func (k *Kubelet) ExpectedSANs() ([]string, []net.IP) {
	return addressesToHostnamesAndIPs(k.opts.Addresses)
}

func leaf(c *tls.Certificate) *x509.Certificate {
	if c == nil {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	if len(c.Certificate) == 0 {
		return nil
	}
	l, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return l
}

// Addresses gives node number i an IPv4, an IPv6 and a host name, as a
// dual-stack node reports them.
func Addresses(name string, i int) []corev1.NodeAddress {
	return []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.%d.%d", i/256, i%256)},
		{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("fd00::%x", i)},
		{Type: corev1.NodeHostName, Address: name + ".nodes.example.com"},
	}
}

// addressesToHostnamesAndIPs turns Node addresses into serving SANs exactly
// as the kubelet does. Copied from k8s.io/kubernetes v1.37.2,
// pkg/kubelet/certificate/kubelet.go (Apache 2.0).
func addressesToHostnamesAndIPs(addresses []corev1.NodeAddress) (dnsNames []string, ips []net.IP) {
	seenDNSNames := map[string]bool{}
	seenIPs := map[string]bool{}
	for _, address := range addresses {
		if len(address.Address) == 0 {
			continue
		}
		switch address.Type {
		case corev1.NodeHostName:
			if ip := net.ParseIP(address.Address); ip != nil {
				seenIPs[address.Address] = true
			} else {
				seenDNSNames[address.Address] = true
			}
		case corev1.NodeExternalIP, corev1.NodeInternalIP:
			if ip := net.ParseIP(address.Address); ip != nil {
				seenIPs[address.Address] = true
			}
		case corev1.NodeExternalDNS, corev1.NodeInternalDNS:
			seenDNSNames[address.Address] = true
		}
	}
	for dnsName := range seenDNSNames {
		dnsNames = append(dnsNames, dnsName)
	}
	for ip := range seenIPs {
		ips = append(ips, net.ParseIP(ip))
	}
	sort.Strings(dnsNames)
	sort.Slice(ips, func(i, j int) bool { return ips[i].String() < ips[j].String() })
	return dnsNames, ips
}
