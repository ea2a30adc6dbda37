package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// quietNodes file a serving CSR each in the noisy-node run's rounds.
const quietNodes = 20

// noisyRun measures what a flood from one node costs the others, o.noisyRuns
// times, each on a fresh control plane and controller: 20 quiet Nodes each
// file a serving CSR at once, unloaded; then one Node floods o.noisy serving
// CSRs that wait for facts (its Node lists no address: the flood the
// per-node cap is for), and the quiet Nodes file again during it. Reported:
// the quiet Nodes' median create->issued during the flood over their
// unloaded median (the run with the median ratio is the row), and the
// Events recorded about the flood's CSRs.
func noisyRun(ctx context.Context, o *options, out io.Writer) (result, error) {
	var runs []result
	for run := range o.noisyRuns {
		r, err := noisyOnce(ctx, o)
		if err != nil {
			return result{}, fmt.Errorf("run %d: %w", run+1, err)
		}
		fmt.Fprintf(out, "   run %d: quiet median %s unloaded, %s during the flood (%.2fx); %d Events about the flood's %d CSRs\n",
			run+1, dur(r.unloaded), dur(at(r.IssuedMS, 0)), r.Ratio, r.FloodEvents, o.noisy)
		runs = append(runs, r.result)
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.Ratio, b.Ratio) })
	m := sorted[len(sorted)/2]
	ratios := make([]string, len(runs))
	for i, r := range runs {
		m.Ratios = append(m.Ratios, r.Ratio)
		ratios[i] = fmt.Sprintf("%.2fx", r.Ratio)
	}
	m.Note = fmt.Sprintf("quiet nodes' median create->issued during the flood over unloaded, %d runs: %s (median %.2fx); Events about the flood's %d CSRs: %d in the median run",
		len(runs), strings.Join(ratios, ", "), m.Ratio, o.noisy, m.FloodEvents)
	return m, nil
}

func noisyWorkload(o *options) string {
	return fmt.Sprintf("%d quiet nodes during a %d-CSR flood from one", quietNodes, o.noisy)
}

type noisyResult struct {
	result
	unloaded float64 // the quiet nodes' unloaded median, ms
}

func noisyOnce(ctx context.Context, o *options) (noisyResult, error) {
	c, admin, bootstrap, t, stop, err := benchCluster(ctx)
	if err != nil {
		return noisyResult{}, err
	}
	defer stop()
	p, err := startThis(ctx, c, o)
	if err != nil {
		return noisyResult{}, err
	}
	defer p.stop()
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	if err := warmUp(ctx, t, bootstrap); err != nil {
		return noisyResult{}, err
	}
	quiet := make([]kubernetes.Interface, quietNodes)
	for i := range quietNodes {
		node := fmt.Sprintf("quiet-%d", i)
		if err := registerNode(ctx, admin, node, fmt.Sprintf("10.1.0.%d", i+1)); err != nil {
			return noisyResult{}, err
		}
		if quiet[i], err = nodeClient(c, node); err != nil {
			return noisyResult{}, err
		}
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "noisy"}}, metav1.CreateOptions{}); err != nil {
		return noisyResult{}, err
	}
	noisy, err := nodeClient(c, "noisy")
	if err != nil {
		return noisyResult{}, err
	}
	round := func(name string) (*workload, error) {
		w := &workload{name: "quiet nodes during a one-node flood", creators: quietNodes, client: func(i int) kubernetes.Interface { return quiet[i] }}
		for i := range quietNodes {
			node := fmt.Sprintf("quiet-%d", i)
			s := pki.Serving(node, nil, []net.IP{net.ParseIP(fmt.Sprintf("10.1.0.%d", i+1))})
			s.Name = fmt.Sprintf("%s-%s", name, node)
			obj, err := object(s)
			if err != nil {
				return nil, err
			}
			w.csrs = append(w.csrs, obj)
		}
		return w, nil
	}
	unloaded, err := round("unloaded")
	if err != nil {
		return noisyResult{}, err
	}
	start, end, timedOut, err := unloaded.run(ctx, t, o.timeout)
	if err != nil || timedOut {
		return noisyResult{}, errors.Join(errors.New("the unloaded round did not finish"), err)
	}
	before := unloaded.measure(t, start, end, roots)

	flood := make([]pki.CSR, o.noisy)
	for i := range flood {
		flood[i] = pki.Serving("noisy", nil, []net.IP{net.ParseIP("10.2.0.1")})
		flood[i].Name = fmt.Sprintf("noisy-%d", i)
	}
	var created atomic.Int64
	floodErr := make(chan error, 1)
	cpu0, err := cpuSeconds(p.pid)
	if err != nil {
		return noisyResult{}, err
	}
	go func() {
		floodErr <- cluster.FloodNotifying(ctx, noisy, flood, 16, func(pki.CSR) { created.Add(1) })
	}()
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return created.Load() >= int64(min(50, o.noisy)), nil
	}); err != nil {
		return noisyResult{}, fmt.Errorf("the flood did not start: %w", err)
	}
	loaded, err := round("loaded")
	if err != nil {
		return noisyResult{}, err
	}
	start, end, timedOut, err = loaded.run(ctx, t, o.timeout)
	if err != nil {
		return noisyResult{}, err
	}
	if err := <-floodErr; err != nil {
		return noisyResult{}, err
	}
	events, err := settledEvents(ctx, admin, "noisy-")
	if err != nil {
		return noisyResult{}, err
	}
	r := loaded.measure(t, start, end, roots)
	if err := p.usage(&r, cpu0, timedOut); err != nil {
		return noisyResult{}, err
	}
	r.Contender = "kubelet-csr-controller (defaults)"
	r.Workload = noisyWorkload(o)
	r.FloodEvents = events
	if u := at(before.IssuedMS, 0); u > 0 {
		r.Ratio = at(r.IssuedMS, 0) / u
	}
	return noisyResult{result: r, unloaded: at(before.IssuedMS, 0)}, nil
}

// settledEvents counts the Events about CSRs named with prefix, once no new
// one has arrived for two seconds (the controller's Events trail its
// decisions while it is busy).
func settledEvents(ctx context.Context, cs kubernetes.Interface, prefix string) (int, error) {
	last, stable := -1, 0
	for stable < 4 {
		list, err := cs.EventsV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, err
		}
		n := 0
		for _, e := range list.Items {
			if strings.HasPrefix(e.Regarding.Name, prefix) {
				n++
			}
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return last, nil
}
