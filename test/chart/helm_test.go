// Package chart tests the Helm chart in charts/kubelet-csr-controller: it
// lints it, renders it with several value sets and checks the objects, and
// installs it into a real API server where the real controller binary runs
// with the chart's ServiceAccount to prove that its RBAC is enough, and no
// more.
package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../../charts/kubelet-csr-controller"
	release     = "kubelet-csr-controller"
	namespace   = "kubelet-csr-controller"
	fullname    = "kubelet-csr-controller" // the release name contains the chart name
	kubeVersion = "1.31.0"                 // helm template's own default (1.20) is below the chart's kubeVersion
)

// helm runs the helm binary that `make test` names in $HELM, with its own
// configuration and cache directories, and returns its standard output; the
// error carries its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Fatal("HELM is not set: run through `make test`, or export HELM=$(hack/build-tools.sh helm)/helm")
	}
	home := t.TempDir()
	cmd := exec.Command(bin, args...) //nolint:gosec // the test's own tool
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(err.Error() + ": " + stderr.String()))
	}
	return stdout.String(), nil
}

// valuesFile writes a values file and returns helm's flag for it.
func valuesFile(t *testing.T, values string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--values", path}
}

// template renders the chart's release objects with values (YAML) and extra
// flags: without the helm test hooks, which renderTests renders.
func template(t *testing.T, values string, flags ...string) (string, error) {
	t.Helper()
	return templateArgs(t, values, append([]string{"--skip-tests"}, flags...)...)
}

func templateArgs(t *testing.T, values string, flags ...string) (string, error) {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, valuesFile(t, values)...)
	return helm(t, append(args, flags...)...)
}

// renderTests renders only the helm test hooks.
func renderTests(t *testing.T, values string) *manifest {
	t.Helper()
	return renderWith(t, values, "--show-only", "templates/tests/leader.yaml")
}

// manifest is a rendered release: its documents by kind.
type manifest struct {
	docs map[string][][]byte // kind -> JSON documents
}

// render renders the chart and decodes every document; rendering must work.
func render(t *testing.T, values string) *manifest {
	t.Helper()
	return renderWith(t, values, "--skip-tests")
}

func renderWith(t *testing.T, values string, flags ...string) *manifest {
	t.Helper()
	out, err := templateArgs(t, values, flags...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	m, err := decodeManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// decodeManifest splits helm's output into JSON documents by kind. A
// duplicate key in a document (say, two annotations: blocks) is an error.
func decodeManifest(out string) (*manifest, error) {
	m := &manifest{docs: map[string][][]byte{}}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		} else if err != nil {
			return nil, err
		}
		doc, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, raw)
		}
		if string(doc) == "null" {
			continue // only comments
		}
		var head struct{ Kind string }
		if err := json.Unmarshal(doc, &head); err != nil {
			return nil, err
		}
		m.docs[head.Kind] = append(m.docs[head.Kind], doc)
	}
}

// strictCodecs decode Kubernetes objects refusing unknown and duplicate
// fields, so that a misspelt field in a template fails the tests.
var strictCodecs = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)

// one decodes the only object of kind into obj (a typed Kubernetes object,
// or a struct for kinds outside client-go), or reports that there is none.
func (m *manifest) one(t *testing.T, kind string, obj any) bool {
	t.Helper()
	docs := m.docs[kind]
	switch len(docs) {
	case 0:
		return false
	case 1:
	default:
		t.Fatalf("%d objects of kind %s, want one", len(docs), kind)
	}
	var err error
	if typed, ok := obj.(runtime.Object); ok {
		_, _, err = strictCodecs.UniversalDeserializer().Decode(docs[0], nil, typed)
	} else {
		dec := json.NewDecoder(bytes.NewReader(docs[0]))
		dec.DisallowUnknownFields()
		err = dec.Decode(obj)
	}
	if err != nil {
		t.Fatalf("decode %s: %v", kind, err)
	}
	return true
}

func (m *manifest) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if !m.one(t, "Deployment", d) {
		t.Fatal("no Deployment")
	}
	return d
}

func (m *manifest) configMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	c := &corev1.ConfigMap{}
	if !m.one(t, "ConfigMap", c) {
		t.Fatal("no ConfigMap")
	}
	return c
}

// clusterRole returns the controller's ClusterRole (not the
// metrics-reader one it makes for scrapers).
func (m *manifest) clusterRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	r := &rbacv1.ClusterRole{}
	if !m.named(t, "ClusterRole", fullname, r) {
		t.Fatal("no ClusterRole " + fullname)
	}
	return r
}

// named decodes the object of kind called name into obj (strictly), or
// reports that there is none.
func (m *manifest) named(t *testing.T, kind, name string, obj runtime.Object) bool {
	t.Helper()
	return m.find(t, kind, func(n, _ string) bool { return n == name }, obj)
}

// inNamespace decodes the object of kind in namespace ns into obj (strictly),
// or reports that there is none. Kinds the chart makes in two namespaces
// (Role, RoleBinding) are told apart this way.
func (m *manifest) inNamespace(t *testing.T, kind, ns string, obj runtime.Object) bool {
	t.Helper()
	return m.find(t, kind, func(_, n string) bool { return n == ns }, obj)
}

// find decodes the first object of kind whose name and namespace match.
func (m *manifest) find(t *testing.T, kind string, match func(name, namespace string) bool, obj runtime.Object) bool {
	t.Helper()
	for _, doc := range m.docs[kind] {
		var head struct {
			Metadata struct{ Name, Namespace string }
		}
		if err := json.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		if !match(head.Metadata.Name, head.Metadata.Namespace) {
			continue
		}
		if _, _, err := strictCodecs.UniversalDeserializer().Decode(doc, nil, obj); err != nil {
			t.Fatalf("decode %s: %v", kind, err)
		}
		return true
	}
	return false
}

// role returns the leader election Role in the release namespace, or nil.
func (m *manifest) role(t *testing.T) *rbacv1.Role {
	t.Helper()
	r := &rbacv1.Role{}
	if !m.inNamespace(t, "Role", namespace, r) {
		return nil
	}
	return r
}

// eventsRole returns the Role for Events in "default", or nil.
func (m *manifest) eventsRole(t *testing.T) *rbacv1.Role {
	t.Helper()
	r := &rbacv1.Role{}
	if !m.inNamespace(t, "Role", "default", r) {
		return nil
	}
	return r
}

// pdb returns the PodDisruptionBudget, or nil.
func (m *manifest) pdb(t *testing.T) *policyv1.PodDisruptionBudget {
	t.Helper()
	p := &policyv1.PodDisruptionBudget{}
	if !m.one(t, "PodDisruptionBudget", p) {
		return nil
	}
	return p
}
