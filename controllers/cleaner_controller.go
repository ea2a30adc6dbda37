package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CleanerOptions configure the Cleaner. The rules are those of
// kube-controller-manager's csrcleaner (k8s.io/kubernetes v1.37.2,
// pkg/controller/certificates/cleaner), with every age configurable.
type CleanerOptions struct {
	// AllSigners cleans every CSR; otherwise only those of Signers, which
	// Setup fills with the signers this controller approves or signs.
	AllSigners bool
	Signers    []string

	IssuedAfter           time.Duration // after approval, once issued
	DeniedAfter           time.Duration // after denial
	FailedAfter           time.Duration // after failure
	PendingAfter          time.Duration // after creation, with no condition at all
	ApprovedUnissuedAfter time.Duration // after approval, never issued
	DeleteExpired         bool          // once the issued certificate has expired

	// Interval is how often every CSR is looked at (kube-controller-manager:
	// hourly).
	Interval time.Duration
	// Workers delete in parallel when many CSRs are due at once.
	Workers int
	Now     func() time.Time
}

// Cleanup rules, as reported in metrics and logs.
const (
	RuleIssued           = "Issued"
	RuleDenied           = "Denied"
	RuleFailed           = "Failed"
	RulePending          = "Pending"
	RuleApprovedUnissued = "ApprovedUnissued"
	RuleExpired          = "Expired"
)

// CleanupAt says when csr becomes due for deletion and under which rule (the
// earliest that applies). ok is false when no rule applies to it as it is.
func CleanupAt(csr *certificatesv1.CertificateSigningRequest, o *CleanerOptions) (at time.Time, rule string, ok bool) {
	consider := func(t time.Time, r string) {
		if !ok || t.Before(at) {
			at, rule, ok = t, r, true
		}
	}
	issued := len(csr.Status.Certificate) > 0
	if len(csr.Status.Conditions) == 0 {
		consider(csr.CreationTimestamp.Add(o.PendingAfter), RulePending)
	}
	for _, c := range csr.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		when := conditionTime(csr, c)
		switch c.Type {
		case certificatesv1.CertificateApproved:
			if issued {
				consider(when.Add(o.IssuedAfter), RuleIssued)
				if o.DeleteExpired {
					if notAfter, err := certificateNotAfter(csr.Status.Certificate); err == nil {
						consider(notAfter, RuleExpired)
					}
				}
			} else {
				consider(when.Add(o.ApprovedUnissuedAfter), RuleApprovedUnissued)
			}
		case certificatesv1.CertificateDenied:
			consider(when.Add(o.DeniedAfter), RuleDenied)
		case certificatesv1.CertificateFailed:
			consider(when.Add(o.FailedAfter), RuleFailed)
		}
	}
	return at, rule, ok
}

// conditionTime is when a condition was last set; the API server fills
// lastUpdateTime, older objects may only have the creation time.
func conditionTime(csr *certificatesv1.CertificateSigningRequest, c certificatesv1.CertificateSigningRequestCondition) time.Time {
	switch {
	case !c.LastUpdateTime.IsZero():
		return c.LastUpdateTime.Time
	case !c.LastTransitionTime.IsZero():
		return c.LastTransitionTime.Time
	}
	return csr.CreationTimestamp.Time
}

// Cleaner deletes CSRs that are finished or abandoned. Every Interval it
// looks at each cached CSR, without copying it, and deletes those whose
// deadline has passed: a pass over ten thousand CSRs takes milliseconds and
// keeps nothing in memory between passes.
type Cleaner struct {
	Client  client.Client
	Metrics *Metrics
	Options CleanerOptions
	Log     logr.Logger
}

// Start sweeps at once and then every Interval until ctx ends.
func (c *Cleaner) Start(ctx context.Context) error {
	ticker := time.NewTicker(c.Options.Interval)
	defer ticker.Stop()
	for {
		if _, err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.Log.Error(err, "cleaning CSRs")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// NeedLeaderElection is true: only the leader deletes.
func (c *Cleaner) NeedLeaderElection() bool { return true }

// Sweep deletes every CSR that is due now and returns how many it deleted.
func (c *Cleaner) Sweep(ctx context.Context) (int, error) {
	var list certificatesv1.CertificateSigningRequestList
	if err := c.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("list CSRs: %w", err)
	}
	now := c.Options.Now()
	type due struct {
		csr  *certificatesv1.CertificateSigningRequest
		rule string
	}
	var todo []due
	for i := range list.Items {
		csr := &list.Items[i]
		if !c.Options.AllSigners && !slices.Contains(c.Options.Signers, csr.Spec.SignerName) {
			continue
		}
		if at, rule, ok := CleanupAt(csr, &c.Options); ok && !now.Before(at) {
			todo = append(todo, due{csr, rule})
		}
	}
	var (
		mu      sync.Mutex
		deleted int
		errs    []error
		wg      sync.WaitGroup
	)
	next := make(chan due)
	for range max(c.Options.Workers, 1) {
		wg.Go(func() {
			for d := range next {
				gone, err := c.delete(ctx, d.csr, d.rule)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if gone {
					deleted++
				}
				mu.Unlock()
			}
		})
	}
	for _, d := range todo {
		next <- d
	}
	close(next)
	wg.Wait()
	return deleted, errors.Join(errs...)
}

// delete removes exactly the CSR that was judged: one that changed since
// (approved at the last moment, say) is judged again on the next pass.
func (c *Cleaner) delete(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, rule string) (bool, error) {
	uid, rv := csr.UID, csr.ResourceVersion
	err := c.Client.Delete(ctx, csr, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("delete CSR %s: %w", csr.Name, err)
	}
	c.Metrics.Cleaned.WithLabelValues(csr.Spec.SignerName, rule).Inc()
	c.Log.Info("deleted", "csr", csr.Name, "signer", csr.Spec.SignerName, "rule", rule)
	return true, nil
}
