package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

const metricsNamespace = "kubelet_csr_controller"

// latencyBuckets span a fast path (creation timestamps have one-second
// resolution, so sub-second values mean "the same second") to a kubelet's
// 15-minute wait and beyond.
var latencyBuckets = []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600}

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	Decisions        *prometheus.CounterVec
	DecisionLatency  *prometheus.HistogramVec
	Issued           *prometheus.CounterVec
	SigningFailures  *prometheus.CounterVec
	IssuanceLatency  *prometheus.HistogramVec
	CAReloadFailures *prometheus.CounterVec
	Cleaned          *prometheus.CounterVec
	EventsQueued     prometheus.Gauge
	EventsDropped    prometheus.Counter
	// EventsRateLimited counts decision Events beyond a node's allowance.
	EventsRateLimited prometheus.Counter
	EventsFailed      prometheus.Counter
	Reviews           *prometheus.CounterVec
	TrustAnchors      *prometheus.GaugeVec
	TrustFailures     *prometheus.CounterVec
	Suspicious        *prometheus.CounterVec
	// The served-certificate audit's.
	AuditNodes          *prometheus.GaugeVec
	AuditEarliestExpiry prometheus.Gauge
	AuditPasses         prometheus.Counter
}

// NewMetrics creates the metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "decisions_total",
			Help: "Approver decisions by signer, verdict (approve, deny, retry, ignore), reason and mode (enforce, dryRun).",
		}, []string{"signer", "verdict", "reason", "mode"}),
		DecisionLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "decision_duration_seconds",
			Help:    "Time from a CSR's creation to its approval or denial.",
			Buckets: latencyBuckets,
		}, []string{"signer", "verdict"}),
		Issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "certificates_issued_total",
			Help: "Certificates issued, by signer.",
		}, []string{"signer"}),
		SigningFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "signing_failures_total",
			Help: "Approved CSRs that could not be signed, by signer and reason (SignerValidationFailure is final, CAUnavailable is retried).",
		}, []string{"signer", "reason"}),
		IssuanceLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "issuance_duration_seconds",
			Help:    "Time from a CSR's creation to its certificate.",
			Buckets: latencyBuckets,
		}, []string{"signer"}),
		CAReloadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "ca_reload_failures_total",
			Help: "CA file loads that failed and kept the previous CA, by signer.",
		}, []string{"signer"}),
		Cleaned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "cleaned_total",
			Help: "CSRs deleted by the cleaner, by signer and rule.",
		}, []string{"signer", "rule"}),
		EventsQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "events_queued",
			Help: "Events waiting to be recorded (they wait while CSRs do).",
		}),
		EventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "events_dropped_total",
			Help: "Events not recorded because the queue was full.",
		}),
		EventsRateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "events_rate_limited_total",
			Help: "Decision Events not recorded because their node (or requester) had used its allowance: 10 at once, then one per 6 s. The decisions themselves are written and counted in decisions_total.",
		}),
		EventsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "events_failed_total",
			Help: "Events the API server refused.",
		}),
		Reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "authorization_reviews_total",
			Help: "Requester authorizations, by answer: allowed, remembered (allowed moments ago, no review made), refused, refused_then_allowed (a refusal the API server withdrew when asked again), api_server_not_ready (a refusal from a server that is not ready, retried).",
		}, []string{"answer"}),
		TrustAnchors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "trust_bundle_anchors",
			Help: "CA certificates in a signer's published trust bundle, by signer and object (clustertrustbundle, configmap); set by the leader once published.",
		}, []string{"signer", "object"}),
		TrustFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "trust_bundle_publish_failures_total",
			Help: "Trust bundle publications that failed (retried), by signer and object (clustertrustbundle, configmap).",
		}, []string{"signer", "object"}),
		Suspicious: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "suspicious_requests_total",
			Help: "Kubelet CSRs that look like an attempt on a node's credentials, by signer and kind: not-node-or-bootstrap (the requester is neither a node nor a bootstrapper), other-nodes-address (a serving CSR for an address another Node lists).",
		}, []string{"signer", "kind"}),
		AuditNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "audit_nodes",
			Help: "Nodes by the outcome of the last audit of the certificate their kubelet serves: ok, no_endpoint, unreachable, untrusted, wrong_common_name, sans_missing, expired.",
		}, []string{"outcome"}),
		AuditEarliestExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "audit_earliest_not_after_timestamp_seconds",
			Help: "The earliest expiry among the certificates kubelets served at the last audit, as a Unix timestamp.",
		}),
		AuditPasses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "audit_passes_total",
			Help: "Audits of the certificates kubelets serve.",
		}),
	}
}

// register adds the metrics and the collectors (which read a manager's
// state at scrape time) to reg: every metric of the controller is
// registered here. A collector of the same name already there is replaced,
// so that the newest manager of a process is the one reported (one per
// process in the binary; tests start several).
func (m *Metrics) register(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
	all := []prometheus.Collector{m.Decisions, m.DecisionLatency, m.Issued, m.SigningFailures, m.IssuanceLatency,
		m.CAReloadFailures, m.Cleaned, m.EventsQueued, m.EventsDropped, m.EventsRateLimited, m.EventsFailed, m.Reviews, m.TrustAnchors, m.TrustFailures,
		m.Suspicious, m.AuditNodes, m.AuditEarliestExpiry, m.AuditPasses}
	for _, c := range append(all, collectors...) {
		if err := replace(reg, c); err != nil {
			return err
		}
	}
	return nil
}

// initSigners creates the per-signer series at zero, so that dashboards and
// alerts see them (and rate() works) before the first certificate or
// failure.
func (m *Metrics) initSigners(names []string) {
	for _, s := range names {
		m.Issued.WithLabelValues(s)
		m.CAReloadFailures.WithLabelValues(s)
		for _, reason := range []string{ReasonSignerValidation, failureReasonCA} {
			m.SigningFailures.WithLabelValues(s, reason)
		}
	}
}

// initSuspicious creates the series of suspicious requests at zero for the
// kubelet signers p approves, so that an alert on increase() sees the first.
func (m *Metrics) initSuspicious(p *approver.Policy) {
	if p.Handles(approver.KindNodeClient) {
		m.Suspicious.WithLabelValues(certificatesv1.KubeAPIServerClientKubeletSignerName, string(approver.SuspicionNotNodeOrBootstrap))
	}
	if p.Handles(approver.KindServing) {
		for _, s := range approver.Suspicions {
			m.Suspicious.WithLabelValues(certificatesv1.KubeletServingSignerName, string(s))
		}
	}
}

// count counts an authorization by its answer.
func (m *Metrics) count(answer string) { m.Reviews.WithLabelValues(answer).Inc() }

// replace registers c, replacing a collector of the same description.
func replace(reg prometheus.Registerer, c prometheus.Collector) error {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		reg.Unregister(are.ExistingCollector)
		return reg.Register(c)
	}
	return nil
}

// since returns the seconds from t to now, never negative.
func since(t, now time.Time) float64 { return max(now.Sub(t).Seconds(), 0) }

// pendingCollector reports, at scrape time, the pending CSRs and the age of
// the oldest one per signer, read from the informer cache. It reports nothing
// until this replica leads, so that the series come from one replica. (A
// standby keeps its caches warm too, the indexes start the informers on
// every replica, so that it takes over without relisting.)
type pendingCollector struct {
	reader  client.Reader
	signers []string
	elected <-chan struct{}
	now     func() time.Time
	// onPurpose reports a pending CSR this controller leaves pending on
	// purpose (for another approver, or in a dry run).
	onPurpose func(*certificatesv1.CertificateSigningRequest) bool

	pending, left, oldest *prometheus.Desc
}

func newPendingCollector(reader client.Reader, signers []string, elected <-chan struct{}, now func() time.Time, onPurpose func(*certificatesv1.CertificateSigningRequest) bool) *pendingCollector {
	return &pendingCollector{
		reader: reader, signers: signers, elected: elected, now: now, onPurpose: onPurpose,
		pending: prometheus.NewDesc(metricsNamespace+"_pending", "CSRs neither approved nor denied, by signer.", []string{"signer"}, nil),
		left:    prometheus.NewDesc(metricsNamespace+"_left_pending", "Pending CSRs this controller leaves pending on purpose (for another approver, a dry run, a signer it does not approve), by signer.", []string{"signer"}, nil),
		oldest:  prometheus.NewDesc(metricsNamespace+"_oldest_pending_age_seconds", "Age of the oldest pending CSR this controller is to decide, by signer (0 when none); CSRs left pending on purpose are not counted.", []string{"signer"}, nil),
	}
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.left
	ch <- c.oldest
}

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.elected:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list certificatesv1.CertificateSigningRequestList
	if err := c.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	now := c.now()
	count, left := map[string]int{}, map[string]int{}
	age := map[string]float64{}
	for i := range list.Items {
		csr := &list.Items[i]
		if !approver.StateOf(csr).Pending() {
			continue
		}
		s := csr.Spec.SignerName
		count[s]++
		if c.onPurpose(csr) {
			left[s]++
			continue
		}
		age[s] = max(age[s], since(csr.CreationTimestamp.Time, now))
	}
	for _, s := range c.signers {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(count[s]), s)
		ch <- prometheus.MustNewConstMetric(c.left, prometheus.GaugeValue, float64(left[s]), s)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age[s], s)
	}
}

// caCollector reports, at scrape time, each signer's CA expiry and whether it
// can sign now.
type caCollector struct {
	signers *signerTable
	now     func() time.Time

	notAfter, ready *prometheus.Desc
}

func newCACollector(signers *signerTable, now func() time.Time) *caCollector {
	return &caCollector{
		signers: signers, now: now,
		notAfter: prometheus.NewDesc(metricsNamespace+"_ca_not_after_timestamp_seconds", "Expiry of the CA certificate in use, as a Unix timestamp, by signer.", []string{"signer"}, nil),
		ready:    prometheus.NewDesc(metricsNamespace+"_ca_ready", "1 when the signer has a CA that can sign now, else 0.", []string{"signer"}, nil),
	}
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.notAfter
	ch <- c.ready
}

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, name := range c.signers.names {
		ready := 0.0
		if ca := c.signers.cas[name].Current(); ca != nil {
			ch <- prometheus.MustNewConstMetric(c.notAfter, prometheus.GaugeValue, float64(ca.Cert.NotAfter.Unix()), name)
			if ca.Usable(now) == nil {
				ready = 1
			}
		}
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready, name)
	}
}
