package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// A workload is a set of CSRs prepared before the clock starts, and how
// they are filed.
type workload struct {
	name string
	csrs []*certificatesv1.CertificateSigningRequest
	// client files CSR i: the identity the API server records as its
	// requester.
	client func(i int) kubernetes.Interface
	// rate is CSRs per second; 0 files them all at once with `creators`
	// concurrent creators.
	rate     float64
	creators int
	// approve, when set, approves each serving CSR right after creating it
	// (for kube-controller-manager, which never approves serving CSRs).
	approve kubernetes.Interface
	// first is how many of csrs are filed at the start (0: all of them).
	// Each later one is filed by then, once an earlier one is issued.
	first int
	// then is called, by one of `creators` workers, when csrs[i] is
	// issued: it does what a kubelet does next and returns the index of the
	// CSR to file, or -1.
	then func(ctx context.Context, i int) (int, error)
}

// clientBurst prepares n bootstrap client CSRs filed with a bootstrap token.
func clientBurst(prefix string, n int, bootstrap kubernetes.Interface) (*workload, error) {
	w := &workload{name: "client burst", creators: 16, client: func(int) kubernetes.Interface { return bootstrap }}
	for i := range n {
		c := pki.ClientBootstrap(fmt.Sprintf("%s-node-%d", prefix, i), "abcdef")
		c.Name = fmt.Sprintf("%s-client-%d", prefix, i)
		o, err := object(c)
		if err != nil {
			return nil, err
		}
		w.csrs = append(w.csrs, o)
	}
	return w, nil
}

// steady prepares rate*d bootstrap client CSRs filed at a steady rate.
func steady(prefix string, rate float64, d time.Duration, bootstrap kubernetes.Interface) (*workload, error) {
	w, err := clientBurst(prefix, int(rate*d.Seconds()), bootstrap)
	if err != nil {
		return nil, err
	}
	w.name, w.rate = fmt.Sprintf("steady %g/s", rate), rate
	return w, nil
}

// servingBurst registers n Nodes (at most 65536) and prepares one serving
// CSR for each, filed by the node itself. Each round's Nodes have addresses
// of their own: an address two Nodes list is refused to both.
func servingBurst(ctx context.Context, round, n int, c *cluster.Cluster, admin kubernetes.Interface) (*workload, error) {
	w := &workload{name: "serving burst", creators: 16}
	clients := make([]kubernetes.Interface, n)
	prefix := fmt.Sprintf("serving%d", round)
	for i := range n {
		node := fmt.Sprintf("%s-node-%d", prefix, i)
		ip := fmt.Sprintf("10.%d.%d.%d", 100+round, (i/256)%256, i%256)
		if err := registerNode(ctx, admin, node, ip); err != nil {
			return nil, err
		}
		s := pki.Serving(node, []string{node}, []net.IP{net.ParseIP(ip)})
		s.Name = fmt.Sprintf("%s-serving-%d", prefix, i)
		o, err := object(s)
		if err != nil {
			return nil, err
		}
		w.csrs = append(w.csrs, o)
		if clients[i], err = nodeClient(c, node); err != nil {
			return nil, err
		}
	}
	w.client = func(i int) kubernetes.Interface { return clients[i] }
	return w, nil
}

// nodeClient acts as the node's kubelet, unthrottled.
func nodeClient(c *cluster.Cluster, node string) (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(unlimited(c.As("system:node:"+node, cluster.NodesGroup)))
}

// nodeJoin prepares n Nodes (at most 65536) joining at once, as kubelets
// do: each files a bootstrap client CSR; once its client certificate is
// issued it registers its Node and files a serving CSR for the Node's
// addresses, as the node. csrs[i] is node i's client CSR and csrs[n+i] its
// serving CSR. The addresses are 10.99.x.y, apart from the serving
// bursts'.
func nodeJoin(ctx context.Context, n int, c *cluster.Cluster, admin, bootstrap kubernetes.Interface) (*workload, error) {
	w := &workload{name: fmt.Sprintf("%d nodes join", n), creators: 16, first: n, csrs: make([]*certificatesv1.CertificateSigningRequest, 2*n)}
	nodes := make([]kubernetes.Interface, n)
	name := func(i int) string { return fmt.Sprintf("join-node-%d", i) }
	ip := func(i int) string { return fmt.Sprintf("10.99.%d.%d", (i/256)%256, i%256) }
	for i := range n {
		cl := pki.ClientBootstrap(name(i), "abcdef")
		cl.Name = fmt.Sprintf("join-client-%d", i)
		sv := pki.Serving(name(i), []string{name(i)}, []net.IP{net.ParseIP(ip(i))})
		sv.Name = fmt.Sprintf("join-serving-%d", i)
		var err error
		if w.csrs[i], err = object(cl); err != nil {
			return nil, err
		}
		if w.csrs[n+i], err = object(sv); err != nil {
			return nil, err
		}
		if nodes[i], err = nodeClient(c, name(i)); err != nil {
			return nil, err
		}
	}
	w.client = func(i int) kubernetes.Interface {
		if i < n {
			return bootstrap
		}
		return nodes[i-n]
	}
	w.then = func(ctx context.Context, i int) (int, error) {
		if i >= n {
			return -1, nil // a serving certificate: this node has joined
		}
		return n + i, registerNode(ctx, admin, name(i), ip(i))
	}
	return w, nil
}

func registerNode(ctx context.Context, admin kubernetes.Interface, name, ip string) error {
	n, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	_, err = admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// object builds a CSR for filing: the API server sets the requester.
func object(c pki.CSR) (*certificatesv1.CertificateSigningRequest, error) {
	o, err := c.Object()
	if err != nil {
		return nil, err
	}
	o.Spec.Username, o.Spec.Groups = "", nil
	o.CreationTimestamp = metav1.Time{}
	return o, nil
}

// tracker watches CSRs and records when each was seen approved and issued.
type tracker struct {
	mu       sync.Mutex
	created  map[string]time.Time
	approved map[string]time.Time
	issued   map[string]time.Time
	certs    map[string][]byte
	// onIssued, when set, is called (with mu held) the first time a CSR is
	// seen issued.
	onIssued func(name string)
}

func newTracker(ctx context.Context, admin kubernetes.Interface) (*tracker, error) {
	t := &tracker{created: map[string]time.Time{}, approved: map[string]time.Time{}, issued: map[string]time.Time{}, certs: map[string][]byte{}}
	factory := informers.NewSharedInformerFactory(admin, 0)
	inf := factory.Certificates().V1().CertificateSigningRequests().Informer()
	see := func(obj any) {
		csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return
		}
		now := time.Now()
		s := approver.StateOf(csr)
		t.mu.Lock()
		defer t.mu.Unlock()
		if s.Approved {
			if _, ok := t.approved[csr.Name]; !ok {
				t.approved[csr.Name] = now
			}
		}
		if s.Issued {
			if _, ok := t.issued[csr.Name]; !ok {
				t.issued[csr.Name] = now
				t.certs[csr.Name] = csr.Status.Certificate
				if t.onIssued != nil {
					t.onIssued(csr.Name)
				}
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, n any) { see(n) }}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("CSR informer did not sync")
	}
	return t, nil
}

// result is one contender's outcome on one workload.
type result struct {
	Contender   string    `json:"contender"`
	Workload    string    `json:"workload"`
	N           int       `json:"n"`
	Issued      int       `json:"issued"`
	Verified    int       `json:"verified"`
	WallSeconds float64   `json:"wallSeconds"`
	PerSecond   float64   `json:"csrsPerSecond"`
	ApprovedMS  []float64 `json:"createToApprovedMsP50P90P99"`
	IssuedMS    []float64 `json:"createToIssuedMsP50P90P99"`
	CPUSeconds  float64   `json:"controllerCPUSeconds"`
	PeakRSSMiB  float64   `json:"controllerPeakRSSMiB"`
	TimedOut    bool      `json:"timedOut"`
	Runs        []float64 `json:"runsCsrsPerSecond,omitempty"`
	// Cached and StartRSSMiB are the memory run's: issued CSRs in the
	// cluster when the controller started, and its peak RSS once started.
	Cached      int     `json:"cachedCSRs,omitempty"`
	StartRSSMiB float64 `json:"startPeakRSSMiB,omitempty"`
	// The noisy-node run's: the quiet nodes' median create->issued during
	// the flood over their unloaded median (this run's, and every run's),
	// and the Events recorded about the flood's CSRs.
	Ratio       float64   `json:"quietRatio,omitempty"`
	Ratios      []float64 `json:"quietRatios,omitempty"`
	FloodEvents int       `json:"floodEvents,omitempty"`
	Note        string    `json:"note,omitempty"`
}

// run files the workload's CSRs and waits until every one is issued or the
// timeout passes.
func (w *workload) run(ctx context.Context, t *tracker, timeout time.Duration) (time.Time, time.Time, bool, error) {
	start := time.Now()
	var (
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr
	}
	file := func(i int) {
		csr := w.csrs[i]
		t.mu.Lock()
		t.created[csr.Name] = time.Now()
		t.mu.Unlock()
		created, err := w.client(i).CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
		if err != nil {
			fail(fmt.Errorf("create %s: %w", csr.Name, err))
			return
		}
		if w.approve != nil && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
			created.Status.Conditions = append(created.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
				Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "ApprovedByBenchmark", Message: "kube-controller-manager never approves serving CSRs",
			})
			if _, err := w.approve.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, created.Name, created, metav1.UpdateOptions{}); err != nil {
				fail(fmt.Errorf("approve %s: %w", csr.Name, err))
			}
		}
	}
	first := len(w.csrs)
	var followers sync.WaitGroup
	if w.then != nil {
		first = w.first
		index := make(map[string]int, len(w.csrs))
		for i, c := range w.csrs {
			index[c.Name] = i
		}
		issued := make(chan int, len(w.csrs)) // each CSR is issued once: sends never block
		t.mu.Lock()
		t.onIssued = func(name string) {
			if i, ok := index[name]; ok {
				issued <- i
			}
		}
		t.mu.Unlock()
		defer func() {
			t.mu.Lock()
			t.onIssued = nil
			t.mu.Unlock()
			close(issued)
			followers.Wait()
		}()
		for range w.creators {
			followers.Go(func() {
				for i := range issued {
					next, err := w.then(ctx, i)
					if err != nil {
						fail(fmt.Errorf("after %s: %w", w.csrs[i].Name, err))
					} else if next >= 0 {
						file(next)
					}
				}
			})
		}
	}
	var wg sync.WaitGroup
	if w.rate == 0 {
		next := make(chan int)
		for range w.creators {
			wg.Go(func() {
				for i := range next {
					file(i)
				}
			})
		}
		for i := range first {
			next <- i
		}
		close(next)
	} else {
		interval := time.Duration(float64(time.Second) / w.rate)
		for i := range first {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d) // the arrival schedule, not a wait for a result
			}
			wg.Go(func() { file(i) })
		}
	}
	wg.Wait()
	if err := failed(); err != nil {
		return start, time.Time{}, false, err
	}
	names := make([]string, len(w.csrs))
	for i, c := range w.csrs {
		names[i] = c.Name
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		if err := failed(); err != nil {
			return false, err
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, n := range names {
			if _, ok := t.issued[n]; !ok {
				return false, nil
			}
		}
		return true, nil
	})
	if err := failed(); err != nil {
		return start, time.Time{}, false, err
	}
	timedOut := err != nil
	var end time.Time
	t.mu.Lock()
	for _, n := range names {
		if at, ok := t.issued[n]; ok && at.After(end) {
			end = at
		}
	}
	t.mu.Unlock()
	return start, end, timedOut, nil
}

// measure turns the tracker's records for w into a result.
func (w *workload) measure(t *tracker, start, end time.Time, roots *x509.CertPool) result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := result{Workload: w.name, N: len(w.csrs)}
	var approved, issued []float64
	for _, c := range w.csrs {
		created := t.created[c.Name]
		if at, ok := t.approved[c.Name]; ok {
			approved = append(approved, ms(at.Sub(created)))
		}
		at, ok := t.issued[c.Name]
		if !ok {
			continue
		}
		r.Issued++
		issued = append(issued, ms(at.Sub(created)))
		if verify(t.certs[c.Name], roots) {
			r.Verified++
		}
	}
	if !end.IsZero() {
		r.WallSeconds = end.Sub(start).Seconds()
		r.PerSecond = float64(r.Issued) / r.WallSeconds
	}
	r.ApprovedMS, r.IssuedMS = percentiles(approved), percentiles(issued)
	return r
}

func verify(certPEM []byte, roots *x509.CertPool) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentiles returns p50, p90 and p99 (nearest rank).
func percentiles(v []float64) []float64 {
	if len(v) == 0 {
		return nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return []float64{at(0.50), at(0.90), at(0.99)}
}

// unlimited lifts client-side rate limits: the benchmark's own clients must
// never be what limits a contender.
func unlimited(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.DisableCompression = true // as kube-controller-manager and kubelet-csr-controller do
	return cfg
}
