package chart

import (
	"os"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// leaves returns the dotted paths of values' leaves: scalars, lists and
// empty maps.
func leaves(prefix string, values map[string]any) []string {
	var out []string
	for k, v := range values {
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			out = append(out, leaves(prefix+k+".", m)...)
			continue
		}
		out = append(out, prefix+k)
	}
	slices.Sort(out)
	return out
}

func TestReadmeDescribesEveryValue(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	doc := readme(t)
	for _, path := range leaves("", values) {
		// config's fields are the controller's, described field by field in
		// the project README; the chart's README describes each section.
		if section, ok := strings.CutPrefix(path, "config."); ok {
			path = "config." + strings.Split(section, ".")[0]
		}
		// An alert's values are described in one row, with the alert.
		if alert, ok := strings.CutPrefix(path, "prometheusRule.alerts."); ok {
			path = "prometheusRule.alerts." + strings.Split(alert, ".")[0]
		}
		// Kubernetes fields passed to the pod as they are: one row each.
		for _, whole := range []string{"podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe"} {
			if strings.HasPrefix(path, whole+".") {
				path = whole
			}
		}
		if !strings.Contains(doc, "| `"+path) {
			t.Errorf("README.md's values table has no row for %s", path)
		}
	}
}

func TestReadmeKubeadmExampleRendersAValidRelease(t *testing.T) {
	t.Parallel()
	doc := readme(t)
	_, example, ok := strings.Cut(doc, "### Values for a kubeadm cluster")
	if ok {
		_, example, ok = strings.Cut(example, "```yaml\n")
	}
	if ok {
		example, _, ok = strings.Cut(example, "```")
	}
	if !ok {
		t.Fatal("README.md has no yaml block under \"### Values for a kubeadm cluster\"")
	}
	m := render(t, example)
	controllerConfig(t, m)
	d := m.deployment(t)
	if d.Spec.Template.Spec.HostNetwork {
		t.Error("the kubeadm example runs on the host network")
	}
	checkPod(t, d, true)
}

// TestEveryAlertLinksToItsRunbookSection: docs/runbooks.md has a section per
// alert, and each alert's runbook_url is that section's anchor.
func TestEveryAlertLinksToItsRunbookSection(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	var pr prometheusRule
	if !render(t, monitoringOn).one(t, "PrometheusRule", &pr) {
		t.Fatal("no PrometheusRule")
	}
	const base = "https://github.com/nodecsr/kubelet-csr-controller/blob/main/docs/runbooks.md#"
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if !strings.Contains(string(b), "\n## "+r.Alert+"\n") {
				t.Errorf("docs/runbooks.md has no section ## %s", r.Alert)
			}
			if got, want := r.Annotations["runbook_url"], base+strings.ToLower(r.Alert); got != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
			}
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "## "); ok && !slices.Contains(alerts, name) {
			t.Errorf("docs/runbooks.md has a section for %s, which the chart does not render", name)
		}
	}
}
