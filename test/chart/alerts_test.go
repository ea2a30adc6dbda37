package chart

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtool runs the promtool binary that `make test` names in $PROMTOOL in
// dir and returns its output.
func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv("PROMTOOL")
	if bin == "" {
		t.Fatal("PROMTOOL is not set: run through `make test`, or export PROMTOOL=$(hack/build-tools.sh promtool)/promtool")
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // the test's own tool
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), errors.New(err.Error() + ": " + out.String())
	}
	return out.String(), nil
}

// alertTests is testdata/alerts_test.yaml, as far as this test reads it.
type alertTests struct {
	Tests []struct {
		Name          string
		AlertRuleTest []struct {
			Alertname string
			ExpAlerts []any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	}
}

// TestAlertsFireOnTheirSeriesAndOnlyThen runs promtool on the chart's
// PrometheusRule: check rules (expressions and annotation templates), then
// test rules with testdata/alerts_test.yaml, which must give every alert a
// case that fires and one that stays quiet.
func TestAlertsFireOnTheirSeriesAndOnlyThen(t *testing.T) {
	t.Parallel()
	var pr prometheusRule
	if !render(t, monitoringOn).one(t, "PrometheusRule", &pr) {
		t.Fatal("no PrometheusRule")
	}
	dir := t.TempDir()
	writeRules := func(annotations bool) {
		t.Helper()
		var groups []map[string]any
		for _, g := range pr.Spec.Groups {
			var rules []map[string]any
			for _, r := range g.Rules {
				rule := map[string]any{"alert": r.Alert, "expr": r.Expr, "for": r.For, "labels": r.Labels}
				if annotations {
					rule["annotations"] = r.Annotations
				}
				rules = append(rules, rule)
			}
			groups = append(groups, map[string]any{"name": g.Name, "rules": rules})
		}
		b, err := yaml.Marshal(map[string]any{"groups": groups})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeRules(true)
	if out, err := promtool(t, dir, "check", "rules", "rules.yaml"); err != nil {
		t.Fatalf("promtool check rules: %v", err)
	} else {
		t.Log(out)
	}

	// The test cases compare labels; annotations (checked above, and by
	// TestPrometheusRuleAlertsOnWhatStopsKubeletsFromGettingCertificates)
	// would only make them long.
	writeRules(false)
	cases, err := os.ReadFile("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), cases, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := promtool(t, dir, "test", "rules", "alerts_test.yaml"); err != nil {
		t.Fatalf("promtool test rules: %v", err)
	} else {
		t.Log(out)
	}

	var tests alertTests
	if err := yaml.Unmarshal(cases, &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("testdata/alerts_test.yaml needs a case where %s fires (%v) and one where it stays quiet (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	for name := range maps.Keys(fires) {
		if !slices.Contains(alerts, name) {
			t.Errorf("testdata/alerts_test.yaml tests %s, which the chart does not render", name)
		}
	}
	if len(alerts) < 8 {
		t.Errorf("only %d alerts rendered: %s", len(alerts), strings.Join(alerts, ", "))
	}
}
