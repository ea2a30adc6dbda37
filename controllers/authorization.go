package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// authorizer answers the approver's SubjectAccessReviews: it asks the API
// server with the CSR's requester, remembers allowed answers briefly, and
// tells a refusal from a server that is not ready yet.
type authorizer struct {
	client client.Client
	// ready reports whether the API server is ready (GET /readyz).
	ready func(context.Context) error
	// ttl keeps allowed answers this long (0: never); grace bounds the
	// retries of a refusal from a server that is not ready.
	ttl, grace time.Duration
	now        func() time.Time
	reviews    reviewCounter

	allowed authzCache
	// readinessUnknown logs, once, that /readyz cannot be read.
	readinessUnknown sync.Once
}

// reviewCounter counts authorizations by answer.
type reviewCounter interface{ count(answer string) }

// authorize asks the API server whether the CSR's requester holds the
// permission, with the requester's user, UID, groups and extra.
func (a *authorizer) authorize(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, attrs *authorizationv1.ResourceAttributes) (*approver.Authorization, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(csr.Spec.Extra))
	for k, v := range csr.Spec.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	spec := authorizationv1.SubjectAccessReviewSpec{
		User:               csr.Spec.Username,
		UID:                csr.Spec.UID,
		Groups:             csr.Spec.Groups,
		Extra:              extra,
		ResourceAttributes: attrs.DeepCopy(),
	}
	now := a.now()
	if a.ttl > 0 && a.allowed.hit(spec, now) {
		a.reviews.count("remembered")
		return &approver.Authorization{Allowed: true, Reason: "allowed by a SubjectAccessReview moments ago"}, nil
	}
	sar, err := a.review(ctx, spec)
	if err != nil {
		return nil, err
	}
	answer, note := "allowed", ""
	if !sar.Status.Allowed && a.ready != nil {
		if sar, answer, note, err = a.confirmRefusal(ctx, csr, sar, now); err != nil {
			return nil, err
		}
	}
	if sar.Status.Allowed {
		a.allowed.store(spec, now, a.ttl)
	}
	a.reviews.count(answer)
	out := &approver.Authorization{Allowed: sar.Status.Allowed, Reason: sar.Status.Reason, EvaluationError: sar.Status.EvaluationError}
	if note != "" && out.EvaluationError == "" {
		out.EvaluationError = note
	}
	return out, nil
}

// confirmRefusal decides whether a refused review counts. A kube-apiserver
// that has just started answers from RBAC rules it has not finished loading:
// it refuses what it will allow a moment later, and /readyz fails until it
// has them. So a refusal counts when the server is ready afterwards and
// refuses again. While it is not ready the reconcile fails and is retried
// with back-off (from 50 ms), within the grace period after the CSR's
// creation; after that, or when readiness cannot be read at all (401, 403,
// 404), the refusal stands, with a note saying so: an unauthorized
// requester cannot make the controller retry forever.
func (a *authorizer) confirmRefusal(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, refused *authorizationv1.SubjectAccessReview, now time.Time) (sar *authorizationv1.SubjectAccessReview, answer, note string, err error) {
	spec := refused.Spec
	readyErr := a.ready(ctx)
	switch {
	case readyErr == nil:
		if sar, err = a.review(ctx, spec); err != nil {
			return nil, "", "", err
		}
		if sar.Status.Allowed {
			return sar, "refused_then_allowed", "", nil
		}
		return sar, "refused", "", nil
	case errors.Is(readyErr, ErrReadinessUnknown):
		a.readinessUnknown.Do(func() {
			log.FromContext(ctx).Error(readyErr, "refused SubjectAccessReviews count without a readiness check; grant get on /readyz to tell a restarting API server from a refusal")
		})
		return refused, "refused", "", nil
	case now.Sub(csr.CreationTimestamp.Time) < a.grace:
		a.reviews.count("api_server_not_ready")
		return nil, "", "", fmt.Errorf("a SubjectAccessReview refused %q, but the API server is not ready, so its authorizer may not have loaded its rules yet: %w", spec.User, readyErr)
	default:
		return refused, "refused", fmt.Sprintf("the API server was still not ready %s after the request was made: %v", a.grace, readyErr), nil
	}
}

func (a *authorizer) review(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReview, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: spec}
	if err := a.client.Create(ctx, sar); err != nil {
		return nil, fmt.Errorf("create SubjectAccessReview for %q: %w", spec.User, err)
	}
	return sar, nil
}

// ErrReadinessUnknown is returned by an APIServerReady check that could
// not read the API server's readiness (not allowed, or no such endpoint).
var ErrReadinessUnknown = errors.New("the API server's readiness cannot be read")

// readyzTimeout bounds one readiness check: the manager's HTTP client has
// no timeout of its own.
const readyzTimeout = 5 * time.Second

// apiServerReadyz returns a check of the API server's /readyz, which fails
// until the server has loaded what it authorizes from (its informer-sync
// check) among others.
func apiServerReadyz(cfg *rest.Config, hc *http.Client) (func(context.Context) error, error) {
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, readyzTimeout)
		defer cancel()
		res := dc.RESTClient().Get().AbsPath("/readyz").Do(ctx)
		err := res.Error()
		if err == nil {
			return nil
		}
		var code int
		switch res.StatusCode(&code); code {
		case 0:
			return fmt.Errorf("GET /readyz: %w", err)
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return fmt.Errorf("%w: GET /readyz answered %d: %w", ErrReadinessUnknown, code, err)
		}
		return fmt.Errorf("GET /readyz answered %d: %w", code, err)
	}, nil
}

// authzCache remembers allowed SubjectAccessReview answers for a short
// time, so that a flood of bootstrap CSRs made with one bootstrap token (a
// cluster scaling up) costs one review, not one each. A denial is never
// remembered, and a revoked permission applies after at most the TTL, as
// with the API server's own webhook authorizer cache. The zero value
// remembers nothing.
type authzCache struct {
	mu      sync.Mutex
	expires map[[sha256.Size]byte]time.Time
	pruneAt int // the size at which expired entries are dropped next
}

// hit reports whether spec was allowed less than its TTL ago.
func (c *authzCache) hit(spec authorizationv1.SubjectAccessReviewSpec, now time.Time) bool {
	key, ok := authzKey(spec)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, found := c.expires[key]
	return found && now.Before(exp)
}

// store remembers that spec was allowed, for ttl.
func (c *authzCache) store(spec authorizationv1.SubjectAccessReviewSpec, now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	key, ok := authzKey(spec)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expires == nil {
		c.expires = map[[sha256.Size]byte]time.Time{}
	}
	pruneWhenGrown(c.expires, &c.pruneAt, func(exp time.Time) bool { return !now.Before(exp) })
	c.expires[key] = now.Add(ttl)
}

// authzKey identifies a review by everything it asks: user, UID, groups,
// extra and attributes (JSON encodes map keys sorted, so equal reviews give
// equal keys).
func authzKey(spec authorizationv1.SubjectAccessReviewSpec) ([sha256.Size]byte, bool) {
	b, err := json.Marshal(spec)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(b), true
}
