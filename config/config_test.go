package config_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

const header = "apiVersion: config.nodecsr.io/v1alpha1\nkind: ControllerConfig\n"

func TestSampleIsTheDefaults(t *testing.T) {
	t.Parallel()
	sample, warns, err := config.Load(filepath.Join("samples", "controller-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("the sample should load without warnings, got %q", warns)
	}
	empty, _, err := config.Parse(nil, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(empty, sample, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("the sample must document exactly the defaults (-empty +sample):\n%s", diff)
	}
	if diff := cmp.Diff(approver.DefaultPolicy(), empty.ApproverPolicy(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("an empty file must give approver.DefaultPolicy (-want +got):\n%s", diff)
	}
	commented, _, err := config.Parse([]byte("# nothing set yet\n\n  # really\n"), "comments")
	if err != nil {
		t.Fatalf("a file of comments only stands for the defaults too: %v", err)
	}
	if diff := cmp.Diff(empty, commented); diff != "" {
		t.Errorf("a file of comments only must give the defaults (-empty +comments):\n%s", diff)
	}
}

func TestThreeMistakesGiveThreeFieldPathErrors(t *testing.T) {
	t.Parallel()
	_, _, err := config.Parse([]byte(header+`
approver:
  mode: strict
signers:
  - name: kubernetes.io/kubelet-serving
  - name: kubernetes.io/kube-apiserver-client-kubelet
    duration: 30s
manager:
  workres: {approver: 4}
`), "test.yaml")
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{
		`unknown field "manager.workres"`,
		`approver.mode: Unsupported value: "strict": supported values: "enforce", "dryRun"`,
		`signers[1].duration: Invalid value: "30s": must be at least 1m0s`,
	}
	if diff := cmp.Diff(want, cerr.Problems); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(err.Error(), "test.yaml") {
		t.Errorf("the error should name the file: %v", err)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings, one per problem, in order
	}{
		{"a wrong apiVersion is refused", "apiVersion: v1\nkind: ControllerConfig\n", []string{"apiVersion: Invalid value"}},
		{"a missing kind is refused", "apiVersion: config.nodecsr.io/v1alpha1\n", []string{"kind: Invalid value"}},
		{"a duplicate key is refused", header + "approver:\n  mode: enforce\n  mode: dryRun\n", []string{`key "mode" already set`}},
		{"a wrong type is refused", header + "approver:\n  maxPendingPerNode: many\n", []string{"maxPendingPerNode"}},
		{"field names are case sensitive", header + "approver:\n  Mode: enforce\n", []string{`unknown field "approver.Mode"`}},
		{"an RSA floor below 2048 is refused", header + "approver:\n  keys: {rsaMinBits: 1024}\n", []string{"approver.keys.rsaMinBits"}},
		{"an unknown curve is refused", header + "approver:\n  keys: {ecdsaCurves: [P-224]}\n", []string{"approver.keys.ecdsaCurves[0]: Unsupported value"}},
		{"a repeated curve is refused", header + "approver:\n  keys: {ecdsaCurves: [P-256, P-256]}\n", []string{"approver.keys.ecdsaCurves[1]: Duplicate"}},
		{"an unknown onInvalid is refused", header + "approver:\n  nodeClient: {onInvalid: ignore}\n", []string{"approver.nodeClient.onInvalid: Unsupported value"}},
		{"a single-label DNS suffix is refused", header + "approver:\n  kubeletServing: {dnsSuffixes: [com]}\n", []string{"approver.kubeletServing.dnsSuffixes[0]: Invalid value: \"com\": must have at least two labels"}},
		{"a DNS suffix that is not a name is refused", header + "approver:\n  kubeletServing: {dnsSuffixes: [\"bad_suffix.example\"]}\n", []string{"approver.kubeletServing.dnsSuffixes[0]"}},
		{"a pattern that does not compile is refused", header + "approver:\n  kubeletServing: {dnsPatterns: [\"(\"]}\n", []string{"approver.kubeletServing.dnsPatterns[0]"}},
		{"a CIDR that does not parse is refused", header + "approver:\n  kubeletServing: {ipCIDRs: [10.0.0.0]}\n", []string{"approver.kubeletServing.ipCIDRs[0]"}},
		{"a CIDR admitting every address is refused", header + "approver:\n  kubeletServing: {ipCIDRs: [\"::/0\"]}\n", []string{"must not admit every address"}},
		{"an IPv4-mapped CIDR is refused with its IPv4 form", header + "approver:\n  kubeletServing: {ipCIDRs: [\"::ffff:10.0.0.0/104\"]}\n", []string{"write it in IPv4 form, such as 10.0.0.0/8"}},
		{"a denied name that is not a name is refused", header + "approver:\n  kubeletServing: {deniedNames: [\"api_server\"]}\n", []string{"approver.kubeletServing.deniedNames[0]"}},
		{"a shared CIDR that does not parse is refused", header + "approver:\n  kubeletServing: {sharedCIDRs: [nat]}\n", []string{"approver.kubeletServing.sharedCIDRs[0]"}},
		{"a denied CIDR that does not parse is refused", header + "approver:\n  kubeletServing: {deniedCIDRs: [10.96.0.1]}\n", []string{"approver.kubeletServing.deniedCIDRs[0]"}},
		{"a zero DNS timeout is refused when resolution is on", header + "approver:\n  kubeletServing: {dnsResolution: {enabled: true, timeout: 0s}}\n", []string{"approver.kubeletServing.dnsResolution.timeout"}},
		{"a start-up taint key that is not a qualified name is refused", header + "approver:\n  kubeletServing: {startupTaint: {key: \"bad key\", effect: NoSchedule}}\n", []string{"approver.kubeletServing.startupTaint.key"}},
		{"a start-up taint needs a known effect", header + "approver:\n  kubeletServing: {startupTaint: {key: node.example.com/no-cert}}\n", []string{"approver.kubeletServing.startupTaint.effect: Unsupported value: \"\""}},
		{"an audit more often than every minute is refused", header + "audit: {enabled: true, interval: 30s}\n", []string{"audit.interval: Invalid value: \"30s\": must be at least 1m0s"}},
		{"an audit timeout over 30s is refused", header + "audit: {enabled: true, timeout: 1m}\n", []string{"audit.timeout"}},
		{"an audit without concurrency is refused", header + "audit: {enabled: true, concurrency: 0}\n", []string{"audit.concurrency"}},
		{"an audit needs the kubelet-serving signer's CA", header + "audit: {enabled: true}\nsigners: []\n", []string{"audit.enabled"}},
		{"an unknown signer is refused", header + "signers: [{name: example.com/x}]\n", []string{"signers[0].name: Unsupported value"}},
		{"a repeated signer is refused", header + "signers: [{name: kubernetes.io/kubelet-serving}, {name: kubernetes.io/kubelet-serving}]\n", []string{"signers[1].name: Duplicate value"}},
		{"a signer without CA files is refused", header + "ca: {certFile: \"\", keyFile: \"\"}\nsigners: [{name: kubernetes.io/kubelet-serving}]\n", []string{"ca.certFile: Required value", "ca.keyFile: Required value"}},
		{"a signer's own CA is checked under its path", header + "signers: [{name: kubernetes.io/kubelet-serving, ca: {certFile: a.crt}}]\n", []string{"signers[0].ca.keyFile: Required value"}},
		{"minDuration above duration is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, duration: 1h, minDuration: 2h}]\n", []string{"signers[0].minDuration"}},
		{"a trust bundle name that is not a DNS subdomain is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {name: Bad_Name}}]\n", []string{"signers[0].trustBundle.name: Invalid value"}},
		{"a trust ConfigMap needs a namespace", header + "signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {configMap: {name: ca}}}]\n", []string{"signers[0].trustBundle.configMap.namespace: Required value"}},
		{"a trust ConfigMap's namespace must be a label", header + "signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {configMap: {namespace: kube.system}}}]\n", []string{"signers[0].trustBundle.configMap.namespace: Invalid value"}},
		{"two signers cannot share a trust ConfigMap", header + "signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {configMap: {namespace: a, name: ca}}}, {name: kubernetes.io/kube-apiserver-client-kubelet, trustBundle: {enabled: true, configMap: {namespace: a, name: ca}}}]\n", []string{"signers[1].trustBundle.configMap: Duplicate value"}},
		{"a disabled trust bundle is not checked", header + "signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {enabled: false, name: Bad_Name}}]\n", nil},
		{"a negative backdate is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, backdate: -1m}]\n", []string{"signers[0].backdate"}},
		{"a jitter without a percent sign is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, jitter: \"0.1\"}]\n", []string{"signers[0].jitter: Invalid value: \"0.1\": must be a percentage such as 10%"}},
		{"a negative jitter is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, jitter: \"-5%\"}]\n", []string{"signers[0].jitter"}},
		{"a jitter in exponent form is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, jitter: \"1e1%\"}]\n", []string{"signers[0].jitter"}},
		{"a jitter over half the lifetime is refused", header + "signers: [{name: kubernetes.io/kubelet-serving, jitter: \"50.5%\"}]\n", []string{"signers[0].jitter: Invalid value: \"50.5%\": must be at most 50%"}},
		{"a cleaner interval under a second is refused", header + "cleaner: {interval: 100ms}\n", []string{"cleaner.interval: Invalid value: \"100ms\": must be at least 1s"}},
		{"a pending age under the approver's grace period is refused", header + "approver: {gracePeriod: 1h}\ncleaner: {deletePendingAfter: 30m}\n", []string{"must be at least approver.gracePeriod (1h0m0s)"}},
		{"a pending age under 15m is refused", header + "cleaner: {deletePendingAfter: 5m}\n", []string{"cleaner.deletePendingAfter"}},
		{"zero workers are refused", header + "manager: {workers: {signer: 0}}\n", []string{"manager.workers.signer"}},
		{"renewDeadline must exceed 1.2 x retryPeriod", header + "manager: {leaderElection: {renewDeadline: 2s}}\n", []string{"manager.leaderElection.renewDeadline"}},
		{"leaseDuration must exceed renewDeadline", header + "manager: {leaderElection: {leaseDuration: 10s}}\n", []string{"manager.leaderElection.leaseDuration"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := config.Parse([]byte(tc.yaml), "t")
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want no problem, got %v", err)
				}
				return
			}
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want a *config.Error, got %v", err)
			}
			if len(cerr.Problems) != len(tc.want) {
				t.Fatalf("want %d problems, got %q", len(tc.want), cerr.Problems)
			}
			for i, w := range tc.want {
				if !strings.Contains(cerr.Problems[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, cerr.Problems[i], w)
				}
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	c, warns, err := config.Parse([]byte(header+`
approver:
  mode: dryRun
signers:
  - name: kubernetes.io/kubelet-serving
    duration: 2m
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "dryRun") || !strings.Contains(warns[1], "signers[0].duration") {
		t.Errorf("want a dryRun and a short-duration warning, got %q", warns)
	}
	_, warns, err = config.Parse([]byte(header+`
approver:
  keys: {ecdsaCurves: []}
  kubeletServing: {dnsSuffixes: [nodes.example.com]}
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "ecdsaCurves is empty") || !strings.Contains(warns[1], "without dnsResolution") {
		t.Errorf("want an empty-curves and a no-resolution warning, got %q", warns)
	}
	if got := c.Signers[0].MinDuration.Duration; got != 2*time.Minute {
		t.Errorf("a short duration should bring the default minDuration down with it, got %s", got)
	}
}

func TestConversion(t *testing.T) {
	t.Parallel()
	c, _, err := config.Parse([]byte(header+`
approver:
  maxPendingPerNode: 0
  nodeClient: {onUnauthorized: leavePending, bootstrap: {allowExistingNode: false}}
  kubeletServing:
    clusterDomain: Corp.K8s.
    dnsSuffixes: [".Nodes.Example.COM."]
    dnsPatterns: ["ip-[0-9-]+\\.ec2\\.internal"]
    ipCIDRs: [192.0.2.7/24]
    deniedNames: [API.Example.com., .svc.Corp.K8s]
    deniedCIDRs: [10.96.0.0/12]
    sharedCIDRs: [203.0.113.0/24]
    dnsResolution: {enabled: true}
ca: {certFile: /ca/all.crt, keyFile: /ca/all.key}
signers:
  - name: kubernetes.io/kubelet-serving
    duration: 24h
    backdate: 0s
    includeChain: true
    trustBundle: {name: v2, configMap: {namespace: kube-system}}
    jitter: 12.5%
  - name: kubernetes.io/kube-apiserver-client
    ca: {certFile: /ca/client.crt, keyFile: /ca/client.key, trustFile: /ca/next.crt}
  - name: kubernetes.io/kube-apiserver-client-kubelet
    trustBundle: {enabled: true}
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	p := c.ApproverPolicy()
	if p.MaxPendingPerNode != 0 || p.NodeClient.OnUnauthorized != approver.LeavePending || p.NodeClient.AllowBootstrapForExistingNode {
		t.Errorf("approver fields not converted: %+v", p)
	}
	if diff := cmp.Diff([]string{"nodes.example.com"}, p.Serving.DNSSuffixes); diff != "" {
		t.Errorf("suffixes are folded: %s", diff)
	}
	if p.Serving.ClusterDomain != "corp.k8s" {
		t.Errorf("cluster domain = %q, want corp.k8s", p.Serving.ClusterDomain)
	}
	if len(p.Serving.DNSPatterns) != 1 || !p.Serving.DNSPatterns[0].MatchString("ip-10-0-0-1.ec2.internal") || p.Serving.DNSPatterns[0].MatchString("x.ip-10-0-0-1.ec2.internal") {
		t.Errorf("patterns must match whole names only")
	}
	if diff := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, p.Serving.IPPrefixes, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("CIDRs are masked: %s", diff)
	}
	if !p.Serving.DNSPatterns[0].MatchString("ip-10-0-0-1.EC2.internal") {
		t.Errorf("patterns match case-insensitively")
	}
	if diff := cmp.Diff([]string{"api.example.com", ".svc.corp.k8s"}, p.Serving.DeniedNames); diff != "" {
		t.Errorf("denied names are folded, leading dots kept: %s", diff)
	}
	if diff := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, p.Serving.DeniedPrefixes, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("denied CIDRs: %s", diff)
	}
	if len(p.Serving.SharedPrefixes) != 1 || p.Serving.SharedPrefixes[0] != netip.MustParsePrefix("203.0.113.0/24") {
		t.Errorf("shared CIDRs: %v", p.Serving.SharedPrefixes)
	}
	want := []signer.Config{
		{Name: "kubernetes.io/kubelet-serving", CertFile: "/ca/all.crt", KeyFile: "/ca/all.key", Duration: 24 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 0, IncludeChain: true, Jitter: 0.125,
			Bundle: &signer.Bundle{Name: "kubernetes.io:kubelet-serving:v2", ConfigMapNamespace: "kube-system", ConfigMapName: "kubelet-serving-ca"}},
		// The client signers publish no bundle unless asked.
		{Name: "kubernetes.io/kube-apiserver-client", CertFile: "/ca/client.crt", KeyFile: "/ca/client.key", TrustFile: "/ca/next.crt", Duration: signer.DefaultDuration, MinDuration: signer.DefaultMinDuration, Backdate: signer.DefaultBackdate},
		{Name: "kubernetes.io/kube-apiserver-client-kubelet", CertFile: "/ca/all.crt", KeyFile: "/ca/all.key", Duration: signer.DefaultDuration, MinDuration: signer.DefaultMinDuration, Backdate: signer.DefaultBackdate,
			Bundle: &signer.Bundle{Name: "kubernetes.io:kube-apiserver-client-kubelet:kubelet-csr-controller"}},
	}
	if diff := cmp.Diff(want, c.SignerConfigs()); diff != "" {
		t.Errorf("SignerConfigs() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, _, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("want a no-such-file error, got %v", err)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("approver: [unbalanced"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
		t.Errorf("want a YAML error, got %v", err)
	}
}
