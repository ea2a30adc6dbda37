package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

const dashboardFile = chartDir + "/dashboards/kubelet-csr-controller.json"

// dashboardQueries returns every PromQL query of the dashboard (panels'
// targets) and the metric its namespace variable reads.
func dashboardQueries(t *testing.T) (queries []string, variableMetric string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok && v.Name == "namespace" {
			m := regexp.MustCompile(`^label_values\(([a-z_]+), namespace\)$`).FindStringSubmatch(fmt.Sprint(q["query"]))
			if m == nil {
				t.Fatalf("the namespace variable's query %v is not label_values(METRIC, namespace)", q["query"])
			}
			variableMetric = m[1]
		}
	}
	return queries, variableMetric
}

// grafanaVariables are replaced by what Grafana would put there before a
// query is parsed.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$namespace", "kubelet-csr-controller")

func TestDashboardConfigMapHoldsTheDashboardForTheSidecar(t *testing.T) {
	t.Parallel()
	if len(render(t, "").docs["ConfigMap"]) != 1 {
		t.Error("the defaults render a dashboard ConfigMap")
	}
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	m := render(t, "dashboard: {enabled: true, namespace: monitoring, labels: {grafana_dashboard: '1', team: nodes}}")
	for _, doc := range m.docs["ConfigMap"] {
		cm := &corev1.ConfigMap{}
		if err := yaml.Unmarshal(doc, cm); err != nil {
			t.Fatal(err)
		}
		if cm.Name != fullname+"-dashboard" {
			continue
		}
		if cm.Namespace != "monitoring" || cm.Labels["grafana_dashboard"] != "1" || cm.Labels["team"] != "nodes" {
			t.Errorf("ConfigMap %s/%s labels %v", cm.Namespace, cm.Name, cm.Labels)
		}
		if got := cm.Data["kubelet-csr-controller.json"]; got != strings.TrimSuffix(string(want), "\n") {
			t.Errorf("the ConfigMap does not hold %s as it is", dashboardFile)
		}
		return
	}
	t.Fatal("dashboard.enabled renders no dashboard ConfigMap")
}

// TestDashboardQueriesAreValidPromQL parses every query with Prometheus'
// own parser: promtool check rules, each query as a recording rule.
func TestDashboardQueriesAreValidPromQL(t *testing.T) {
	t.Parallel()
	queries, _ := dashboardQueries(t)
	var rules []map[string]string
	for i, q := range queries {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query_%d", i), "expr": grafanaVariables.Replace(q)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "queries.yaml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := promtool(t, dir, "check", "rules", "queries.yaml")
	if err != nil {
		t.Fatalf("the dashboard's queries do not parse: %v", err)
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(queries)); !strings.Contains(out, want) || len(queries) < 7 {
		t.Errorf("promtool: %s, want %q", out, want)
	}
}

// metricName finds the metrics a query names: this controller's,
// controller-runtime's work queues and leader election.
var metricName = regexp.MustCompile(`\b(kubelet_csr_controller_[a-z_]+|workqueue_[a-z_]+|leader_election_[a-z_]+)\b`)

// proveDashboardMetrics checks that every metric the dashboard names is on
// the running controller's /metrics (a histogram by its _bucket series).
// It reads them as the "scraper" ServiceAccount, which proveRBAC bound to
// the metrics-reader role.
func proveDashboardMetrics(ctx context.Context, t *testing.T, ctrl *cluster.Controller, admin *kubernetes.Clientset) {
	t.Helper()
	t.Run("every metric the dashboard names is on the controller's /metrics", func(t *testing.T) {
		code, body, err := ctrl.Scrape(ctx, serviceAccountToken(ctx, t, admin, "scraper"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("scrape as the metrics reader: %d %v", code, err)
		}
		queries, variable := dashboardQueries(t)
		var names []string
		for _, q := range append(queries, variable) {
			names = append(names, metricName.FindAllString(q, -1)...)
		}
		slices.Sort(names)
		for _, name := range slices.Compact(names) {
			if !strings.Contains(body, "\n"+name+"{") && !strings.Contains(body, "\n"+name+" ") {
				t.Errorf("the dashboard names %s, which /metrics does not have", name)
			}
		}
		if len(names) < 8 {
			t.Errorf("only %d metrics named: %v", len(names), names)
		}
	})
}
