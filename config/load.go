package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// Error is a configuration that cannot be used: every problem found, each
// with its field path.
type Error struct {
	Source   string
	Problems []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("configuration %s is invalid:\n  %s", e.Source, strings.Join(e.Problems, "\n  "))
}

// Load reads, decodes, defaults and validates the configuration file at path.
// An empty path gives the defaults. Warnings are returned for the caller to
// log.
func Load(path string) (*ControllerConfig, []string, error) {
	if path == "" {
		return Parse(nil, "(defaults)")
	}
	data, err := os.ReadFile(path) //nolint:gosec // the path is the operator's --config flag
	if err != nil {
		return nil, nil, &Error{Source: path, Problems: []string{err.Error()}}
	}
	return Parse(data, path)
}

// Parse decodes data strictly over the defaults: an unknown or misspelled
// field, a duplicate key or a wrong type is an error. source names the data
// in errors.
func Parse(data []byte, source string) (*ControllerConfig, []string, error) {
	c := Default()
	var problems []string
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, nil, &Error{Source: source, Problems: []string{"not valid YAML: " + err.Error()}}
	}
	// A file must say what it is; only one without content (empty, or
	// comments only) stands for the defaults.
	if s := strings.TrimSpace(string(js)); s != "null" && s != "" {
		c.APIVersion, c.Kind = "", ""
		strict, err := kjson.UnmarshalStrict(js, c)
		if err != nil {
			return nil, nil, &Error{Source: source, Problems: []string{err.Error()}}
		}
		// Unknown and duplicate fields are reported together with what
		// validation finds in the rest, so one run shows every problem.
		for _, e := range strict {
			problems = append(problems, e.Error())
		}
	}
	setDefaults(c)
	errs, warns := Validate(c)
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		return nil, nil, &Error{Source: source, Problems: problems}
	}
	return c, warns, nil
}

// ApproverPolicy converts the approver section of a validated configuration.
func (c *ControllerConfig) ApproverPolicy() approver.Policy {
	a := &c.Approver
	s := &a.KubeletServing
	p := approver.Policy{
		NodeClient: approver.NodeClientPolicy{
			Enabled:                       a.NodeClient.Enabled,
			OnInvalid:                     approver.OnViolation(a.NodeClient.OnInvalid),
			OnUnauthorized:                approver.OnViolation(a.NodeClient.OnUnauthorized),
			AllowBootstrapForExistingNode: a.NodeClient.Bootstrap.AllowExistingNode,
		},
		Serving: approver.ServingPolicy{
			Enabled:           s.Enabled,
			OnInvalid:         approver.OnViolation(s.OnInvalid),
			NonNodeRequesters: approver.NonNodeRequesters(s.NonNodeRequesters),
			RequireIP:         s.RequireIP,
			MaxSANs:           s.MaxSANs,
			ClusterDomain:     approver.CanonicalDNS(s.ClusterDomain),
			ResolveDNS:        s.DNSResolution.Enabled,
		},
		Keys: approver.KeyPolicy{
			RSAMinBits:  a.Keys.RSAMinBits,
			RSAMaxBits:  a.Keys.RSAMaxBits,
			ECDSACurves: a.Keys.ECDSACurves,
			Ed25519:     a.Keys.Ed25519,
		},
		GracePeriod:       a.GracePeriod.Duration,
		RetryInterval:     a.RetryInterval.Duration,
		MaxPendingPerNode: a.MaxPendingPerNode,
	}
	for _, suffix := range s.DNSSuffixes {
		p.Serving.DNSSuffixes = append(p.Serving.DNSSuffixes, canonicalSuffix(suffix))
	}
	for _, pattern := range s.DNSPatterns {
		re, err := compilePattern(pattern)
		if err != nil {
			panic(fmt.Sprintf("config not validated: dnsPatterns %q: %v", pattern, err))
		}
		p.Serving.DNSPatterns = append(p.Serving.DNSPatterns, re)
	}
	for _, cidr := range s.IPCIDRs {
		p.Serving.IPPrefixes = append(p.Serving.IPPrefixes, mustParseCIDR(cidr))
	}
	for _, cidr := range s.RequiredCIDRs {
		p.Serving.RequiredPrefixes = append(p.Serving.RequiredPrefixes, mustParseCIDR(cidr))
	}
	for _, name := range s.DeniedNames {
		p.Serving.DeniedNames = append(p.Serving.DeniedNames, approver.CanonicalDNS(name))
	}
	for _, cidr := range s.DeniedCIDRs {
		p.Serving.DeniedPrefixes = append(p.Serving.DeniedPrefixes, mustParseCIDR(cidr))
	}
	for _, cidr := range s.SharedCIDRs {
		p.Serving.SharedPrefixes = append(p.Serving.SharedPrefixes, mustParseCIDR(cidr))
	}
	return p
}

// SignerConfigs converts the signers of a validated configuration.
func (c *ControllerConfig) SignerConfigs() []signer.Config {
	out := make([]signer.Config, 0, len(c.Signers))
	for _, s := range c.Signers {
		ca := c.caOf(&s)
		var bundle *signer.Bundle
		if tb := s.TrustBundle; tb.Enabled != nil && *tb.Enabled {
			bundle = &signer.Bundle{Name: signer.BundleName(s.Name, tb.Name)}
			if tb.ConfigMap != nil {
				bundle.ConfigMapNamespace, bundle.ConfigMapName = tb.ConfigMap.Namespace, tb.ConfigMap.Name
			}
		}
		jitter, err := parseJitter(s.Jitter)
		if err != nil {
			panic(fmt.Sprintf("config not validated: jitter %q: %v", s.Jitter, err))
		}
		out = append(out, signer.Config{
			Name:         s.Name,
			CertFile:     ca.CertFile,
			KeyFile:      ca.KeyFile,
			TrustFile:    ca.TrustFile,
			Bundle:       bundle,
			Duration:     s.Duration.Duration,
			MinDuration:  s.MinDuration.Duration,
			Backdate:     s.Backdate.Duration,
			IncludeChain: s.IncludeChain,
			Jitter:       jitter,
		})
	}
	return out
}

// caOf is the CA files of signer s: its own, else the top-level ones.
func (c *ControllerConfig) caOf(s *Signer) *CAFiles {
	if s.CA != nil {
		return s.CA
	}
	return c.CA
}

func mustParseCIDR(cidr string) netip.Prefix {
	pr, err := parseCIDR(cidr)
	if err != nil {
		panic(fmt.Sprintf("config not validated: %q %v", cidr, err))
	}
	return pr
}
