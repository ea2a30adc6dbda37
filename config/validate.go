package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// Bounds that validation enforces.
const (
	minSignerDuration = time.Minute
	warnSignerBelow   = 10 * time.Minute
	maxBackdate       = time.Hour
	maxWorkers        = 256
)

var ecdsaCurves = []string{"P-256", "P-384", "P-521"}

var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

// Validate checks c (defaults already applied) and returns every problem with
// its field path, and warnings about settings that work but deserve a look.
func Validate(c *ControllerConfig) (field.ErrorList, []string) {
	var errs field.ErrorList
	var warns []string
	if c.APIVersion != APIVersion {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), c.APIVersion, "must be "+APIVersion))
	}
	if c.Kind != Kind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), c.Kind, "must be "+Kind))
	}
	e, w := validateApprover(&c.Approver, field.NewPath("approver"))
	errs, warns = append(errs, e...), append(warns, w...)
	e, w = validateSigners(c, field.NewPath("signers"))
	errs, warns = append(errs, e...), append(warns, w...)
	errs = append(errs, validateCleaner(&c.Cleaner, c.Approver.GracePeriod.Duration, field.NewPath("cleaner"))...)
	errs = append(errs, validateManager(&c.Manager, field.NewPath("manager"))...)
	errs = append(errs, validateAudit(c, field.NewPath("audit"))...)
	return errs, warns
}

func validateAudit(c *ControllerConfig, p *field.Path) field.ErrorList {
	a := &c.Audit
	if !a.Enabled {
		return nil
	}
	errs := positiveDuration(p.Child("interval"), a.Interval.Duration, time.Minute)
	errs = append(errs, positiveDuration(p.Child("timeout"), a.Timeout.Duration, 0)...)
	if a.Timeout.Duration > 30*time.Second {
		errs = append(errs, field.Invalid(p.Child("timeout"), a.Timeout.Duration.String(), "must be at most 30s"))
	}
	if a.Concurrency < 1 || a.Concurrency > 64 {
		errs = append(errs, field.Invalid(p.Child("concurrency"), a.Concurrency, "must be between 1 and 64"))
	}
	if !slices.ContainsFunc(c.Signers, func(s Signer) bool { return s.Name == certificatesv1.KubeletServingSignerName }) {
		errs = append(errs, field.Invalid(p.Child("enabled"), true, "the audit checks served certificates against the kubernetes.io/kubelet-serving signer's CA: list that signer"))
	}
	return errs
}

func validateApprover(a *Approver, p *field.Path) (field.ErrorList, []string) {
	var errs field.ErrorList
	var warns []string
	switch a.Mode {
	case ModeEnforce:
	case ModeDryRun:
		warns = append(warns, "approver.mode is dryRun: decisions are logged and reported but no CSR is approved or denied")
	default:
		errs = append(errs, field.NotSupported(p.Child("mode"), a.Mode, []Mode{ModeEnforce, ModeDryRun}))
	}
	errs = append(errs, positiveDuration(p.Child("gracePeriod"), a.GracePeriod.Duration, 0)...)
	errs = append(errs, positiveDuration(p.Child("retryInterval"), a.RetryInterval.Duration, time.Second)...)
	if a.MaxPendingPerNode < 0 {
		errs = append(errs, field.Invalid(p.Child("maxPendingPerNode"), a.MaxPendingPerNode, "must be 0 (no cap) or more"))
	}

	k := p.Child("keys")
	if a.Keys.RSAMinBits < 2048 || a.Keys.RSAMinBits > 16384 {
		errs = append(errs, field.Invalid(k.Child("rsaMinBits"), a.Keys.RSAMinBits, "must be between 2048 and 16384"))
	}
	if a.Keys.RSAMaxBits < max(a.Keys.RSAMinBits, 2048) || a.Keys.RSAMaxBits > 16384 {
		errs = append(errs, field.Invalid(k.Child("rsaMaxBits"), a.Keys.RSAMaxBits, fmt.Sprintf("must be between rsaMinBits (%d) and 16384: it bounds the cost of a signature check", a.Keys.RSAMinBits)))
	}
	for i, c := range a.Keys.ECDSACurves {
		if !slices.Contains(ecdsaCurves, c) {
			errs = append(errs, field.NotSupported(k.Child("ecdsaCurves").Index(i), c, ecdsaCurves))
		} else if slices.Index(a.Keys.ECDSACurves, c) != i {
			errs = append(errs, field.Duplicate(k.Child("ecdsaCurves").Index(i), c))
		}
	}

	nc := p.Child("nodeClient")
	for _, f := range []struct {
		name, value string
	}{{"onInvalid", a.NodeClient.OnInvalid}, {"onUnauthorized", a.NodeClient.OnUnauthorized}} {
		if f.value != string(approver.DenyViolation) && f.value != string(approver.LeavePending) {
			errs = append(errs, field.NotSupported(nc.Child(f.name), f.value, []string{string(approver.DenyViolation), string(approver.LeavePending)}))
		}
	}

	if ttl := a.NodeClient.AuthorizationCacheTTL.Duration; ttl < 0 || ttl > 5*time.Minute {
		errs = append(errs, field.Invalid(nc.Child("authorizationCacheTTL"), ttl.String(), "must be between 0s (off) and 5m"))
	}

	if len(a.Keys.ECDSACurves) == 0 {
		warns = append(warns, "approver.keys.ecdsaCurves is empty: ECDSA keys, which kubelets generate by default, are denied")
	}
	e, w := validateServing(&a.KubeletServing, p.Child("kubeletServing"))
	errs, warns = append(errs, e...), append(warns, w...)
	if a.NodeClient.OnInvalid == string(approver.LeavePending) || a.NodeClient.OnUnauthorized == string(approver.LeavePending) {
		warns = append(warns, "approver.nodeClient leaves some client CSRs pending: make sure another approver decides them")
	}
	return errs, warns
}

func validateServing(ks *KubeletServing, s *field.Path) (field.ErrorList, []string) {
	var errs field.ErrorList
	var warns []string
	if ks.OnInvalid != string(approver.DenyViolation) && ks.OnInvalid != string(approver.LeavePending) {
		errs = append(errs, field.NotSupported(s.Child("onInvalid"), ks.OnInvalid, []string{string(approver.DenyViolation), string(approver.LeavePending)}))
	} else if ks.OnInvalid == string(approver.LeavePending) {
		warns = append(warns, "approver.kubeletServing.onInvalid is leavePending: make sure another approver decides the serving CSRs this one refuses")
	}
	if ks.NonNodeRequesters != string(approver.DenyNonNodeRequesters) && ks.NonNodeRequesters != string(approver.IgnoreNonNodeRequesters) {
		errs = append(errs, field.NotSupported(s.Child("nonNodeRequesters"), ks.NonNodeRequesters, []string{string(approver.DenyNonNodeRequesters), string(approver.IgnoreNonNodeRequesters)}))
	}
	if ks.MaxSANs < 1 || ks.MaxSANs > 1000 {
		errs = append(errs, field.Invalid(s.Child("maxSANs"), ks.MaxSANs, "must be between 1 and 1000"))
	}
	if ks.ClusterDomain != "" {
		for _, msg := range validation.IsDNS1123Subdomain(approver.CanonicalDNS(ks.ClusterDomain)) {
			errs = append(errs, field.Invalid(s.Child("clusterDomain"), ks.ClusterDomain, msg))
		}
	}
	for i, suffix := range ks.DNSSuffixes {
		c := canonicalSuffix(suffix)
		path := s.Child("dnsSuffixes").Index(i)
		if msgs := validation.IsDNS1123Subdomain(c); len(msgs) > 0 {
			errs = append(errs, field.Invalid(path, suffix, msgs[0]))
		} else if !strings.Contains(c, ".") {
			errs = append(errs, field.Invalid(path, suffix, "must have at least two labels; a single label would admit names under a whole top-level domain"))
		}
	}
	for i, pattern := range ks.DNSPatterns {
		if _, err := compilePattern(pattern); err != nil {
			errs = append(errs, field.Invalid(s.Child("dnsPatterns").Index(i), pattern, err.Error()))
		}
	}
	for i, cidr := range ks.IPCIDRs {
		path := s.Child("ipCIDRs").Index(i)
		if pr, err := parseCIDR(cidr); err != nil {
			errs = append(errs, field.Invalid(path, cidr, err.Error()))
		} else if pr.Bits() == 0 {
			errs = append(errs, field.Invalid(path, cidr, "must not admit every address"))
		}
	}
	for i, name := range ks.DeniedNames {
		if msgs := validation.IsDNS1123Subdomain(canonicalSuffix(name)); len(msgs) > 0 {
			errs = append(errs, field.Invalid(s.Child("deniedNames").Index(i), name, msgs[0]))
		}
	}
	for _, list := range []struct {
		name  string
		cidrs []string
	}{{"deniedCIDRs", ks.DeniedCIDRs}, {"sharedCIDRs", ks.SharedCIDRs}, {"requiredCIDRs", ks.RequiredCIDRs}} {
		for i, cidr := range list.cidrs {
			if _, err := parseCIDR(cidr); err != nil {
				errs = append(errs, field.Invalid(s.Child(list.name).Index(i), cidr, err.Error()))
			}
		}
	}
	if t := ks.StartupTaint; t != nil {
		tp := s.Child("startupTaint")
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(tp.Child("key"), t.Key, msg))
		}
		if !slices.Contains(taintEffects, t.Effect) {
			errs = append(errs, field.NotSupported(tp.Child("effect"), t.Effect, taintEffects))
		}
	}
	extraNames := len(ks.DNSSuffixes) > 0 || len(ks.DNSPatterns) > 0
	switch {
	case ks.DNSResolution.Enabled:
		errs = append(errs, positiveDuration(s.Child("dnsResolution", "timeout"), ks.DNSResolution.Timeout.Duration, 0)...)
		if t := ks.DNSResolution.Timeout.Duration; t > 30*time.Second {
			errs = append(errs, field.Invalid(s.Child("dnsResolution", "timeout"), t.String(), "must be at most 30s"))
		}
		if !extraNames {
			warns = append(warns, "approver.kubeletServing.dnsResolution is enabled but no dnsSuffixes or dnsPatterns are set, so no name is ever resolved")
		}
	case extraNames:
		warns = append(warns, "approver.kubeletServing admits names by dnsSuffixes or dnsPatterns without dnsResolution: any node may get a certificate for such a name that no other Node lists; enable dnsResolution to tie each name to the node's IPs")
	}
	return errs, warns
}

// parseCIDR reads an address range as the approver compares it: request
// addresses are canonical, IPv4 in IPv4 form, so an IPv4-mapped IPv6 range
// would never match anything.
func parseCIDR(cidr string) (netip.Prefix, error) {
	pr, err := netip.ParsePrefix(cidr)
	if err != nil {
		return pr, fmt.Errorf("must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32")
	}
	if pr.Addr().Is4In6() {
		return pr, fmt.Errorf("is an IPv4-mapped IPv6 range; write it in IPv4 form, such as %s", netip.PrefixFrom(pr.Addr().Unmap(), max(pr.Bits()-96, 0)))
	}
	return pr.Masked(), nil
}

func validateSigners(c *ControllerConfig, p *field.Path) (field.ErrorList, []string) {
	var errs field.ErrorList
	var warns []string
	seen := map[string]bool{}
	configMaps := map[TrustConfigMap]string{}
	for i := range c.Signers {
		s := &c.Signers[i]
		sp := p.Index(i)
		switch {
		case !slices.Contains(signer.Names, s.Name):
			errs = append(errs, field.NotSupported(sp.Child("name"), s.Name, signer.Names))
		case seen[s.Name]:
			errs = append(errs, field.Duplicate(sp.Child("name"), s.Name))
		}
		seen[s.Name] = true
		ca, caPath := c.caOf(s), field.NewPath("ca")
		if s.CA != nil {
			caPath = sp.Child("ca")
		}
		if ca.CertFile == "" {
			errs = append(errs, field.Required(caPath.Child("certFile"), "the CA certificate file of "+s.Name))
		}
		if ca.KeyFile == "" {
			errs = append(errs, field.Required(caPath.Child("keyFile"), "the CA private key file of "+s.Name))
		}
		d, minD, back := s.Duration.Duration, s.MinDuration.Duration, s.Backdate.Duration
		if d < minSignerDuration {
			errs = append(errs, field.Invalid(sp.Child("duration"), d.String(), "must be at least "+minSignerDuration.String()))
		} else if d < warnSignerBelow {
			warns = append(warns, fmt.Sprintf("%s is %s, below %s: kubelets will rotate very often; use this only for demos and tests", sp.Child("duration"), d, warnSignerBelow))
		}
		if minD < minSignerDuration {
			errs = append(errs, field.Invalid(sp.Child("minDuration"), minD.String(), "must be at least "+minSignerDuration.String()))
		} else if minD > d && d >= minSignerDuration {
			errs = append(errs, field.Invalid(sp.Child("minDuration"), minD.String(), "must not exceed duration ("+d.String()+")"))
		}
		if back < 0 || back > maxBackdate {
			errs = append(errs, field.Invalid(sp.Child("backdate"), back.String(), "must be between 0s and "+maxBackdate.String()))
		}
		errs = append(errs, validateTrustBundle(s, sp.Child("trustBundle"))...)
		if cm := s.TrustBundle.ConfigMap; cm != nil && s.TrustBundle.Enabled != nil && *s.TrustBundle.Enabled {
			if other, dup := configMaps[*cm]; dup {
				errs = append(errs, field.Duplicate(sp.Child("trustBundle", "configMap"), cm.Namespace+"/"+cm.Name+" (also "+other+"'s)"))
			}
			configMaps[*cm] = s.Name
		}
		if _, err := parseJitter(s.Jitter); err != nil {
			errs = append(errs, field.Invalid(sp.Child("jitter"), s.Jitter, err.Error()))
		}
	}
	if len(c.Signers) == 0 {
		warns = append(warns, "signers is empty: no certificate will be issued, only approvals")
	}
	return errs, warns
}

// validateTrustBundle checks the names the API server will be given, so
// that a bad one fails at start, not at each publication.
func validateTrustBundle(s *Signer, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	tb := s.TrustBundle
	if tb.Enabled == nil || !*tb.Enabled {
		return nil
	}
	// The bundle is named signer prefix + name, and the API server wants the
	// name after the prefix to be a DNS subdomain.
	for _, msg := range validation.IsDNS1123Subdomain(tb.Name) {
		errs = append(errs, field.Invalid(p.Child("name"), tb.Name, msg))
	}
	if cm := tb.ConfigMap; cm != nil {
		if cm.Namespace == "" {
			errs = append(errs, field.Required(p.Child("configMap", "namespace"), "the namespace of the trust ConfigMap"))
		} else {
			for _, msg := range validation.IsDNS1123Label(cm.Namespace) {
				errs = append(errs, field.Invalid(p.Child("configMap", "namespace"), cm.Namespace, msg))
			}
		}
		for _, msg := range validation.IsDNS1123Subdomain(cm.Name) {
			errs = append(errs, field.Invalid(p.Child("configMap", "name"), cm.Name, msg))
		}
	}
	return errs
}

func validateCleaner(c *Cleaner, grace time.Duration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"deleteIssuedAfter", c.DeleteIssuedAfter.Duration},
		{"deleteDeniedAfter", c.DeleteDeniedAfter.Duration},
		{"deleteFailedAfter", c.DeleteFailedAfter.Duration},
		{"deletePendingAfter", c.DeletePendingAfter.Duration},
		{"deleteApprovedUnissuedAfter", c.DeleteApprovedUnissuedAfter.Duration},
	} {
		errs = append(errs, positiveDuration(p.Child(f.name), f.d, 0)...)
	}
	errs = append(errs, positiveDuration(p.Child("interval"), c.Interval.Duration, time.Second)...)
	if c.DeletePendingAfter.Duration > 0 && c.DeletePendingAfter.Duration < 15*time.Minute {
		errs = append(errs, field.Invalid(p.Child("deletePendingAfter"), c.DeletePendingAfter.Duration.String(),
			"must be at least 15m: a kubelet waits 15 minutes for a pending CSR"))
	} else if c.DeletePendingAfter.Duration < grace {
		errs = append(errs, field.Invalid(p.Child("deletePendingAfter"), c.DeletePendingAfter.Duration.String(),
			"must be at least approver.gracePeriod ("+grace.String()+"): the approver still retries a pending CSR that long"))
	}
	return errs
}

func validateManager(m *Manager, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	w := p.Child("workers")
	for _, f := range []struct {
		name string
		n    int
	}{{"approver", m.Workers.Approver}, {"signer", m.Workers.Signer}, {"cleaner", m.Workers.Cleaner}} {
		if f.n < 1 || f.n > maxWorkers {
			errs = append(errs, field.Invalid(w.Child(f.name), f.n, fmt.Sprintf("must be between 1 and %d", maxWorkers)))
		}
	}
	if m.ClientQPS <= 0 {
		errs = append(errs, field.Invalid(p.Child("clientQPS"), m.ClientQPS, "must be greater than 0"))
	}
	if m.ClientBurst < 1 {
		errs = append(errs, field.Invalid(p.Child("clientBurst"), m.ClientBurst, "must be at least 1"))
	}
	le, lp := &m.LeaderElection, p.Child("leaderElection")
	for _, msg := range validation.IsDNS1123Subdomain(le.LeaseName) {
		errs = append(errs, field.Invalid(lp.Child("leaseName"), le.LeaseName, msg))
	}
	errs = append(errs, positiveDuration(lp.Child("retryPeriod"), le.RetryPeriod.Duration, 0)...)
	// client-go's leader elector refuses these combinations at run time;
	// say so at start with the field that is wrong.
	if le.RenewDeadline.Duration <= le.RetryPeriod.Duration*6/5 {
		errs = append(errs, field.Invalid(lp.Child("renewDeadline"), le.RenewDeadline.Duration.String(), "must be greater than 1.2 x retryPeriod"))
	}
	if le.LeaseDuration.Duration <= le.RenewDeadline.Duration {
		errs = append(errs, field.Invalid(lp.Child("leaseDuration"), le.LeaseDuration.Duration.String(), "must be greater than renewDeadline"))
	}
	return errs
}

var percentage = regexp.MustCompile(`^[0-9]{1,3}(\.[0-9]{1,3})?%$`)

// parseJitter reads a signer's jitter, a percentage such as "10%" or
// "2.5%", as a fraction; "" is 0.
func parseJitter(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	if !percentage.MatchString(s) {
		return 0, fmt.Errorf("must be a percentage such as 10%%")
	}
	pct, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("must be a percentage such as 10%%")
	}
	if pct > signer.MaxJitter*100 {
		return 0, fmt.Errorf("must be at most %g%%", signer.MaxJitter*100)
	}
	return pct / 100, nil
}

// positiveDuration requires d > 0 and, when floor > 0, d >= floor.
func positiveDuration(p *field.Path, d, floor time.Duration) field.ErrorList {
	if d <= 0 {
		return field.ErrorList{field.Invalid(p, d.String(), "must be greater than 0")}
	}
	if floor > 0 && d < floor {
		return field.ErrorList{field.Invalid(p, d.String(), "must be at least "+floor.String())}
	}
	return nil
}

// compilePattern anchors a DNS pattern so that it must match the whole name.
func compilePattern(pattern string) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, fmt.Errorf("must not be empty")
	}
	// Names are compared case-folded: a pattern written with capitals means
	// the same names in lower case.
	return regexp.Compile(`(?i)^(?:` + pattern + `)$`)
}

// canonicalSuffix folds a configured DNS suffix: lower case, no leading or
// trailing dot.
func canonicalSuffix(s string) string {
	return strings.TrimPrefix(approver.CanonicalDNS(s), ".")
}
