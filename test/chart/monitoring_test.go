package chart

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Prometheus Operator's objects, as far as the chart writes them (decoded
// refusing unknown fields).
type serviceMonitor struct {
	APIVersion string
	Kind       string
	Metadata   metav1.ObjectMeta
	Spec       struct {
		NamespaceSelector struct{ MatchNames []string }
		Selector          metav1.LabelSelector
		Endpoints         []struct {
			Port, Path, Interval, ScrapeTimeout string
			Scheme, BearerTokenFile             string
			TLSConfig                           map[string]any
			Relabelings, MetricRelabelings      []map[string]any
		}
	}
}

type prometheusRule struct {
	APIVersion string
	Kind       string
	Metadata   metav1.ObjectMeta
	Spec       struct {
		Groups []struct {
			Name  string
			Rules []alertRule
		}
	}
}

type alertRule struct {
	Alert, Expr, For    string
	Labels, Annotations map[string]string
}

const monitoringOn = "serviceMonitor: {enabled: true}\nprometheusRule: {enabled: true}\n"

func TestMonitoringIsOffByDefault(t *testing.T) {
	t.Parallel()
	m := render(t, "")
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
		if len(m.docs[kind]) > 0 {
			t.Errorf("the defaults render a %s; the Prometheus Operator's CRDs may not exist", kind)
		}
	}
}

func TestServiceMonitorScrapesTheMetricsService(t *testing.T) {
	t.Parallel()
	m := render(t, monitoringOn)
	var sm serviceMonitor
	if !m.one(t, "ServiceMonitor", &sm) {
		t.Fatal("no ServiceMonitor")
	}
	svc := &corev1.Service{}
	if !m.one(t, "Service", svc) {
		t.Fatal("no Service")
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s; the Service has %q", k, v, svc.Labels[k])
		}
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("the ServiceMonitor does not scrape the Service's port %q at /metrics: %+v", svc.Spec.Ports[0].Name, sm.Spec)
	}
	if diff := cmp.Diff([]string{namespace}, sm.Spec.NamespaceSelector.MatchNames); diff != "" {
		t.Errorf("namespaceSelector (-want +got):\n%s", diff)
	}
	// Secure metrics (the default) are scraped over HTTPS with Prometheus'
	// token; plain ones over HTTP with none.
	e := sm.Spec.Endpoints[0]
	if e.Scheme != "https" || e.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" || e.TLSConfig["insecureSkipVerify"] != true {
		t.Errorf("secure metrics: scheme %q, bearerTokenFile %q, tlsConfig %v", e.Scheme, e.BearerTokenFile, e.TLSConfig)
	}
	var plain serviceMonitor
	render(t, monitoringOn+"metrics: {secure: false}").one(t, "ServiceMonitor", &plain)
	if e := plain.Spec.Endpoints[0]; e.Scheme != "" || e.BearerTokenFile != "" || e.TLSConfig != nil {
		t.Errorf("plain metrics: scheme %q, bearerTokenFile %q, tlsConfig %v", e.Scheme, e.BearerTokenFile, e.TLSConfig)
	}
}

func TestPrometheusRuleAlertsOnWhatStopsKubeletsFromGettingCertificates(t *testing.T) {
	// Each alert's expression must contain these pieces.
	leader := `leader_election_master_status{name="kubelet-csr-controller", namespace="` + namespace + `"}`
	all := map[string][]string{
		"KubeletCSRPendingTooLong":     {"kubelet_csr_controller_oldest_pending_age_seconds", "> 900"},
		"KubeletCSRCAExpiringSoon":     {"kubelet_csr_controller_ca_not_after_timestamp_seconds", "- time() < 30 * 24 * 3600"},
		"KubeletCSRCAExpiringCritical": {"kubelet_csr_controller_ca_not_after_timestamp_seconds", "- time() < 7 * 24 * 3600"},
		"KubeletCSRSigningFailures":    {"increase(kubelet_csr_controller_signing_failures_total[15m])", "> 0"},
		"KubeletCSRCAReloadFailures":   {"increase(kubelet_csr_controller_ca_reload_failures_total[15m])", "> 0"},
		"KubeletCSRCANotReady":         {"kubelet_csr_controller_ca_ready", "== 0"},
		"KubeletCSRSuspiciousRequests": {"increase(kubelet_csr_controller_suspicious_requests_total[15m])", "> 0"},
		"KubeletCSRControllerNoLeader": {"max(" + leader + ") < 1", "absent(" + leader + ")"},
		"KubeletCSRControllerAbsent":   {`absent(up{job="` + fullname + `", namespace="` + namespace + `"} == 1)`},
	}
	withoutLeader := maps.Clone(all)
	delete(withoutLeader, "KubeletCSRControllerNoLeader")
	customLease := maps.Clone(all)
	customLease["KubeletCSRControllerNoLeader"] = []string{`leader_election_master_status{name="my-lease"`}
	tuned := maps.Clone(withoutLeader)
	tuned["KubeletCSRPendingTooLong"] = []string{"> 600"}
	tuned["KubeletCSRCAExpiringCritical"] = []string{"- time() < 14 * 24 * 3600"}
	tuned["KubeletCSRSigningFailures"] = []string{"[1h]"}
	tuned["KubeletCSRControllerAbsent"] = []string{`job="my-job"`}
	tuned["KubeletCSRExtra"] = []string{"vector(1)"}
	delete(tuned, "KubeletCSRCAExpiringSoon")

	tests := []struct {
		name   string
		values string
		want   map[string][]string
		// severityFor: alert -> {severity, for}, where the values set them.
		severityFor map[string][2]string
	}{
		{"the defaults alert on pending CSRs, CA expiry, signing and reload failures, CA readiness, suspicious requests, a missing leader and a missing target", monitoringOn, all,
			map[string][2]string{"KubeletCSRCAExpiringSoon": {"warning", "1h"}, "KubeletCSRCAExpiringCritical": {"critical", "1h"}, "KubeletCSRControllerNoLeader": {"critical", "5m"}}},
		{"without leader election there is no leader to alert on", monitoringOn + "replicaCount: 1\nleaderElection: {enabled: false}", withoutLeader, nil},
		{"the leader alert follows the Lease name", monitoringOn + "config: {manager: {leaderElection: {leaseName: my-lease}}}", customLease, nil},
		{"thresholds and severities come from the values and extra rules are added", `serviceMonitor: {enabled: true}
prometheusRule:
  enabled: true
  alerts:
    KubeletCSRPendingTooLong: {thresholdSeconds: 600, severity: page}
    KubeletCSRCAExpiringSoon: {enabled: false}
    KubeletCSRCAExpiringCritical: {days: 14}
    KubeletCSRSigningFailures: {window: 1h}
    KubeletCSRControllerNoLeader: {enabled: false}
    KubeletCSRControllerAbsent: {job: my-job, for: 30m}
  additionalRules:
    - alert: KubeletCSRExtra
      expr: vector(1)
      for: 1m
      labels: {severity: info}
      annotations: {summary: s, description: d, runbook_url: https://example.com}
`, tuned, map[string][2]string{"KubeletCSRPendingTooLong": {"page", "5m"}, "KubeletCSRControllerAbsent": {"warning", "30m"}, "KubeletCSRExtra": {"info", "1m"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var pr prometheusRule
			if !render(t, tt.values).one(t, "PrometheusRule", &pr) {
				t.Fatal("no PrometheusRule")
			}
			got := map[string]alertRule{}
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					got[r.Alert] = r
				}
			}
			if diff := cmp.Diff(slices.Sorted(maps.Keys(tt.want)), slices.Sorted(maps.Keys(got))); diff != "" {
				t.Fatalf("alerts (-want +got):\n%s", diff)
			}
			for name, want := range tt.severityFor {
				if r := got[name]; r.Labels["severity"] != want[0] || r.For != want[1] {
					t.Errorf("%s: severity %q for %q, want %q %q", name, r.Labels["severity"], r.For, want[0], want[1])
				}
			}
			for name, pieces := range tt.want {
				r := got[name]
				for _, p := range pieces {
					if !strings.Contains(r.Expr, p) {
						t.Errorf("%s: expression %q lacks %q", name, r.Expr, p)
					}
				}
				if r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: want for, a severity, a summary and a description: %+v", name, r)
				}
				if !strings.HasPrefix(r.Annotations["runbook_url"], "https://") {
					t.Errorf("%s: no runbook_url: %+v", name, r.Annotations)
				}
			}
		})
	}
}
