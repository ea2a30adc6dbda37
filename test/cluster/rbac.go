package cluster

import (
	"context"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// The API server's RBAC authorizer reads roles and bindings from an informer,
// so a binding that has just been created may not grant anything yet. Every
// helper here that creates one waits until a SubjectAccessReview says it
// does, so that what a test does next is judged by the rules it set up.

// Review asks the API server once whether user in groups (and
// system:authenticated, as for any authenticated request) may do attrs.
func Review(ctx context.Context, cs kubernetes.Interface, user string, groups []string, attrs authorizationv1.ResourceAttributes) (*authorizationv1.SubjectAccessReview, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: append(append([]string{}, groups...), "system:authenticated"), ResourceAttributes: &attrs,
	}}
	return cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
}

// WaitAllowed polls SubjectAccessReviews until user in groups may do attrs.
func WaitAllowed(ctx context.Context, cs kubernetes.Interface, user string, groups []string, attrs authorizationv1.ResourceAttributes) error {
	var got *authorizationv1.SubjectAccessReview
	var last error // the API server's last error; retried until the timeout
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, last = Review(ctx, cs, user, groups, attrs)
		return last == nil && got.Status.Allowed, nil
	})
	if err != nil {
		answer := fmt.Sprint(last)
		if last == nil && got != nil {
			answer = fmt.Sprintf("denied: %q", got.Status.Reason)
		}
		what := attrs.Resource
		if attrs.Subresource != "" {
			what += "/" + attrs.Subresource
		}
		return fmt.Errorf("%s in %v still may not %s %s %s (last answer: %s): %w",
			user, groups, attrs.Verb, what, attrs.Name, answer, err)
	}
	return nil
}

// csrCreate is what filing a CSR needs.
var csrCreate = authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create"}

// bindClusterRole binds role to subject (a User or a Group) and waits until
// the subject may do attrs.
func bindClusterRole(ctx context.Context, cs kubernetes.Interface, name, role string, subject rbacv1.Subject, attrs authorizationv1.ResourceAttributes) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{subject},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
	}
	user, groups := subject.Name, []string(nil)
	if subject.Kind == rbacv1.GroupKind {
		user, groups = "someone-in-"+subject.Name, []string{subject.Name}
	}
	return WaitAllowed(ctx, cs, user, groups, attrs)
}

// AllowToFileCSRs lets user create and get CSRs while holding neither
// nodeclient nor selfnodeclient, as a stolen low-privilege identity might,
// and returns once the API server agrees. The grant is removed when the
// returned function is called.
func (c *Cluster) AllowToFileCSRs(ctx context.Context, user string) (revoke func(), err error) {
	cs := c.AdminClientset()
	name := "test-csr-creator-" + user
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"certificatesigningrequests"}, Verbs: []string{"create", "get"},
	}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create ClusterRole %s: %w", name, err)
	}
	revoke = func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	}
	subject := rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}
	if err := bindClusterRole(ctx, cs, name, name, subject, csrCreate); err != nil {
		revoke()
		return nil, err
	}
	return revoke, nil
}
