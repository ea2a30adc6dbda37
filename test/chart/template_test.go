package chart

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

func TestChartPassesHelmLint(t *testing.T) {
	tests := []struct {
		name  string
		flags []string
	}{
		{"the chart passes helm lint", nil},
		{"the chart passes helm lint --strict", []string{"--strict"}},
		{"the chart with monitoring on passes helm lint --strict", []string{"--strict", "--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if out, err := helm(t, append([]string{"lint", chartDir}, tt.flags...)...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// chartYAML is Chart.yaml, as far as the tests read it.
type chartYAML struct {
	AppVersion  string `json:"appVersion"`
	Maintainers []struct{ Name string }
	Annotations map[string]string `json:"annotations"`
}

func readChartYAML(t *testing.T) chartYAML {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c chartYAML
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// appVersion is the chart's appVersion: the default image tag.
func appVersion(t *testing.T) string {
	t.Helper()
	return readChartYAML(t).AppVersion
}

var selectorLabels = map[string]string{
	"app.kubernetes.io/name":     "kubelet-csr-controller",
	"app.kubernetes.io/instance": release,
}

var defaultAntiAffinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
	PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
		Weight: 100,
		PodAffinityTerm: corev1.PodAffinityTerm{
			TopologyKey:   "kubernetes.io/hostname",
			LabelSelector: &metav1.LabelSelector{MatchLabels: selectorLabels},
		},
	}},
}}

var zoneAffinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
	RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "topology.kubernetes.io/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}},
	}}},
}}

func TestDeploymentFollowsTheValues(t *testing.T) {
	tests := []struct {
		name        string
		values      string
		replicas    int32
		leaderElect bool
		hostNetwork bool
		dnsPolicy   corev1.DNSPolicy
		affinity    *corev1.Affinity
		// pdbMinAvailable is the budget's minAvailable; nil: no budget.
		pdbMinAvailable *int32
	}{
		{
			name:     "the defaults run two leader-elected replicas spread across nodes with a budget of one",
			replicas: 2, leaderElect: true, affinity: defaultAntiAffinity, pdbMinAvailable: ptr.To[int32](1),
		},
		{
			name:   "one replica keeps leader election for rolling updates and gets no budget that would block drains",
			values: "replicaCount: 1", replicas: 1, leaderElect: true, affinity: defaultAntiAffinity,
		},
		{
			name:   "one replica may run without leader election",
			values: "replicaCount: 1\nleaderElection: {enabled: false}", replicas: 1, affinity: defaultAntiAffinity,
		},
		{
			name:   "host networking keeps resolving cluster names",
			values: "hostNetwork: true", replicas: 2, leaderElect: true, hostNetwork: true, dnsPolicy: corev1.DNSClusterFirstWithHostNet,
			affinity: defaultAntiAffinity, pdbMinAvailable: ptr.To[int32](1),
		},
		{
			name: "a user's affinity replaces the default anti-affinity",
			values: `affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [a]}]`,
			replicas: 2, leaderElect: true, affinity: zoneAffinity, pdbMinAvailable: ptr.To[int32](1),
		},
		{
			name:   "a budget asked for with one replica still lets a drain evict it",
			values: "replicaCount: 1\npodDisruptionBudget: {alwaysCreate: true}", replicas: 1, leaderElect: true,
			affinity: defaultAntiAffinity, pdbMinAvailable: ptr.To[int32](0),
		},
		{
			name:   "a budget never requires every replica",
			values: "replicaCount: 3\npodDisruptionBudget: {minAvailable: 3}", replicas: 3, leaderElect: true,
			affinity: defaultAntiAffinity, pdbMinAvailable: ptr.To[int32](2),
		},
		{
			name:   "a disabled budget is not rendered",
			values: "podDisruptionBudget: {enabled: false}", replicas: 2, leaderElect: true, affinity: defaultAntiAffinity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tt.values)
			d := m.deployment(t)
			pod := d.Spec.Template.Spec
			if got := ptr.Deref(d.Spec.Replicas, 0); got != tt.replicas {
				t.Errorf("replicas = %d, want %d", got, tt.replicas)
			}
			if pod.HostNetwork != tt.hostNetwork || pod.DNSPolicy != tt.dnsPolicy {
				t.Errorf("hostNetwork %v dnsPolicy %q, want %v %q", pod.HostNetwork, pod.DNSPolicy, tt.hostNetwork, tt.dnsPolicy)
			}
			if diff := cmp.Diff(tt.affinity, pod.Affinity); diff != "" {
				t.Errorf("affinity (-want +got):\n%s", diff)
			}
			var gotMin *int32
			if p := m.pdb(t); p != nil {
				gotMin = ptr.To(p.Spec.MinAvailable.IntVal)
				if diff := cmp.Diff(selectorLabels, p.Spec.Selector.MatchLabels); diff != "" {
					t.Errorf("budget selector (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tt.pdbMinAvailable, gotMin); diff != "" {
				t.Errorf("budget minAvailable (-want +got):\n%s", diff)
			}
			checkPod(t, d, tt.leaderElect)
			if hasRole := m.role(t) != nil; hasRole != tt.leaderElect {
				t.Errorf("a Role for the Lease: %v, want %v", hasRole, tt.leaderElect)
			}
		})
	}
}

// checkPod checks what every value set keeps: identity, security, probes,
// flags, mounts, scheduling defaults and resources.
func checkPod(t *testing.T, d *appsv1.Deployment, leaderElect bool) {
	t.Helper()
	pod := d.Spec.Template.Spec
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("pod label %s = %q, want the selector's %q", k, d.Spec.Template.Labels[k], v)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d.Spec.Template.Annotations["checksum/config"]) {
		t.Errorf("checksum/config annotation = %q, want a sha256", d.Spec.Template.Annotations["checksum/config"])
	}
	if pod.ServiceAccountName != fullname || pod.PriorityClassName != "" {
		t.Errorf("serviceAccountName %q priorityClassName %q", pod.ServiceAccountName, pod.PriorityClassName)
	}
	wantPodSC := &corev1.PodSecurityContext{
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532), FSGroup: ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(wantPodSC, pod.SecurityContext); diff != "" {
		t.Errorf("pod securityContext (-want +got):\n%s", diff)
	}
	for _, tol := range []corev1.Toleration{
		{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "node.cloudprovider.kubernetes.io/uninitialized", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	} {
		if !slices.Contains(pod.Tolerations, tol) {
			t.Errorf("no toleration %+v in %+v", tol, pod.Tolerations)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := "ghcr.io/nodecsr/kubelet-csr-controller:" + appVersion(t); c.Image != want {
		t.Errorf("image %q, want %q", c.Image, want)
	}
	wantArgs := []string{
		"--config=/etc/kubelet-csr-controller/config/config.yaml",
		"--leader-elect=" + strconv.FormatBool(leaderElect),
		"--metrics-bind-address=:8080", "--metrics-secure=true", "--health-probe-bind-address=:8081",
		"--zap-encoder=json", "--zap-log-level=info",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	wantSC := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	if diff := cmp.Diff(wantSC, c.SecurityContext); diff != "" {
		t.Errorf("container securityContext (-want +got):\n%s", diff)
	}
	wantPorts := []corev1.ContainerPort{{Name: "metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "probes", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}}
	if diff := cmp.Diff(wantPorts, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port != intstr.FromString("probes") {
			t.Errorf("no probe on %s at port probes: %+v", path, probe)
		}
	}
	wantResources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	if !equalResources(wantResources, c.Resources) {
		t.Errorf("resources %+v, want %+v", c.Resources, wantResources)
	}
	checkMounts(t, pod)
}

func equalResources(a, b corev1.ResourceRequirements) bool {
	same := func(x, y corev1.ResourceList) bool {
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || v.Cmp(w) != 0 {
				return false
			}
		}
		return true
	}
	return same(a.Requests, b.Requests) && same(a.Limits, b.Limits)
}

// checkMounts checks that the CA Secret and the ConfigMap are mounted
// read-only where the configuration and the --config flag expect them.
func checkMounts(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range pod.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m
	}
	ca, ok := mounts[caDir]
	if !ok || !ca.ReadOnly || volumes[ca.Name].Secret == nil || volumes[ca.Name].Secret.SecretName != "kubelet-csr-controller-ca" {
		t.Errorf("the CA Secret kubelet-csr-controller-ca is not mounted read-only at %s: mounts %+v, volumes %+v", caDir, mounts, volumes)
	}
	cfg, ok := mounts[configDir]
	if !ok || !cfg.ReadOnly || volumes[cfg.Name].ConfigMap == nil || volumes[cfg.Name].ConfigMap.Name != fullname {
		t.Errorf("the ConfigMap %s is not mounted read-only at %s: mounts %+v, volumes %+v", fullname, configDir, mounts, volumes)
	}
}

const (
	caDir     = "/etc/kubelet-csr-controller/ca"
	configDir = "/etc/kubelet-csr-controller/config"
)

func TestServiceExposesTheMetricsPort(t *testing.T) {
	t.Parallel()
	m := render(t, "")
	s := &corev1.Service{}
	if !m.one(t, "Service", s) {
		t.Fatal("no Service")
	}
	want := []corev1.ServicePort{{Name: "metrics", Port: 8080, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP}}
	if diff := cmp.Diff(want, s.Spec.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(selectorLabels, s.Spec.Selector); diff != "" {
		t.Errorf("selector (-want +got):\n%s", diff)
	}
	if off := render(t, "service: {enabled: false}"); off.one(t, "Service", &corev1.Service{}) {
		t.Error("service.enabled=false still renders a Service")
	}
}

func TestBadValuesFailToRender(t *testing.T) {
	tests := []struct {
		name   string
		values string
		flags  []string
		want   string
	}{
		{"two replicas without leader election fail with the reason", "leaderElection: {enabled: false}", nil, "replicaCount is 2 but leaderElection.enabled is false"},
		{"a replica count in words fails the schema", "replicaCount: two", nil, "/replicaCount"},
		{"zero replicas fail the schema", "replicaCount: 0", nil, "/replicaCount"},
		{"an unknown log format fails the schema", "logFormat: xml", nil, "/logFormat"},
		{"an empty CA Secret name fails the schema", "ca: {existingSecret: ''}", nil, "/ca/existingSecret"},
		{"an empty CA Secret name fails even without the schema", "ca: {existingSecret: ''}", []string{"--skip-schema-validation"}, "ca.existingSecret is empty"},
		{"a misspelt configuration field fails the schema", "config: {cleaner: {deleteIssuedAftr: 1h}}", nil, "deleteIssuedAftr"},
		{"apiVersion inside config fails the schema: the chart writes it", "config: {apiVersion: v1}", nil, "apiVersion"},
		{"an unknown signer fails the schema", "config: {signers: [{name: example.com/signer}]}", nil, "/config/signers/0/name"},
		{"a duration that is not one fails the schema", "config: {approver: {gracePeriod: 15 minutes}}", nil, "/config/approver/gracePeriod"},
		{"a NetworkPolicy without the API server's addresses fails with the reason", "networkPolicy: {enabled: true}", nil, "networkPolicy.enabled needs networkPolicy.apiServer.cidrs"},
		{"a trust bundle name that is not a DNS subdomain fails the schema", "config: {signers: [{name: kubernetes.io/kubelet-serving, trustBundle: {name: Bad_Name}}]}", nil, "/config/signers/0/trustBundle/name"},
		{"a ServiceMonitor without the Service fails with the reason", "service: {enabled: false}\nserviceMonitor: {enabled: true}", nil, "serviceMonitor.enabled needs service.enabled"},
		{"a digest that is not one fails the schema", "image: {digest: v1.2.3}", nil, "/image/digest"},
		{"a global registry that is not a string fails the schema", "global: {imageRegistry: [a]}", nil, "/global/imageRegistry"},
		{"a namespace override that is no namespace name fails the schema", "namespaceOverride: Kube_System", nil, "/namespaceOverride"},
		{"a common label that is not a string fails the schema", "commonLabels: {tier: [a]}", nil, "/commonLabels/tier"},
		{"a common annotation that is not a string fails the schema", "commonAnnotations: {note: {a: b}}", nil, "/commonAnnotations/note"},
		{"an extra object that is neither a map nor a string fails the schema", "extraObjects: [1]", nil, "/extraObjects/0"},
		{"a negative revision history fails the schema", "revisionHistoryLimit: -1", nil, "/revisionHistoryLimit"},
		{"an unknown strategy type fails the schema", "strategy: {type: BlueGreen}", nil, "/strategy/type"},
		{"a surge in words fails the schema", "strategy: {rollingUpdate: {maxSurge: one}}", nil, "/strategy/rollingUpdate/maxSurge"},
		{"a budget that lets no pod go fails the schema", "podDisruptionBudget: {maxUnavailable: 0}", nil, "/podDisruptionBudget/maxUnavailable"},
		{"a budget of zero percent fails the schema", "podDisruptionBudget: {maxUnavailable: 0%}", nil, "/podDisruptionBudget/maxUnavailable"},
		{"a probe's misspelt timing fails the schema", "livenessProbe: {periodSecond: 5}", nil, "periodSecond"},
		{"a probe timeout of zero fails the schema", "readinessProbe: {timeoutSeconds: 0}", nil, "/readinessProbe/timeoutSeconds"},
		{"a probe may not replace the chart's endpoint", "readinessProbe: {httpGet: {path: /}}", nil, "httpGet"},
		{"a topology spread constraint without a topology key fails the schema", "topologySpreadConstraints: [{maxSkew: 1, whenUnsatisfiable: DoNotSchedule}]", nil, "topologyKey"},
		{"ServiceMonitor relabelings that are not a list fail the schema", "serviceMonitor: {relabelings: {action: drop}}", nil, "/serviceMonitor/relabelings"},
		{"ServiceMonitor metric relabelings that are not a list fail the schema", "serviceMonitor: {metricRelabelings: drop}", nil, "/serviceMonitor/metricRelabelings"},
		{"a ServiceMonitor namespace that is not a string fails the schema", "serviceMonitor: {namespace: 1}", nil, "/serviceMonitor/namespace"},
		{"an alert the chart does not have fails the schema", "prometheusRule: {alerts: {KubeletCSRTypo: {enabled: false}}}", nil, "KubeletCSRTypo"},
		{"an alert's unknown setting fails the schema", "prometheusRule: {alerts: {KubeletCSRCANotReady: {threshold: 1}}}", nil, "threshold"},
		{"an alert's for that is no Prometheus duration fails the schema", "prometheusRule: {alerts: {KubeletCSRCANotReady: {for: 5 minutes}}}", nil, "/prometheusRule/alerts/KubeletCSRCANotReady/for"},
		{"an empty severity fails the schema", "prometheusRule: {alerts: {KubeletCSRCANotReady: {severity: ''}}}", nil, "/prometheusRule/alerts/KubeletCSRCANotReady/severity"},
		{"an expiry threshold of zero days fails the schema", "prometheusRule: {alerts: {KubeletCSRCAExpiringCritical: {days: 0}}}", nil, "/prometheusRule/alerts/KubeletCSRCAExpiringCritical/days"},
		{"a failure window that is no duration fails the schema", "prometheusRule: {alerts: {KubeletCSRSigningFailures: {window: an hour}}}", nil, "/prometheusRule/alerts/KubeletCSRSigningFailures/window"},
		{"a pending threshold in words fails the schema", "prometheusRule: {alerts: {KubeletCSRPendingTooLong: {thresholdSeconds: fifteen}}}", nil, "/prometheusRule/alerts/KubeletCSRPendingTooLong/thresholdSeconds"},
		{"an extra rule without an expression fails the schema", "prometheusRule: {additionalRules: [{alert: X}]}", nil, "/prometheusRule/additionalRules/0"},
		{"an empty runbook URL fails the schema", "prometheusRule: {runbookURL: ''}", nil, "/prometheusRule/runbookURL"},
		{"a helm test timeout that is no duration fails the schema", "helmTest: {timeout: two minutes}", nil, "/helmTest/timeout"},
		{"a misspelt helm test value fails the schema", "helmTest: {enable: false}", nil, "enable"},
		{"a dashboard label that is not a string fails the schema", "dashboard: {labels: {grafana_dashboard: 1}}", nil, "/dashboard/labels/grafana_dashboard"},
		{"a misspelt dashboard value fails the schema", "dashboard: {enable: true}", nil, "enable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := template(t, tt.values, tt.flags...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("helm template with %q: error %v, want one containing %q", tt.values, err, tt.want)
			}
		})
	}
}

func TestExtraValuesReachThePod(t *testing.T) {
	t.Parallel()
	d := render(t, `image: {tag: v9.9.9}
imagePullSecrets: [{name: registry}]
podAnnotations: {team: nodes}
podLabels: {tier: control-plane}
nodeSelector: {node-role.kubernetes.io/control-plane: ""}
priorityClassName: system-cluster-critical
extraArgs: [--profiling]
extraEnv: [{name: KUBERNETES_SERVICE_HOST, value: 10.0.0.1}]
extraVolumes: [{name: serving-ca, secret: {secretName: serving-ca}}]
extraVolumeMounts: [{name: serving-ca, mountPath: /etc/kubelet-csr-controller/serving-ca, readOnly: true}]
`).deployment(t)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	checks := []struct {
		what string
		ok   bool
	}{
		{"the image tag", strings.HasSuffix(c.Image, ":v9.9.9")},
		{"the pull secret", slices.Contains(pod.ImagePullSecrets, corev1.LocalObjectReference{Name: "registry"})},
		{"the pod annotation next to the checksum", d.Spec.Template.Annotations["team"] == "nodes" && d.Spec.Template.Annotations["checksum/config"] != ""},
		{"the pod label", d.Spec.Template.Labels["tier"] == "control-plane"},
		{"the node selector", pod.NodeSelector["node-role.kubernetes.io/control-plane"] == "" && len(pod.NodeSelector) == 1},
		{"the priority class", pod.PriorityClassName == "system-cluster-critical"},
		{"the extra flag after the chart's", c.Args[len(c.Args)-1] == "--profiling"},
		{"the extra environment variable", slices.Contains(c.Env, corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "10.0.0.1"})},
		{"the extra volume next to the chart's", len(pod.Volumes) == 3 && pod.Volumes[2].Secret != nil && pod.Volumes[2].Secret.SecretName == "serving-ca"},
		{"the extra mount next to the chart's", len(c.VolumeMounts) == 3 && c.VolumeMounts[2].MountPath == "/etc/kubelet-csr-controller/serving-ca"},
	}
	for _, check := range checks {
		if !check.ok {
			t.Errorf("%s did not reach the pod: %+v", check.what, d.Spec.Template)
		}
	}
	checkMounts(t, pod)
}

func TestGoMemoryLimitFollowsTheContainerLimit(t *testing.T) {
	t.Parallel()
	// The binary sets 90% of this as the soft limit (cmd's memlimit.go);
	// GOMEMLIMIT itself would be 100%.
	memLimit := func(c corev1.Container) *corev1.EnvVar {
		for i := range c.Env {
			if c.Env[i].Name == "GOMEMLIMIT" {
				t.Errorf("the chart sets GOMEMLIMIT, which is the whole limit: %+v", c.Env[i])
			}
			if c.Env[i].Name == "KUBELET_CSR_CONTROLLER_MEMORY_LIMIT" {
				return &c.Env[i]
			}
		}
		return nil
	}
	c := render(t, "").deployment(t).Spec.Template.Spec.Containers[0]
	e := memLimit(c)
	if e == nil || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
		t.Fatalf("KUBELET_CSR_CONTROLLER_MEMORY_LIMIT should come from the container's memory limit, got %+v", e)
	}
	// Helm merges maps: null removes the default limit.
	c = render(t, "resources: {limits: null}").deployment(t).Spec.Template.Spec.Containers[0]
	if e := memLimit(c); e != nil {
		t.Errorf("without a memory limit there is nothing to follow, got %+v", e)
	}
}
