package chart

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

const testName = fullname + "-test"

func TestHelmTestWaitsForAReadyLeaderWithRightsToLookOnly(t *testing.T) {
	tests := []struct {
		name      string
		values    string
		lease     string
		wantRules []string
	}{
		{"the defaults look for the holder of the release's Lease", "", "kubelet-csr-controller", []string{"get coordination.k8s.io/leases kubelet-csr-controller", "list core/pods"}},
		{"the Lease name follows the configuration", "config: {manager: {leaderElection: {leaseName: my-lease}}}", "my-lease", []string{"get coordination.k8s.io/leases my-lease", "list core/pods"}},
		{"without leader election any ready replica passes and no Lease is read", "replicaCount: 1\nleaderElection: {enabled: false}", "", []string{"list core/pods"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := renderTests(t, tt.values)
			pod := &corev1.Pod{}
			if !m.one(t, "Pod", pod) {
				t.Fatal("no test Pod")
			}
			for kind, docs := range m.docs {
				for _, doc := range docs {
					if !strings.Contains(string(doc), `"helm.sh/hook":"test"`) {
						t.Errorf("a %s of the test is not a test hook: %s", kind, doc)
					}
				}
			}
			c := pod.Spec.Containers[0]
			wantArgs := []string{"status", "--namespace=" + namespace, "--lease=" + tt.lease,
				"--selector=app.kubernetes.io/instance=" + release + ",app.kubernetes.io/name=kubelet-csr-controller", "--timeout=2m"}
			if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			if c.Image != "ghcr.io/nodecsr/kubelet-csr-controller:"+appVersion(t) || pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.ServiceAccountName != testName {
				t.Errorf("image %q restartPolicy %q serviceAccountName %q", c.Image, pod.Spec.RestartPolicy, pod.Spec.ServiceAccountName)
			}
			// The release's selectors must not take the test Pod for a replica.
			if labels.SelectorFromSet(selectorLabels).Matches(labels.Set(pod.Labels)) {
				t.Errorf("the test Pod's labels %v match the release's selector", pod.Labels)
			}
			role := &rbacv1.Role{}
			if !m.one(t, "Role", role) {
				t.Fatal("no Role")
			}
			if diff := cmp.Diff(tt.wantRules, grants(role.Rules)); diff != "" {
				t.Errorf("the test's Role grants (-want +got):\n%s", diff)
			}
			rb := &rbacv1.RoleBinding{}
			if !m.one(t, "RoleBinding", rb) || rb.RoleRef.Name != testName || len(rb.Subjects) != 1 || rb.Subjects[0].Name != testName {
				t.Errorf("the RoleBinding does not bind the test's Role to its ServiceAccount: %+v", rb)
			}
		})
	}
	t.Run("helmTest.enabled=false renders no test", func(t *testing.T) {
		t.Parallel()
		if _, err := templateArgs(t, "helmTest: {enabled: false}", "--show-only", "templates/tests/leader.yaml"); err == nil || !strings.Contains(err.Error(), "could not find template") {
			t.Errorf("want nothing rendered, got error %v", err)
		}
	})
}

// proveHelmTest runs what helm test runs, `kubelet-csr-controller status`,
// with a token of the test's own ServiceAccount and the rights its Role
// gives, against the controller proveRBAC left leading. No kubelet runs, so
// the leader's Pod is made here, named as the Lease's holder, and marked
// Ready by hand: status must fail before and pass after.
func proveHelmTest(ctx context.Context, t *testing.T, c *cluster.Cluster, admin *kubernetes.Clientset) {
	t.Helper()
	t.Run("helm test passes with its own rights once the leader's Pod is ready and not before", func(t *testing.T) {
		m := renderTests(t, "")
		sa, role, rb := &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}
		m.one(t, "ServiceAccount", sa)
		m.one(t, "Role", role)
		m.one(t, "RoleBinding", rb)
		if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.RbacV1().Roles(namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.RbacV1().RoleBindings(namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		user := "system:serviceaccount:" + namespace + ":" + testName
		if err := cluster.WaitAllowed(ctx, admin, user, saGroups, authorizationv1.ResourceAttributes{Resource: "pods", Verb: "list", Namespace: namespace}); err != nil {
			t.Fatal(err)
		}
		kubeconfig := filepath.Join(c.Dir, "helm-test.kubeconfig")
		if err := cluster.WriteKubeconfig(tokenConfig(ctx, t, c, admin, testName), kubeconfig); err != nil {
			t.Fatal(err)
		}

		lease, err := admin.CoordinationV1().Leases(namespace).Get(ctx, "kubelet-csr-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ := strings.Cut(ptr.Deref(lease.Spec.HolderIdentity, ""), "_")
		pod, err := admin.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: host, Labels: selectorLabels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "kubelet-csr-controller"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create the leader's Pod %q: %v", host, err)
		}

		bin := cluster.ControllerBinaryForTest(ctx, t)
		status := func(timeout string) (string, error) {
			args := append([]string{"status", "--kubeconfig", kubeconfig, "--timeout", timeout}, statusArgs(t, m)...)
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput() //nolint:gosec // the binary under test
			return string(out), err
		}
		if out, err := status("3s"); err == nil || !strings.Contains(out, "the leader "+host+" is not ready") {
			t.Errorf("status with the leader's Pod not ready: %v\n%s", err, out)
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if _, err := admin.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if out, err := status("30s"); err != nil || !strings.Contains(out, namespace+"/"+host+" leads") {
			t.Errorf("status with the leader's Pod ready: %v\n%s", err, out)
		}
	})
}

// statusArgs are the test Pod's arguments after "status" but for --timeout.
func statusArgs(t *testing.T, m *manifest) []string {
	t.Helper()
	pod := &corev1.Pod{}
	m.one(t, "Pod", pod)
	var out []string
	for _, a := range pod.Spec.Containers[0].Args[1:] {
		if !strings.HasPrefix(a, "--timeout=") {
			out = append(out, a)
		}
	}
	return out
}
