package chart

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// metadata returns the metadata of every rendered object, by "Kind/name".
func (m *manifest) metadata(t *testing.T) map[string]metav1.ObjectMeta {
	t.Helper()
	out := map[string]metav1.ObjectMeta{}
	for kind, docs := range m.docs {
		for _, doc := range docs {
			var obj struct{ Metadata metav1.ObjectMeta }
			if err := json.Unmarshal(doc, &obj); err != nil {
				t.Fatal(err)
			}
			out[kind+"/"+obj.Metadata.Namespace+"/"+obj.Metadata.Name] = obj.Metadata
		}
	}
	return out
}

func container(t *testing.T, m *manifest) corev1.Container {
	t.Helper()
	return m.deployment(t).Spec.Template.Spec.Containers[0]
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestOperatorValuesReachTheObjects covers the values operators expect of a
// chart beside cert-manager's: each one, set, changes what it should.
func TestOperatorValuesReachTheObjects(t *testing.T) {
	tests := []struct {
		name   string
		values string
		check  func(t *testing.T, m *manifest)
	}{
		{
			name:   "revisionHistoryLimit and strategy reach the Deployment",
			values: "revisionHistoryLimit: 3\nstrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}",
			check: func(t *testing.T, m *manifest) {
				d := m.deployment(t)
				want := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge: ptr.To(intstr.FromInt32(0)), MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				}}
				if diff := cmp.Diff(want, d.Spec.Strategy); diff != "" || ptr.Deref(d.Spec.RevisionHistoryLimit, -1) != 3 {
					t.Errorf("revisionHistoryLimit %v, strategy (-want +got):\n%s", d.Spec.RevisionHistoryLimit, diff)
				}
			},
		},
		{
			name: "by default the Deployment keeps ten revisions and Kubernetes' strategy",
			check: func(t *testing.T, m *manifest) {
				d := m.deployment(t)
				if ptr.Deref(d.Spec.RevisionHistoryLimit, -1) != 10 || d.Spec.Strategy != (appsv1.DeploymentStrategy{}) {
					t.Errorf("revisionHistoryLimit %v strategy %+v", d.Spec.RevisionHistoryLimit, d.Spec.Strategy)
				}
			},
		},
		{
			name:   "a digest pins the image in place of the tag",
			values: "image: {tag: v9.9.9, digest: " + digest + "}",
			check: func(t *testing.T, m *manifest) {
				if got, want := container(t, m).Image, "ghcr.io/nodecsr/kubelet-csr-controller@"+digest; got != want {
					t.Errorf("image %q, want %q", got, want)
				}
			},
		},
		{
			name:   "a global registry replaces the registry of the repository",
			values: "global: {imageRegistry: mirror.example.com:5000}",
			check: func(t *testing.T, m *manifest) {
				if got, want := container(t, m).Image, "mirror.example.com:5000/nodecsr/kubelet-csr-controller:"+appVersion(t); got != want {
					t.Errorf("image %q, want %q", got, want)
				}
			},
		},
		{
			name:   "a global registry goes in front of a repository that names none",
			values: "global: {imageRegistry: mirror.example.com/}\nimage: {repository: nodecsr/kubelet-csr-controller, tag: v1.0.0}",
			check: func(t *testing.T, m *manifest) {
				if got, want := container(t, m).Image, "mirror.example.com/nodecsr/kubelet-csr-controller:v1.0.0"; got != want {
					t.Errorf("image %q, want %q", got, want)
				}
			},
		},
		{
			name: "common labels and annotations are on every object and an object's own annotations win",
			values: monitoringOn + "commonLabels: {team: nodes}\ncommonAnnotations: {owner: platform, note: common}\n" +
				"service: {annotations: {note: service}}\nextraObjects: [{apiVersion: v1, kind: Secret, metadata: {name: x}}]",
			check: func(t *testing.T, m *manifest) {
				meta := m.metadata(t)
				if len(meta) < 12 {
					t.Fatalf("only %d objects rendered: %v", len(meta), meta)
				}
				for key, md := range meta {
					if key == "Secret//x" {
						continue // extraObjects are the user's as written
					}
					note := "common"
					if strings.HasPrefix(key, "Service/") {
						note = "service"
					}
					if md.Labels["team"] != "nodes" || md.Annotations["owner"] != "platform" || md.Annotations["note"] != note {
						t.Errorf("%s: labels %v annotations %v", key, md.Labels, md.Annotations)
					}
				}
				if d := m.deployment(t); d.Spec.Template.Labels["team"] != "nodes" || d.Spec.Selector.MatchLabels["team"] != "" {
					t.Errorf("common labels belong on the pods and never in the (immutable) selector: %v %v", d.Spec.Template.Labels, d.Spec.Selector.MatchLabels)
				}
			},
		},
		{
			name:   "namespaceOverride moves every namespaced object and the binding subjects and the alerts but not the Events Role",
			values: monitoringOn + "namespaceOverride: csr-system",
			check: func(t *testing.T, m *manifest) {
				for key, md := range m.metadata(t) {
					kind, _, _ := strings.Cut(key, "/")
					want := "csr-system"
					switch {
					case kind == "ClusterRole" || kind == "ClusterRoleBinding":
						want = ""
					case strings.HasSuffix(md.Name, "-events"):
						want = "default"
					}
					if md.Namespace != want {
						t.Errorf("%s is in namespace %q, want %q", key, md.Namespace, want)
					}
				}
				for _, doc := range append(m.docs["RoleBinding"], m.docs["ClusterRoleBinding"]...) {
					if !strings.Contains(string(doc), `"namespace":"csr-system"`) {
						t.Errorf("a binding's subject is not the ServiceAccount in csr-system: %s", doc)
					}
				}
				var sm serviceMonitor
				m.one(t, "ServiceMonitor", &sm)
				if diff := cmp.Diff([]string{"csr-system"}, sm.Spec.NamespaceSelector.MatchNames); diff != "" {
					t.Errorf("the ServiceMonitor's namespaceSelector (-want +got):\n%s", diff)
				}
				if pr := m.docs["PrometheusRule"]; len(pr) != 1 || !strings.Contains(string(pr[0]), `namespace=\"csr-system\"`) {
					t.Errorf("the leader alert does not look in csr-system: %s", pr)
				}
			},
		},
		{
			name: "extra objects are released and rendered as templates from maps and strings",
			values: `extraObjects:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: "{{ include \"kubelet-csr-controller.fullname\" . }}-extra"}}
  - |
    apiVersion: v1
    kind: Secret
    metadata:
      name: {{ .Release.Name }}-token
`,
			check: func(t *testing.T, m *manifest) {
				meta := m.metadata(t)
				for _, key := range []string{"ConfigMap//" + fullname + "-extra", "Secret//" + release + "-token"} {
					if _, ok := meta[key]; !ok {
						t.Errorf("no %s among %v", key, meta)
					}
				}
			},
		},
		{
			name:   "maxUnavailable replaces minAvailable in the budget",
			values: "podDisruptionBudget: {maxUnavailable: 50%}",
			check: func(t *testing.T, m *manifest) {
				p := m.pdb(t)
				if p == nil || p.Spec.MinAvailable != nil || p.Spec.MaxUnavailable == nil || *p.Spec.MaxUnavailable != intstr.FromString("50%") {
					t.Errorf("budget %+v, want maxUnavailable 50%% alone", p)
				}
			},
		},
		{
			name:   "probe timings reach the probes which keep their endpoints",
			values: "livenessProbe: {initialDelaySeconds: 30, timeoutSeconds: 5}\nreadinessProbe: {periodSeconds: 2, failureThreshold: 6}",
			check: func(t *testing.T, m *manifest) {
				c := container(t, m)
				live, ready := c.LivenessProbe, c.ReadinessProbe
				if live.InitialDelaySeconds != 30 || live.TimeoutSeconds != 5 || live.PeriodSeconds != 10 || live.FailureThreshold != 3 || live.HTTPGet.Path != "/healthz" {
					t.Errorf("liveness probe %+v", live)
				}
				if ready.PeriodSeconds != 2 || ready.FailureThreshold != 6 || ready.TimeoutSeconds != 1 || ready.HTTPGet.Path != "/readyz" {
					t.Errorf("readiness probe %+v", ready)
				}
			},
		},
		{
			name: "a topology spread constraint gets the release's pods as its selector unless it names one",
			values: `topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
  - {maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: other}}}`,
			check: func(t *testing.T, m *manifest) {
				want := []corev1.TopologySpreadConstraint{
					{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: selectorLabels}},
					{MaxSkew: 2, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}},
				}
				if diff := cmp.Diff(want, m.deployment(t).Spec.Template.Spec.TopologySpreadConstraints); diff != "" {
					t.Errorf("topologySpreadConstraints (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "the ServiceMonitor takes relabelings and metric relabelings and a namespace of its own and still scrapes the release's",
			values: `serviceMonitor:
  enabled: true
  namespace: monitoring
  relabelings: [{action: replace, targetLabel: cluster, replacement: prod}]
  metricRelabelings: [{action: drop, sourceLabels: [__name__], regex: go_gc_.*}]`,
			check: func(t *testing.T, m *manifest) {
				var sm serviceMonitor
				if !m.one(t, "ServiceMonitor", &sm) || len(sm.Spec.Endpoints) != 1 {
					t.Fatalf("want a ServiceMonitor with one endpoint: %+v", sm)
				}
				e := sm.Spec.Endpoints[0]
				if sm.Metadata.Namespace != "monitoring" || len(sm.Spec.NamespaceSelector.MatchNames) != 1 || sm.Spec.NamespaceSelector.MatchNames[0] != namespace {
					t.Errorf("ServiceMonitor in %q scraping %v", sm.Metadata.Namespace, sm.Spec.NamespaceSelector.MatchNames)
				}
				if len(e.Relabelings) != 1 || e.Relabelings[0]["targetLabel"] != "cluster" || len(e.MetricRelabelings) != 1 || e.MetricRelabelings[0]["action"] != "drop" {
					t.Errorf("endpoint %+v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.check(t, render(t, tt.values))
		})
	}
}
