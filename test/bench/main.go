// Command bench runs kubelet-csr-controller side by side with
// kube-controller-manager's csrapproving/csrsigning and an ideal loop, each on
// a fresh local control plane, under the same workloads: a burst of
// bootstrap client CSRs, a burst of serving CSRs from registered Nodes, and a
// steady arrival rate. It then measures memory with many CSRs cached. It
// prints Markdown tables and writes JSON lines.
//
//	go run ./test/bench --binary bin/kubelet-csr-controller [--n 1000] [--rate 50] [--steady 60s]
package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
)

type options struct {
	binary         string
	assets         string
	n              int
	rate           float64
	steady         time.Duration
	timeout        time.Duration
	nodes          int
	noisy          int
	noisyRuns      int
	memoryCached   []int
	repeat         int
	only           string
	out            string
	profileDir     string
	controllerArgs []string
	controllerEnv  []string
}

func main() {
	// envtest logs through controller-runtime's logger; the benchmark's own
	// output is its tables.
	ctrllog.SetLogger(logr.Discard())
	if len(os.Args) > 1 && os.Args[1] == "ideal-loop" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err := idealLoop(ctx, os.Args[2:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ideal-loop:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.binary, "binary", "", "kubelet-csr-controller binary (default: build it)")
	flag.IntVar(&o.n, "n", 1000, "CSRs per burst")
	flag.Float64Var(&o.rate, "rate", 50, "steady arrival rate, CSRs per second")
	flag.DurationVar(&o.steady, "steady", time.Minute, "how long the steady arrivals last")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for a workload's last certificate")
	flag.IntVar(&o.repeat, "repeat", 3, "runs of each burst; the median is reported")
	flag.IntVar(&o.nodes, "nodes", 5000, "Nodes that join at once (a bootstrap client CSR each, then a serving CSR); 0 skips the workload")
	flag.IntVar(&o.noisy, "noisy", 500, "CSRs one node floods while 20 quiet nodes file theirs; 0 skips the noisy-node run")
	flag.IntVar(&o.noisyRuns, "noisy-runs", 5, "runs of the noisy-node workload; the median ratio is reported")
	o.memoryCached = []int{0, 10000, 50000}
	flag.Func("memory-cached", "issued CSRs in the cluster before the memory run's controller starts, comma-separated in ascending order (default 0,10000,50000); \"\" skips the memory run", func(v string) error {
		o.memoryCached = nil
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 0 || (len(o.memoryCached) > 0 && n < o.memoryCached[len(o.memoryCached)-1]) {
				return fmt.Errorf("want counts in ascending order, got %q", v)
			}
			o.memoryCached = append(o.memoryCached, n)
		}
		return nil
	})
	flag.StringVar(&o.only, "only", "", `run only contenders whose name contains this ("memory" for the memory run alone, "noisy" for the noisy-node runs)`)
	flag.StringVar(&o.out, "out", "_output/bench/results.jsonl", "JSON lines output")
	flag.Func("controller-env", "KEY=VALUE added to kubelet-csr-controller's environment, e.g. KUBELET_CSR_CONTROLLER_MEMORY_LIMIT=64Mi as the chart sets from a memory limit (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		o.controllerEnv = append(o.controllerEnv, v)
		return nil
	})
	flag.StringVar(&o.profileDir, "profile-dir", "", "write CPU profiles of kubelet-csr-controller, one per workload, into this directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, &o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, out io.Writer) error {
	if o.n < 1 || o.n > 65536 || o.repeat > 100 || o.nodes < 0 || o.nodes > 65536 {
		return fmt.Errorf("-n and -nodes must be at most 65536 (-n at least 1) and -repeat at most 100 (serving nodes get addresses 10.(100+round).x.y, joining ones 10.99.x.y)")
	}
	var err error
	if o.assets, err = cluster.AssetsDir(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(o.assets, "kube-controller-manager")); err != nil {
		return fmt.Errorf("kube-controller-manager is not in KUBEBUILDER_ASSETS=%s: run hack/build-tools.sh kube-controller-manager (make bench does)", o.assets)
	}
	if o.profileDir != "" {
		o.controllerArgs = append(o.controllerArgs, "--profiling")
		if err := os.MkdirAll(o.profileDir, 0o750); err != nil {
			return err
		}
	}
	if o.binary == "" {
		if o.binary, err = cluster.ControllerBinary(ctx, os.TempDir()); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "machine: %s, %d CPUs, %s; N=%d, steady %g/s for %s, %d nodes join\n\n", machine(), runtime.NumCPU(), runtime.Version(), o.n, o.rate, o.steady, o.nodes)
	var results []result
	for _, ct := range contenders() {
		if o.only != "" && !strings.Contains(ct.name, o.only) {
			continue
		}
		fmt.Fprintf(out, "== %s\n", ct.name)
		rs, err := runContender(ctx, ct, o, out)
		if err != nil {
			return fmt.Errorf("%s: %w", ct.name, err)
		}
		results = append(results, rs...)
	}
	const memoryRunName = "memory kubelet-csr-controller"
	if len(o.memoryCached) > 0 && (o.only == "" || strings.Contains(memoryRunName, o.only)) {
		fmt.Fprintf(out, "== memory: %v issued CSRs cached, each then a burst of %d\n", o.memoryCached, o.n)
		r, err := memoryRun(ctx, o, out)
		if err != nil {
			return fmt.Errorf("memory run: %w", err)
		}
		results = append(results, r...)
	}
	const noisyRunName = "noisy node kubelet-csr-controller"
	if o.noisy > 0 && o.noisyRuns > 0 && (o.only == "" || strings.Contains(noisyRunName, o.only)) {
		fmt.Fprintf(out, "== noisy node: %d CSRs from one node beside %d quiet ones, %d runs\n", o.noisy, quietNodes, o.noisyRuns)
		r, err := noisyRun(ctx, o, out)
		if err != nil {
			return fmt.Errorf("noisy-node run: %w", err)
		}
		results = append(results, r)
	}
	fmt.Fprintln(out)
	printTable(out, results)
	return writeJSON(o.out, results)
}

// runContender starts a fresh control plane and the contender, then runs
// the three workloads on it.
func runContender(ctx context.Context, ct contender, o *options, out io.Writer) ([]result, error) {
	c, admin, bootstrap, t, stop, err := benchCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	p, err := ct.start(ctx, c, o)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)

	if err := warmUp(ctx, t, bootstrap); err != nil {
		return nil, err
	}

	var results []result
	// A burst is run repeat times (when it takes seconds, not minutes) and
	// the run with the median throughput is reported: two runs of the same
	// burst on a 2-core machine differ by up to 20%.
	prepare := []func(round int) (*workload, error){
		func(round int) (*workload, error) { return clientBurst(fmt.Sprintf("client%d", round), o.n, bootstrap) },
		func(round int) (*workload, error) {
			w, err := servingBurst(ctx, round, o.n, c, admin)
			if err == nil && !ct.approvesServing {
				w.approve = admin
			}
			return w, err
		},
		func(round int) (*workload, error) {
			return steady(fmt.Sprintf("steady%d", round), o.rate, o.steady, bootstrap)
		},
	}
	if o.nodes > 0 && (ct.maxJoin == 0 || o.nodes <= ct.maxJoin) {
		prepare = append(prepare, func(int) (*workload, error) {
			w, err := nodeJoin(ctx, o.nodes, c, admin, bootstrap)
			if err == nil && !ct.approvesServing {
				w.approve = admin
			}
			return w, err
		})
	}
	for _, prep := range prepare {
		var runs []result
		for round := range max(o.repeat, 1) {
			w, err := prep(round)
			if err != nil {
				return nil, err
			}
			r, err := measureRun(ctx, o, p, w, t, roots)
			if err != nil {
				return nil, err
			}
			r.Contender = ct.name
			runs = append(runs, r)
			if w.rate > 0 || w.then != nil || r.WallSeconds > 20 {
				break // a steady rate, nodes joining (once: their names and addresses are fixed), or a burst that takes minutes: one run says it
			}
		}
		r := median(runs)
		fmt.Fprintf(out, "   %-14s %4d/%d issued in %6.1fs  %7.1f CSRs/s  p99 create->issued %8.0f ms  CPU %5.1fs  peak RSS %5.1f MiB%s%s\n",
			r.Workload, r.Issued, r.N, r.WallSeconds, r.PerSecond, at(r.IssuedMS, 2), r.CPUSeconds, r.PeakRSSMiB, timeoutNote(r), runsNote(r))
		results = append(results, r)
	}
	return results, nil
}

// measureRun runs one workload and measures it.
func measureRun(ctx context.Context, o *options, p *process, w *workload, t *tracker, roots *x509.CertPool) (result, error) {
	cpu0, err := cpuSeconds(p.pid)
	if err != nil {
		return result{}, err
	}
	stopProfile := profile(ctx, o, p, w)
	start, end, timedOut, err := w.run(ctx, t, o.timeout+time.Duration(float64(len(w.csrs))/max(w.rate, 1))*time.Second)
	stopProfile()
	if err != nil {
		return result{}, err
	}
	r := w.measure(t, start, end, roots)
	if err := p.usage(&r, cpu0, timedOut); err != nil {
		return result{}, err
	}
	if w.approve != nil {
		r.Note = "approved by the benchmark; signing only"
	}
	return r, nil
}

// warmUp puts one CSR through, so that caches are synced and connections
// open before the clock starts.
func warmUp(ctx context.Context, t *tracker, bootstrap kubernetes.Interface) error {
	warm, err := clientBurst("warmup", 1, bootstrap)
	if err != nil {
		return err
	}
	if _, _, timedOut, err := warm.run(ctx, t, time.Minute); err != nil || timedOut {
		return errors.Join(errors.New("the warm-up CSR was not issued within a minute"), err)
	}
	return nil
}

// usage records in r the contender's CPU seconds since cpu0, its peak RSS
// and whether the workload timed out.
func (p *process) usage(r *result, cpu0 float64, timedOut bool) error {
	cpu1, err := cpuSeconds(p.pid)
	if err != nil {
		return err
	}
	rss, err := peakRSS(p.pid)
	if err != nil {
		return err
	}
	r.CPUSeconds, r.PeakRSSMiB, r.TimedOut = cpu1-cpu0, float64(rss)/(1<<20), timedOut
	return nil
}

// median returns the run with the median throughput, with every run's
// throughput recorded in it.
func median(runs []result) result {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.PerSecond, b.PerSecond) })
	m := sorted[len(sorted)/2]
	for _, r := range runs {
		m.Runs = append(m.Runs, r.PerSecond)
	}
	return m
}

func runsNote(r result) string {
	if len(r.Runs) < 2 {
		return ""
	}
	parts := make([]string, len(r.Runs))
	for i, v := range r.Runs {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return "  (median of " + strings.Join(parts, ", ") + ")"
}

// profile records a CPU profile of the contender over the first seconds of
// a workload (a burst's busy part, or the steady arrivals), when
// --profile-dir is set and the contender serves /debug/pprof. The returned
// function waits for it and writes the file.
func profile(ctx context.Context, o *options, p *process, w *workload) func() {
	if o.profileDir == "" || p.pprof == "" {
		return func() {}
	}
	seconds := 5
	if w.rate > 0 {
		seconds = int(float64(len(w.csrs)) / w.rate)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprof, seconds)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		name := strings.NewReplacer(" ", "-", "/", "per").Replace(w.name)
		_ = os.WriteFile(filepath.Join(o.profileDir, name+".pprof"), b, 0o600)
	}()
	return func() { <-done }
}

// heapProfile saves the contender's heap profile when --profile-dir is set.
func heapProfile(ctx context.Context, o *options, p *process, name string) {
	if o.profileDir == "" || p.pprof == "" {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.pprof+"/debug/pprof/heap", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(filepath.Join(o.profileDir, name+".pprof"), b, 0o600)
}

// benchCluster starts a fresh control plane with a bootstrap token, and
// returns unthrottled admin and bootstrap clients and a tracker of its
// CSRs. stop closes the tracker's watches and then the control plane,
// which otherwise waits for them.
func benchCluster(ctx context.Context) (c *cluster.Cluster, admin, bootstrap kubernetes.Interface, t *tracker, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	if c, err = cluster.Start(ctx, cluster.Options{}); err != nil {
		cancel()
		return nil, nil, nil, nil, nil, err
	}
	stop = func() {
		cancel()
		_ = c.Stop()
	}
	fail := func(e error) (*cluster.Cluster, kubernetes.Interface, kubernetes.Interface, *tracker, func(), error) {
		stop()
		return nil, nil, nil, nil, nil, e
	}
	if admin, err = kubernetes.NewForConfig(unlimited(c.Admin)); err != nil {
		return fail(err)
	}
	token, err := c.CreateBootstrapToken(ctx, "abcdef", "0123456789abcdef", time.Hour)
	if err != nil {
		return fail(err)
	}
	if bootstrap, err = kubernetes.NewForConfig(unlimited(c.BootstrapConfig(token))); err != nil {
		return fail(err)
	}
	if t, err = newTracker(ctx, admin); err != nil {
		return fail(err)
	}
	return c, admin, bootstrap, t, stop, nil
}

// memoryRun fills one cluster with issued CSRs up to each count of
// --memory-cached in turn, and for each starts a fresh controller and
// measures its peak RSS once it has started, and through a further burst.
func memoryRun(ctx context.Context, o *options, out io.Writer) ([]result, error) {
	c, _, bootstrap, t, stop, err := benchCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	var (
		results []result
		cached  int // issued CSRs in the cluster
	)
	for step, want := range o.memoryCached {
		if more := want - cached; more > 0 {
			if err := fill(ctx, c, o, t, bootstrap, fmt.Sprintf("fill%d", step), more); err != nil {
				return nil, err
			}
			cached = want
		}
		r, err := measureMemory(ctx, c, o, t, bootstrap, roots, fmt.Sprintf("memory%d", step), cached, out)
		if err != nil {
			return nil, err
		}
		cached += r.Issued
		results = append(results, r)
	}
	return results, nil
}

// fill has a controller issue n more bootstrap client CSRs.
func fill(ctx context.Context, c *cluster.Cluster, o *options, t *tracker, bootstrap kubernetes.Interface, prefix string, n int) error {
	filler, err := startThis(ctx, c, o)
	if err != nil {
		return err
	}
	defer filler.stop()
	w, err := clientBurst(prefix, n, bootstrap)
	if err != nil {
		return err
	}
	if _, _, timedOut, err := w.run(ctx, t, 15*time.Minute); err != nil || timedOut {
		return errors.Join(fmt.Errorf("filling the cluster with %d more CSRs did not finish", n), err)
	}
	return nil
}

// measureMemory starts a fresh controller on a cluster holding cached
// issued CSRs, and runs a burst through it.
func measureMemory(ctx context.Context, c *cluster.Cluster, o *options, t *tracker, bootstrap kubernetes.Interface, roots *x509.CertPool, prefix string, cached int, out io.Writer) (result, error) {
	p, err := startThis(ctx, c, o)
	if err != nil {
		return result{}, err
	}
	defer p.stop()
	idle, err := peakRSS(p.pid)
	if err != nil {
		return result{}, err
	}
	heapProfile(ctx, o, p, fmt.Sprintf("heap-after-start-%d", cached))
	w, err := clientBurst(prefix, o.n, bootstrap)
	if err != nil {
		return result{}, err
	}
	cpu0, err := cpuSeconds(p.pid)
	if err != nil {
		return result{}, err
	}
	start, end, timedOut, err := w.run(ctx, t, o.timeout)
	if err != nil {
		return result{}, err
	}
	r := w.measure(t, start, end, roots)
	if err := p.usage(&r, cpu0, timedOut); err != nil {
		return result{}, err
	}
	heapProfile(ctx, o, p, fmt.Sprintf("heap-after-burst-%d", cached))
	r.Contender = "kubelet-csr-controller (defaults)"
	r.Workload = fmt.Sprintf("burst with %d cached", cached)
	r.Cached, r.StartRSSMiB = cached, float64(idle)/(1<<20)
	r.Note = fmt.Sprintf("peak RSS %.1f MiB after start with %d CSRs cached, before the burst", r.StartRSSMiB, cached)
	fmt.Fprintf(out, "   %s: peak RSS %.1f MiB after start, %.1f MiB after the burst\n", r.Workload, r.StartRSSMiB, r.PeakRSSMiB)
	return r, nil
}

func at(v []float64, i int) float64 {
	if len(v) <= i {
		return 0
	}
	return v[i]
}

func timeoutNote(r result) string {
	if r.TimedOut {
		return "  (timed out)"
	}
	return ""
}

// printTable prints the results as a Markdown table.
func printTable(w io.Writer, rs []result) {
	fmt.Fprintln(w, "| contender | workload | issued | CSRs/s | create->approved p50 / p90 / p99 | create->issued p50 / p90 / p99 | controller CPU | CPU per 1000 | peak RSS | verified |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %d/%d%s | %.1f | %s | %s | %.1f s | %.2f s | %.0f MiB | %d |\n",
			r.Contender, r.Workload, r.Issued, r.N, timeoutNote(r), r.PerSecond, pct(r.ApprovedMS), pct(r.IssuedMS),
			r.CPUSeconds, 1000*r.CPUSeconds/float64(max(r.Issued, 1)), r.PeakRSSMiB, r.Verified)
	}
	for _, r := range rs {
		if r.Note != "" {
			fmt.Fprintf(w, "\n- %s, %s: %s", r.Contender, r.Workload, r.Note)
		}
	}
	fmt.Fprintln(w)
}

func pct(v []float64) string {
	if len(v) < 3 {
		return "-"
	}
	return fmt.Sprintf("%s / %s / %s", dur(v[0]), dur(v[1]), dur(v[2]))
}

func dur(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func writeJSON(path string, rs []result) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.Create(path) //nolint:gosec // operator-given output path
	if err != nil {
		return err
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// machine describes the CPU, from /proc/cpuinfo.
func machine() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return runtime.GOARCH
}
