package chart

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

// grants flattens RBAC rules into one "verb group/resource [name]" line per
// permission, sorted, so that a rule that grants a verb on more names (or
// more verbs on a name) than it should shows up in a diff.
func grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, verb := range r.Verbs {
			for _, url := range r.NonResourceURLs {
				out = append(out, verb+" "+url)
			}
			for _, group := range r.APIGroups {
				if group == "" {
					group = "core"
				}
				for _, res := range r.Resources {
					if len(r.ResourceNames) == 0 {
						out = append(out, verb+" "+group+"/"+res)
					}
					for _, name := range r.ResourceNames {
						out = append(out, verb+" "+group+"/"+res+" "+name)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

const (
	clientKubelet = "kubernetes.io/kube-apiserver-client-kubelet"
	serving       = "kubernetes.io/kubelet-serving"
	apiClient     = "kubernetes.io/kube-apiserver-client"
)

// Grants the ClusterRole is made of.
var (
	readCSRs   = []string{"get certificates.k8s.io/certificatesigningrequests", "list certificates.k8s.io/certificatesigningrequests", "watch certificates.k8s.io/certificatesigningrequests"}
	deleteCSRs = []string{"delete certificates.k8s.io/certificatesigningrequests"}
	sar        = []string{"create authorization.k8s.io/subjectaccessreviews", "get /readyz"}
	// Secure metrics review a scraper's token and ask whether it may get
	// /metrics.
	tokenReviews = []string{"create authentication.k8s.io/tokenreviews"}
	sarOnly      = []string{"create authorization.k8s.io/subjectaccessreviews"}
	readNodes    = []string{"get core/nodes", "list core/nodes", "watch core/nodes"}
	patchNodes   = []string{"patch core/nodes"}
)

func approve(signers ...string) []string {
	out := []string{"update certificates.k8s.io/certificatesigningrequests/approval"}
	for _, s := range signers {
		out = append(out, "approve certificates.k8s.io/signers "+s)
	}
	return out
}

func sign(signers ...string) []string {
	out := []string{"update certificates.k8s.io/certificatesigningrequests/status"}
	for _, s := range signers {
		out = append(out, "sign certificates.k8s.io/signers "+s)
	}
	return out
}

// trust grants publishing the trust bundles of signers: create any bundle,
// read and update only theirs, attest only for them.
func trust(signers ...string) []string {
	out := []string{"create certificates.k8s.io/clustertrustbundles"}
	for _, s := range signers {
		bundle := strings.ReplaceAll(s, "/", ":") + ":kubelet-csr-controller"
		out = append(out, "get certificates.k8s.io/clustertrustbundles "+bundle, "update certificates.k8s.io/clustertrustbundles "+bundle, "attest certificates.k8s.io/signers "+s)
	}
	return out
}

func grantSet(parts ...[]string) []string {
	out := slices.Concat(parts...)
	slices.Sort(out)
	return out
}

func TestClusterRoleGrantsOnlyWhatTheConfigurationUses(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   []string
	}{
		{
			name: "the defaults approve and sign the two kubelet signers and nothing else",
			want: grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name: "an added kube-apiserver-client signer may sign but never approve",
			values: `config:
  signers: [{name: kubernetes.io/kubelet-serving}, {name: kubernetes.io/kube-apiserver-client-kubelet}, {name: kubernetes.io/kube-apiserver-client}]`,
			want: grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet, apiClient), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "serving approval off drops its approve name and the Node reads",
			values: "config: {approver: {kubeletServing: {enabled: false}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet), sign(serving, clientKubelet), trust(serving), sar, tokenReviews),
		},
		{
			name:   "serving approval off with allowExistingNode false still reads Nodes for bootstrap checks",
			values: "config: {approver: {kubeletServing: {enabled: false}, nodeClient: {bootstrap: {allowExistingNode: false}}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet), sign(serving, clientKubelet), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "client approval off drops its approve name and the SubjectAccessReviews",
			values: "config: {approver: {nodeClient: {enabled: false}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(serving), sign(serving, clientKubelet), trust(serving), readNodes, sarOnly, tokenReviews),
		},
		{
			name:   "no approval at all grants no approval, SubjectAccessReview or Node",
			values: "config: {approver: {nodeClient: {enabled: false}, kubeletServing: {enabled: false}}}",
			want:   grantSet(readCSRs, deleteCSRs, sign(serving, clientKubelet), trust(serving), sarOnly, tokenReviews),
		},
		{
			name:   "dry run decides without writing, so it may not approve",
			values: "config: {approver: {mode: dryRun}}",
			want:   grantSet(readCSRs, deleteCSRs, sign(serving, clientKubelet), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "signing only the serving signer signs nothing else",
			values: "config: {signers: [{name: kubernetes.io/kubelet-serving}]}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "a signer whose bundle is off attests nothing",
			values: "config: {signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {enabled: false}}, {name: kubernetes.io/kube-apiserver-client-kubelet}]}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet), sar, readNodes, tokenReviews),
		},
		{
			name:   "a client signer's bundle, when asked for, is granted with its own name",
			values: "config: {signers: [{name: kubernetes.io/kube-apiserver-client-kubelet, trustBundle: {enabled: true}}]}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(clientKubelet), trust(clientKubelet), sar, readNodes, tokenReviews),
		},
		{
			name:   "an empty signer list grants no signing",
			values: "config: {signers: []}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "plain-HTTP metrics review no tokens",
			values: "metrics: {secure: false}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet), trust(serving), sar, readNodes),
		},
		{
			name:   "plain-HTTP metrics without client approval make no reviews at all",
			values: "metrics: {secure: false}\nconfig: {approver: {nodeClient: {enabled: false}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(serving), sign(serving, clientKubelet), trust(serving), readNodes),
		},
		{
			name:   "a start-up taint lets it patch Nodes",
			values: "config: {approver: {kubeletServing: {startupTaint: {key: example.com/no-cert, effect: NoSchedule}}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet), trust(serving), sar, readNodes, patchNodes, tokenReviews),
		},
		{
			name:   "a start-up taint without serving approval still reads and patches Nodes",
			values: "config: {approver: {kubeletServing: {enabled: false, startupTaint: {key: example.com/no-cert, effect: NoSchedule}}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet), sign(serving, clientKubelet), trust(serving), sar, readNodes, patchNodes, tokenReviews),
		},
		{
			name:   "the audit reads Nodes even without serving approval",
			values: "config: {audit: {enabled: true}, approver: {kubeletServing: {enabled: false}}}",
			want:   grantSet(readCSRs, deleteCSRs, approve(clientKubelet), sign(serving, clientKubelet), trust(serving), sar, readNodes, tokenReviews),
		},
		{
			name:   "without the cleaner CSRs cannot be deleted",
			values: "config: {cleaner: {enabled: false}}",
			want:   grantSet(readCSRs, approve(clientKubelet, serving), sign(serving, clientKubelet), trust(serving), sar, readNodes, tokenReviews),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, grants(render(t, tt.values).clusterRole(t).Rules)); diff != "" {
				t.Errorf("ClusterRole grants (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoleGrantsTheLeaseAndItsEventsOnly(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   []string // nil: no Role
	}{
		{
			name: "the defaults may create any Lease but read and renew only theirs",
			want: []string{"create coordination.k8s.io/leases", "create core/events", "get coordination.k8s.io/leases kubelet-csr-controller", "patch core/events", "update coordination.k8s.io/leases kubelet-csr-controller"},
		},
		{
			name:   "the Lease name follows the configuration",
			values: "config: {manager: {leaderElection: {leaseName: my-lease}}}",
			want:   []string{"create coordination.k8s.io/leases", "create core/events", "get coordination.k8s.io/leases my-lease", "patch core/events", "update coordination.k8s.io/leases my-lease"},
		},
		{
			name:   "without leader election there is no Role",
			values: "replicaCount: 1\nleaderElection: {enabled: false}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tt.values)
			var got []string
			if r := m.role(t); r != nil {
				got = grants(r.Rules)
				if r.Namespace != namespace {
					t.Errorf("Role in namespace %q, want the release's %q", r.Namespace, namespace)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Role grants (-want +got):\n%s", diff)
			}
			if m.inNamespace(t, "RoleBinding", namespace, &rbacv1.RoleBinding{}) != (tt.want != nil) {
				t.Errorf("a RoleBinding in the release namespace should exist exactly when the Role does")
			}
		})
	}
}

// A trust ConfigMap is granted by a Role in its namespace, on that name.
func TestTrustConfigMapIsGrantedInItsNamespaceOnly(t *testing.T) {
	t.Parallel()
	m := render(t, "config: {signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {configMap: {namespace: kube-public}}}]}")
	r, rb := &rbacv1.Role{}, &rbacv1.RoleBinding{}
	if !m.inNamespace(t, "Role", "kube-public", r) || !m.inNamespace(t, "RoleBinding", "kube-public", rb) {
		t.Fatal("no Role and RoleBinding in kube-public for the trust ConfigMap")
	}
	want := []string{"create core/configmaps", "get core/configmaps kubelet-serving-ca", "update core/configmaps kubelet-serving-ca"}
	if diff := cmp.Diff(want, grants(r.Rules)); diff != "" {
		t.Errorf("trust Role grants (-want +got):\n%s", diff)
	}
	if rb.RoleRef.Name != r.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Namespace != namespace {
		t.Errorf("trust RoleBinding %+v %+v", rb.RoleRef, rb.Subjects)
	}
	if len(render(t, "").docs["Role"]) != 2 {
		t.Errorf("without a trust ConfigMap the chart makes the Lease and Events Roles only")
	}
}

func TestEventsAreGrantedOnlyInTheDefaultNamespace(t *testing.T) {
	t.Parallel()
	r := render(t, "").eventsRole(t)
	if r == nil {
		t.Fatal("no Role in namespace default: the controller could not record Events about CSRs")
	}
	want := []string{"create events.k8s.io/events"}
	if diff := cmp.Diff(want, grants(r.Rules)); diff != "" {
		t.Errorf("events Role grants (-want +got):\n%s", diff)
	}
	for _, g := range grants(render(t, "").clusterRole(t).Rules) {
		if strings.Contains(g, "events") {
			t.Errorf("the ClusterRole grants %q: Events belong in the default namespace's Role only", g)
		}
	}
}

func TestBindingsNameTheServiceAccountThePodsRunAs(t *testing.T) {
	tests := []struct {
		name, values, account string
		created               bool
	}{
		{"the defaults create a ServiceAccount named after the release", "", fullname, true},
		{"a ServiceAccount name override reaches the pods and the bindings", "serviceAccount: {name: csr-bot}", "csr-bot", true},
		{"an existing ServiceAccount is bound, not created", "serviceAccount: {create: false, name: existing}", "existing", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tt.values)
			if got := m.deployment(t).Spec.Template.Spec.ServiceAccountName; got != tt.account {
				t.Errorf("pods run as %q, want %q", got, tt.account)
			}
			if created := len(m.docs["ServiceAccount"]) == 1; created != tt.created {
				t.Errorf("ServiceAccount created: %v, want %v", created, tt.created)
			}
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: tt.account, Namespace: namespace}}
			crb, rb, eb := &rbacv1.ClusterRoleBinding{}, &rbacv1.RoleBinding{}, &rbacv1.RoleBinding{}
			if !m.one(t, "ClusterRoleBinding", crb) || !m.inNamespace(t, "RoleBinding", namespace, rb) || !m.inNamespace(t, "RoleBinding", "default", eb) {
				t.Fatal("a binding is missing")
			}
			for _, subjects := range [][]rbacv1.Subject{crb.Subjects, rb.Subjects, eb.Subjects} {
				if diff := cmp.Diff(want, subjects); diff != "" {
					t.Errorf("binding subjects (-want +got):\n%s", diff)
				}
			}
			if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != m.clusterRole(t).Name || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != m.role(t).Name ||
				eb.RoleRef.Kind != "Role" || eb.RoleRef.Name != m.eventsRole(t).Name {
				t.Errorf("bindings refer to %+v, %+v and %+v", crb.RoleRef, rb.RoleRef, eb.RoleRef)
			}
		})
	}
}
