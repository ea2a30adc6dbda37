package signer

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Bundle is where a signer's trust anchors are published.
type Bundle struct {
	// Name is the ClusterTrustBundle's name (BundleName).
	Name string
	// ConfigMapNamespace and ConfigMapName name a ConfigMap that also gets
	// the anchors; empty when there is none.
	ConfigMapNamespace, ConfigMapName string
}

// BundleName is the name of signerName's ClusterTrustBundle: the API server
// requires the signer name, slashes turned to colons, as its prefix.
func BundleName(signerName, suffix string) string {
	return strings.ReplaceAll(signerName, "/", ":") + ":" + suffix
}

// DefaultConfigMapName is the name of a signer's trust ConfigMap when the
// configuration gives none: kubelet-serving-ca for kubernetes.io/kubelet-serving.
func DefaultConfigMapName(signerName string) string {
	_, name, _ := strings.Cut(signerName, "/")
	return name + "-ca"
}

// Trust is the content of a published trust bundle: its anchors, and the
// time until which each anchor that has left the CA files stays (keyed by
// AnchorID). It is what a verifier of the signer's certificates should
// trust now.
type Trust struct {
	Anchors []*x509.Certificate
	// Retained maps the AnchorID of each anchor that is no longer in the CA
	// files to the time it is dropped.
	Retained map[string]time.Time
}

// FirstDrop is when the first retained anchor goes; zero if none is.
func (t Trust) FirstDrop() time.Time {
	var first time.Time
	for _, until := range t.Retained {
		if first.IsZero() || until.Before(first) {
			first = until
		}
	}
	return first
}

// AnchorID identifies an anchor in Trust.Retained: the SHA-256 of its DER.
func AnchorID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// PlanTrust is what a bundle should hold at now, given the anchors of the CA
// files (current) and what the bundle holds (published). Every current
// anchor is in it. An anchor that has left the CA files stays until every
// certificate it may have signed has expired: it signed nothing after it
// left, and nothing it signed outlives maxLifetime after that, nor the
// anchor itself. The first plan that sees it gone fixes that time, and
// later plans keep it.
func PlanTrust(current []*x509.Certificate, published Trust, maxLifetime time.Duration, now time.Time) Trust {
	plan := Trust{Retained: map[string]time.Time{}}
	add := func(c *x509.Certificate) bool {
		if slices.ContainsFunc(plan.Anchors, c.Equal) {
			return false
		}
		plan.Anchors = append(plan.Anchors, c)
		return true
	}
	for _, c := range current {
		add(c)
	}
	type leaving struct {
		cert  *x509.Certificate
		until time.Time
	}
	var kept []leaving
	for _, c := range published.Anchors {
		if slices.ContainsFunc(plan.Anchors, c.Equal) || slices.ContainsFunc(kept, func(l leaving) bool { return l.cert.Equal(c) }) {
			continue
		}
		until, ok := published.Retained[AnchorID(c)]
		if !ok {
			until = now.Add(maxLifetime)
		}
		until = minTime(until, c.NotAfter)
		if now.Before(until) {
			kept = append(kept, leaving{c, until})
		}
	}
	// Sooner to go, sooner in the file; ties keep the published order.
	slices.SortStableFunc(kept, func(a, b leaving) int { return a.until.Compare(b.until) })
	for _, l := range kept {
		if add(l.cert) {
			plan.Retained[AnchorID(l.cert)] = ceilSecond(l.until)
		}
	}
	return plan
}

// ceilSecond rounds t up to a whole second, as the annotation records it:
// rounding down would drop an anchor before what it signed expires.
func ceilSecond(t time.Time) time.Time {
	r := t.UTC().Truncate(time.Second)
	if r.Before(t) {
		r = r.Add(time.Second)
	}
	return r
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// EncodeAnchors is the PEM of anchors, in order.
func EncodeAnchors(anchors []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range anchors {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

// DecodeAnchors parses a published bundle's PEM. A block that is not a
// certificate is skipped: the bundle is rebuilt from the CA files, and what
// this controller cannot read it does not keep.
func DecodeAnchors(bundle string) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := []byte(bundle); ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// EncodeRetained is the annotation value that records Trust.Retained;
// empty when nothing is retained.
func EncodeRetained(retained map[string]time.Time) string {
	if len(retained) == 0 {
		return ""
	}
	m := make(map[string]string, len(retained))
	for id, t := range retained {
		m[id] = t.UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(m) // a map of strings always encodes; keys sorted
	return string(b)
}

// DecodeRetained reads EncodeRetained's value. A value that does not parse
// is an error: the caller then treats every leaving anchor as leaving now,
// which keeps it for longest.
func DecodeRetained(value string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if value == "" {
		return out, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(value), &m); err != nil {
		return out, fmt.Errorf("retained anchors annotation: %w", err)
	}
	for id, s := range m {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return map[string]time.Time{}, fmt.Errorf("retained anchors annotation: %s: %w", id, err)
		}
		out[id] = t
	}
	return out, nil
}
