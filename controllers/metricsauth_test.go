package controllers

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"Bearer abc.def", "abc.def", true},
		{"bearer abc", "abc", true},
		{"Bearer  abc ", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic dXNlcjpwYXNz", "", false},
		{"Bearer a b", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := bearerToken(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

// The reviews behind a scrape are made once per token and URL while the
// answer is remembered: allowed for a minute, refused for ten seconds, an
// API error not at all. (The real API server's answers are checked in
// test/chart, where a scrape is refused without a token and allowed with
// the metrics-reader role.)
func TestMetricsAuthRemembersAnswers(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	reviews := 0
	var failing bool
	a := &metricsAuth{
		review: func(_ context.Context, token string) (*authenticationv1.TokenReview, error) {
			reviews++
			if failing {
				return nil, errors.New("connection refused")
			}
			tr := &authenticationv1.TokenReview{}
			tr.Status.Authenticated = token != "unknown"
			tr.Status.User.Username = token
			return tr, nil
		},
		access: func(_ context.Context, sar *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
			sar.Status.Allowed = sar.Spec.User == "reader" && sar.Spec.NonResourceAttributes.Path == "/metrics" && sar.Spec.NonResourceAttributes.Verb == "get"
			return sar, nil
		},
		now:     func() time.Time { return now },
		answers: map[answerKey]answer{},
	}
	ctx := context.Background()
	decide := func(token, path string, want int) {
		t.Helper()
		got, err := a.decide(ctx, token, "get", path)
		if err != nil || got != want {
			t.Fatalf("decide(%s, %s) = %d, %v; want %d", token, path, got, err, want)
		}
	}
	decide("reader", "/metrics", http.StatusOK)
	decide("reader", "/metrics", http.StatusOK)
	decide("unknown", "/metrics", http.StatusUnauthorized)
	decide("stranger", "/metrics", http.StatusForbidden)
	decide("reader", "/debug/pprof/", http.StatusForbidden)
	if reviews != 4 {
		t.Errorf("%d TokenReviews, want 4 (one per token and URL)", reviews)
	}
	now = now.Add(refusedFor)
	decide("stranger", "/metrics", http.StatusForbidden)
	decide("reader", "/metrics", http.StatusOK)
	if reviews != 5 {
		t.Errorf("%d TokenReviews, want 5: a refusal is asked again after %s, an allowance is not", reviews, refusedFor)
	}
	now = now.Add(allowedFor)
	failing = true
	if _, err := a.decide(ctx, "reader", "get", "/metrics"); err == nil {
		t.Fatal("an API error must not be an answer")
	}
	failing = false
	decide("reader", "/metrics", http.StatusOK)
	if reviews != 7 {
		t.Errorf("%d TokenReviews, want 7: an error is not remembered", reviews)
	}
}
