package chart

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestNetworkPolicyAllowsTheAPIServerAndTheScrapersOnly(t *testing.T) {
	const on = "networkPolicy: {enabled: true, apiServer: {cidrs: [10.0.0.10/32, 10.0.0.11/32]}, metricsFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]}\n"
	tests := []struct {
		name    string
		values  string
		wantDNS bool
	}{
		{"the API server and the scrapers", on, false},
		{"and DNS when the approver resolves names", on + "config: {approver: {kubeletServing: {dnsResolution: {enabled: true}}}}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			np := &networkingv1.NetworkPolicy{}
			if !render(t, tt.values).one(t, "NetworkPolicy", np) {
				t.Fatal("no NetworkPolicy")
			}
			if diff := cmp.Diff([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes); diff != "" {
				t.Errorf("policyTypes (-want +got):\n%s", diff)
			}
			if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/instance"] != release {
				t.Errorf("the policy selects %v, not the release's pods", np.Spec.PodSelector.MatchLabels)
			}
			metrics := intstr.FromString("metrics")
			wantIngress := []networkingv1.NetworkPolicyIngressRule{{
				From:  np.Spec.Ingress[0].From,
				Ports: []networkingv1.NetworkPolicyPort{{Port: &metrics, Protocol: ptr.To(corev1.ProtocolTCP)}},
			}}
			if diff := cmp.Diff(wantIngress, np.Spec.Ingress); diff != "" || np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["team"] != "monitoring" {
				t.Errorf("ingress (-want +got):\n%s\n%+v", diff, np.Spec.Ingress)
			}
			api := np.Spec.Egress[0]
			if len(api.To) != 2 || api.To[0].IPBlock.CIDR != "10.0.0.10/32" || api.To[1].IPBlock.CIDR != "10.0.0.11/32" || len(api.Ports) != 2 || api.Ports[0].Port.IntValue() != 443 || api.Ports[1].Port.IntValue() != 6443 {
				t.Errorf("API server egress: %+v", api)
			}
			if gotDNS := len(np.Spec.Egress) == 2; gotDNS != tt.wantDNS {
				t.Errorf("DNS egress: %v, want %v (%+v)", gotDNS, tt.wantDNS, np.Spec.Egress)
			}
		})
	}
	t.Run("no scrapers, no ingress", func(t *testing.T) {
		t.Parallel()
		np := &networkingv1.NetworkPolicy{}
		render(t, "networkPolicy: {enabled: true, apiServer: {cidrs: [10.0.0.10/32]}}").one(t, "NetworkPolicy", np)
		if len(np.Spec.Ingress) != 0 || len(np.Spec.PolicyTypes) != 2 {
			t.Errorf("ingress %+v with policyTypes %v: want none allowed", np.Spec.Ingress, np.Spec.PolicyTypes)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		if len(render(t, "").docs["NetworkPolicy"]) != 0 {
			t.Error("the defaults render a NetworkPolicy")
		}
	})
}
