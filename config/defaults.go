package config

import (
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// Default CA files: where the Helm chart mounts the CA Secret.
const (
	DefaultCACertFile = "/etc/kubelet-csr-controller/ca/tls.crt"
	DefaultCAKeyFile  = "/etc/kubelet-csr-controller/ca/tls.key"
)

// DefaultTrustBundleName follows the signer prefix in a trust bundle's name.
const DefaultTrustBundleName = "kubelet-csr-controller"

// DefaultSigners are the signers of a configuration that lists none.
var DefaultSigners = []string{
	certificatesv1.KubeletServingSignerName,
	certificatesv1.KubeAPIServerClientKubeletSignerName,
}

func duration(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

// Default returns the configuration of an empty file. Loading decodes the file
// over it, so every field the file leaves out keeps its default.
//
// Workers and client limits are sized so that the controller is never the
// bottleneck: one CSR costs about five API requests, and a burst of a
// thousand CSRs should be limited by the API server, not by this process.
func Default() *ControllerConfig {
	p := approver.DefaultPolicy()
	return &ControllerConfig{
		APIVersion: APIVersion,
		Kind:       Kind,
		Approver: Approver{
			Mode:              ModeEnforce,
			GracePeriod:       duration(p.GracePeriod),
			RetryInterval:     duration(p.RetryInterval),
			MaxPendingPerNode: p.MaxPendingPerNode,
			Keys: Keys{
				RSAMinBits:  p.Keys.RSAMinBits,
				RSAMaxBits:  p.Keys.RSAMaxBits,
				ECDSACurves: p.Keys.ECDSACurves,
				Ed25519:     p.Keys.Ed25519,
			},
			NodeClient: NodeClient{
				Enabled:               p.NodeClient.Enabled,
				OnInvalid:             string(p.NodeClient.OnInvalid),
				OnUnauthorized:        string(p.NodeClient.OnUnauthorized),
				AuthorizationCacheTTL: duration(5 * time.Second),
				Bootstrap:             Bootstrap{AllowExistingNode: p.NodeClient.AllowBootstrapForExistingNode},
			},
			KubeletServing: KubeletServing{
				Enabled:           p.Serving.Enabled,
				OnInvalid:         string(p.Serving.OnInvalid),
				NonNodeRequesters: string(p.Serving.NonNodeRequesters),
				RequireIP:         p.Serving.RequireIP,
				MaxSANs:           p.Serving.MaxSANs,
				ClusterDomain:     p.Serving.ClusterDomain,
				DNSResolution:     DNSResolution{Timeout: duration(2 * time.Second)},
			},
		},
		Cleaner: Cleaner{
			Enabled:                     true,
			DeleteIssuedAfter:           duration(time.Hour),
			DeleteDeniedAfter:           duration(time.Hour),
			DeleteFailedAfter:           duration(time.Hour),
			DeletePendingAfter:          duration(24 * time.Hour),
			DeleteApprovedUnissuedAfter: duration(24 * time.Hour),
			DeleteExpired:               true,
			Interval:                    duration(time.Minute),
		},
		Audit: Audit{Interval: duration(10 * time.Minute), Timeout: duration(5 * time.Second), Concurrency: 8},
		Manager: Manager{
			Workers:     Workers{Approver: 16, Signer: 16, Cleaner: 2},
			ClientQPS:   1000,
			ClientBurst: 2000,
			LeaderElection: LeaderElection{
				LeaseName:     "kubelet-csr-controller",
				LeaseDuration: duration(15 * time.Second),
				RenewDeadline: duration(10 * time.Second),
				RetryPeriod:   duration(2 * time.Second),
			},
		},
	}
}

// setDefaults fills what decoding over Default cannot: the signer list and
// the fields of each listed signer.
func setDefaults(c *ControllerConfig) {
	if c.Signers == nil {
		for _, name := range DefaultSigners {
			c.Signers = append(c.Signers, Signer{Name: name})
		}
	}
	if c.CA == nil {
		c.CA = &CAFiles{CertFile: DefaultCACertFile, KeyFile: DefaultCAKeyFile}
	}
	for i := range c.Signers {
		s := &c.Signers[i]
		if s.Duration == nil {
			s.Duration = &metav1.Duration{Duration: signer.DefaultDuration}
		}
		if s.MinDuration == nil {
			// A short duration (a demo) brings the floor down with it.
			s.MinDuration = &metav1.Duration{Duration: max(min(signer.DefaultMinDuration, s.Duration.Duration), minSignerDuration)}
		}
		if s.Backdate == nil {
			s.Backdate = &metav1.Duration{Duration: signer.DefaultBackdate}
		}
		tb := &s.TrustBundle
		if tb.Enabled == nil {
			// Verifiers of kubelets (the API server, metrics-server) need
			// the serving CA; the client CA is already the API server's own.
			tb.Enabled = ptr.To(s.Name == certificatesv1.KubeletServingSignerName)
		}
		if tb.Name == "" {
			tb.Name = DefaultTrustBundleName
		}
		if tb.ConfigMap != nil && tb.ConfigMap.Name == "" {
			tb.ConfigMap.Name = signer.DefaultConfigMapName(s.Name)
		}
	}
}
