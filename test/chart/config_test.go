package chart

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

// controllerConfig parses the rendered ConfigMap's config.yaml with the
// controller's own loader, which refuses what the binary would refuse.
func controllerConfig(t *testing.T, m *manifest) *config.ControllerConfig {
	t.Helper()
	data, ok := m.configMap(t).Data["config.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no config.yaml")
	}
	cfg, _, err := config.Parse([]byte(data), "the ConfigMap's config.yaml")
	if err != nil {
		t.Fatalf("the controller would refuse its configuration: %v\n%s", err, data)
	}
	return cfg
}

func TestValuesConfigHoldsTheControllersDefaults(t *testing.T) {
	t.Parallel()
	want, _, err := config.Parse(nil, "(defaults)")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, controllerConfig(t, render(t, "")), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("values.yaml's config differs from the controller's defaults (-defaults +chart):\n%s", diff)
	}
}

func TestConfigMapHoldsAConfigurationTheControllerAccepts(t *testing.T) {
	defaultSigners := []string{"kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet"}
	tests := []struct {
		name            string
		values          string
		certFile        string
		keyFile         string
		signers         []string
		nodeClient      bool
		serving         bool
		mode            config.Mode
		cleanerDisabled bool
	}{
		{
			name:     "the defaults sign with the CA Secret's mount",
			certFile: caDir + "/tls.crt", keyFile: caDir + "/tls.key", signers: defaultSigners, nodeClient: true, serving: true, mode: config.ModeEnforce,
		},
		{
			name: "an added kube-apiserver-client signer uses the CA Secret's mount too",
			values: `config:
  signers:
    - name: kubernetes.io/kubelet-serving
    - name: kubernetes.io/kube-apiserver-client-kubelet
    - name: kubernetes.io/kube-apiserver-client
      duration: 24h`,
			certFile: caDir + "/tls.crt", keyFile: caDir + "/tls.key",
			signers:    []string{"kubernetes.io/kubelet-serving", "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kube-apiserver-client"},
			nodeClient: true, serving: true, mode: config.ModeEnforce,
		},
		{
			name:     "serving approval can be turned off",
			values:   "config: {approver: {kubeletServing: {enabled: false}}}",
			certFile: caDir + "/tls.crt", keyFile: caDir + "/tls.key", signers: defaultSigners, nodeClient: true, mode: config.ModeEnforce,
		},
		{
			name:     "a user's CA files are kept",
			values:   "config: {ca: {certFile: /pki/ca.crt, keyFile: /pki/ca.key}}",
			certFile: "/pki/ca.crt", keyFile: "/pki/ca.key", signers: defaultSigners, nodeClient: true, serving: true, mode: config.ModeEnforce,
		},
		{
			name:     "dry run and no cleaner reach the controller",
			values:   "config: {approver: {mode: dryRun}, cleaner: {enabled: false}}",
			certFile: caDir + "/tls.crt", keyFile: caDir + "/tls.key", signers: defaultSigners, nodeClient: true, serving: true,
			mode: config.ModeDryRun, cleanerDisabled: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := controllerConfig(t, render(t, tt.values))
			if cfg.CA.CertFile != tt.certFile || cfg.CA.KeyFile != tt.keyFile {
				t.Errorf("ca = %+v, want %s and %s", *cfg.CA, tt.certFile, tt.keyFile)
			}
			var signers []string
			for _, s := range cfg.SignerConfigs() {
				signers = append(signers, s.Name)
				if s.CertFile != tt.certFile {
					t.Errorf("signer %s signs with %s, want %s", s.Name, s.CertFile, tt.certFile)
				}
			}
			if diff := cmp.Diff(tt.signers, signers); diff != "" {
				t.Errorf("signers (-want +got):\n%s", diff)
			}
			a := cfg.Approver
			if a.NodeClient.Enabled != tt.nodeClient || a.KubeletServing.Enabled != tt.serving || a.Mode != tt.mode || cfg.Cleaner.Enabled == tt.cleanerDisabled {
				t.Errorf("nodeClient %v serving %v mode %s cleaner %v, want %v %v %s %v",
					a.NodeClient.Enabled, a.KubeletServing.Enabled, a.Mode, cfg.Cleaner.Enabled, tt.nodeClient, tt.serving, tt.mode, !tt.cleanerDisabled)
			}
		})
	}
}

func TestConfigChecksumRollsThePodsOnlyWhenTheConfigurationChanges(t *testing.T) {
	checksum := func(t *testing.T, values string) string {
		t.Helper()
		return render(t, values).deployment(t).Spec.Template.Annotations["checksum/config"]
	}
	tests := []struct {
		name    string
		values  string
		changes bool
	}{
		{"a configuration change changes the checksum", "config: {approver: {gracePeriod: 10m}}", true},
		{"a signer change changes the checksum", "config: {signers: [{name: kubernetes.io/kubelet-serving}]}", true},
		{"a replica count change keeps the checksum", "replicaCount: 3", false},
		{"a log level change keeps the checksum", "logLevel: debug", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before, after := checksum(t, ""), checksum(t, tt.values)
			if before == "" || (before != after) != tt.changes {
				t.Errorf("checksum before %q after %q, want a change: %v", before, after, tt.changes)
			}
		})
	}
}
