package controllers

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/signer"
)

const (
	// retainedAnnotation records, on a published bundle, until when each
	// anchor that has left the CA files stays (signer.EncodeRetained).
	retainedAnnotation = "nodecsr.io/retained-anchors"
	// managedByLabel marks the objects this controller publishes, so that
	// a projected volume can select the bundle by signer name and label.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "kubelet-csr-controller"
	// trustConfigMapKey is the ConfigMap key of the anchors, as in
	// kube-root-ca.crt.
	trustConfigMapKey = "ca.crt"
)

// trustTarget is one signer whose trust anchors are published.
type trustTarget struct {
	signer string
	bundle signer.Bundle
	ca     *signer.FileCA
	// lifetime is the longest certificate the signer issues: how long an
	// anchor that left the CA files stays published.
	lifetime time.Duration
}

// trustTargets are the signers of t that publish a bundle.
func (t *signerTable) trustTargets() []trustTarget {
	var out []trustTarget
	for _, name := range t.names {
		c := t.configs[name]
		if c.Bundle != nil {
			out = append(out, trustTarget{signer: name, bundle: *c.Bundle, ca: t.cas[name], lifetime: c.Duration})
		}
	}
	return out
}

// trustObject is a kind of object a signer's anchors are written to: a
// ClusterTrustBundle, or a ConfigMap for clients that cannot read those.
type trustObject struct {
	kind string // the metrics' object label
	// empty returns the object to create, named, with no content.
	empty func(t trustTarget) client.Object
	get   func(client.Object) string
	set   func(client.Object, string)
}

var (
	clusterTrustBundles = trustObject{
		kind: "clustertrustbundle",
		empty: func(t trustTarget) client.Object {
			return &certificatesv1.ClusterTrustBundle{
				ObjectMeta: metav1.ObjectMeta{Name: t.bundle.Name},
				Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: t.signer},
			}
		},
		get: func(o client.Object) string { return o.(*certificatesv1.ClusterTrustBundle).Spec.TrustBundle },
		set: func(o client.Object, pem string) { o.(*certificatesv1.ClusterTrustBundle).Spec.TrustBundle = pem },
	}
	trustConfigMaps = trustObject{
		kind: "configmap",
		empty: func(t trustTarget) client.Object {
			return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: t.bundle.ConfigMapNamespace, Name: t.bundle.ConfigMapName}}
		},
		get: func(o client.Object) string { return o.(*corev1.ConfigMap).Data[trustConfigMapKey] },
		set: func(o client.Object, pem string) {
			cm := o.(*corev1.ConfigMap)
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[trustConfigMapKey] = pem
		},
	}
)

// trustPublisher keeps each signer's trust bundle equal to its CA files'
// anchors, plus the anchors that left them and may still have signed
// certificates in use (signer.PlanTrust). It runs on the leader, publishes
// at start, on every CA change and every resync (which also repairs an edited
// or deleted bundle), and retries failures with backoff. It reads the
// objects from the API server, not a cache: a few reads per resync cost
// less than caching every ConfigMap.
type trustPublisher struct {
	client  client.Client
	live    client.Reader
	targets []trustTarget
	// changed is signalled when a CA file changes.
	changed <-chan struct{}
	resync  time.Duration
	now     func() time.Time
	metrics *Metrics
	log     logr.Logger
	// notServed remembers that the API server serves no
	// ClusterTrustBundles, so that it is said once.
	notServed bool
}

// NeedLeaderElection is true: one replica writes the bundles.
func (p *trustPublisher) NeedLeaderElection() bool { return true }

func (p *trustPublisher) Start(ctx context.Context) error {
	const firstRetry, maxRetry = time.Second, time.Minute
	retry := firstRetry
	for {
		wait := p.resync
		drop, err := p.publishAll(ctx)
		if err != nil {
			wait, retry = min(retry, p.resync), min(2*retry, maxRetry)
		} else {
			retry = firstRetry
		}
		if !drop.IsZero() {
			// Publish again when the first retained anchor is due to go.
			wait = min(wait, max(drop.Sub(p.now()), time.Second))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-p.changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// publishAll publishes every target. It returns when the first retained
// anchor is due to be dropped (zero if none is), and an error if a
// publication failed in a way worth retrying soon.
func (p *trustPublisher) publishAll(ctx context.Context) (time.Time, error) {
	var (
		errs  []error
		first time.Time
	)
	for _, t := range p.targets {
		ca := t.ca.Current()
		if ca == nil {
			continue // nothing to publish yet; the first load signals changed
		}
		anchors := ca.Anchors()
		kinds := []trustObject{clusterTrustBundles}
		if t.bundle.ConfigMapName != "" {
			kinds = append(kinds, trustConfigMaps)
		}
		for _, k := range kinds {
			drop, err := p.publish(ctx, t, k, anchors)
			if err != nil {
				errs = append(errs, err)
			}
			if !drop.IsZero() && (first.IsZero() || drop.Before(first)) {
				first = drop
			}
		}
	}
	return first, errors.Join(errs...)
}

// errNotServed means the API server has no ClusterTrustBundles: retrying
// before the next resync would not help.
var errNotServed = errors.New("the API server does not serve certificates.k8s.io/v1 ClusterTrustBundles")

// publish writes t's planned trust into one object of kind k, creating it
// if needed, and only when its content or retention record changes. It
// returns when the first anchor it retains is due to go (zero if none).
func (p *trustPublisher) publish(ctx context.Context, t trustTarget, k trustObject, anchors []*x509.Certificate) (time.Time, error) {
	drop, err := p.write(ctx, t, k, anchors)
	switch {
	case err == nil:
		return drop, nil
	case errors.Is(err, errNotServed):
		p.metrics.TrustFailures.WithLabelValues(t.signer, k.kind).Inc()
		if !p.notServed {
			p.notServed = true
			p.log.Error(err, "trust bundles are not published: Kubernetes 1.37 serves them; turn signers[].trustBundle.enabled off on older clusters", "signer", t.signer, "bundle", t.bundle.Name)
		}
		return time.Time{}, nil
	default:
		p.metrics.TrustFailures.WithLabelValues(t.signer, k.kind).Inc()
		obj := k.empty(t)
		p.log.Error(err, "trust bundle not published; retrying", "signer", t.signer, "object", k.kind, "name", obj.GetName(), "namespace", obj.GetNamespace())
		return time.Time{}, err
	}
}

func (p *trustPublisher) write(ctx context.Context, t trustTarget, k trustObject, anchors []*x509.Certificate) (time.Time, error) {
	obj := k.empty(t)
	err := p.live.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	if meta.IsNoMatchError(err) {
		return time.Time{}, errNotServed
	}
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return time.Time{}, fmt.Errorf("read: %w", err)
	}
	if create {
		obj = k.empty(t)
	}
	published := signer.Trust{Anchors: signer.DecodeAnchors(k.get(obj))}
	published.Retained, err = signer.DecodeRetained(obj.GetAnnotations()[retainedAnnotation])
	if err != nil {
		// Every leaving anchor then counts as leaving now: kept longest.
		p.log.Error(err, "retention record unreadable; anchors that left the CA files are kept for a whole certificate lifetime from now", "signer", t.signer, "object", k.kind, "name", obj.GetName())
	}
	plan := signer.PlanTrust(anchors, published, t.lifetime, p.now())
	content, retained := signer.EncodeAnchors(plan.Anchors), signer.EncodeRetained(plan.Retained)
	if !create && k.get(obj) == content && obj.GetAnnotations()[retainedAnnotation] == retained && obj.GetLabels()[managedByLabel] == managedBy {
		p.metrics.TrustAnchors.WithLabelValues(t.signer, k.kind).Set(float64(len(plan.Anchors)))
		return plan.FirstDrop(), nil
	}
	k.set(obj, content)
	setMap(obj.GetAnnotations, obj.SetAnnotations, retainedAnnotation, retained)
	setMap(obj.GetLabels, obj.SetLabels, managedByLabel, managedBy)
	if create {
		err = p.client.Create(ctx, obj)
	} else {
		err = p.client.Update(ctx, obj)
	}
	if meta.IsNoMatchError(err) {
		return time.Time{}, errNotServed
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("write: %w", err)
	}
	p.metrics.TrustAnchors.WithLabelValues(t.signer, k.kind).Set(float64(len(plan.Anchors)))
	subjects := make([]string, 0, len(plan.Anchors))
	for _, c := range plan.Anchors {
		subjects = append(subjects, c.Subject.String())
	}
	p.log.Info("trust bundle published", "signer", t.signer, "object", k.kind, "name", obj.GetName(), "namespace", obj.GetNamespace(),
		"anchors", subjects, "retainedUntil", retained, "created", create)
	return plan.FirstDrop(), nil
}

// setMap sets key to value in an object's labels or annotations, deleting
// it when value is empty.
func setMap(get func() map[string]string, set func(map[string]string), key, value string) {
	m := get()
	if value == "" {
		delete(m, key)
		return
	}
	if m == nil {
		m = map[string]string{}
	}
	m[key] = value
	set(m)
}
