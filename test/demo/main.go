// Command demo shows kubelet-csr-controller at work: a local control plane,
// the controller binary, and simulated kubelets that bootstrap, register and
// rotate their client and serving certificates with the kubelet's own
// certificate manager; one node lies about its addresses and is denied.
// It prints every decision as it happens, the `kubectl get csr` view, and a
// summary, then stops everything.
//
//	go run ./test/demo [--nodes 5] [--duration 3m] [--signing-duration 1m] [--keep]
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/test/cluster"
	"github.com/nodecsr/kubelet-csr-controller/test/kubelet"
)

type options struct {
	nodes           int
	duration        time.Duration
	signingDuration time.Duration
	keep            bool
	binary          string
	sample          string
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 5, "honest simulated kubelets (one more node lies about its addresses)")
	flag.DurationVar(&o.duration, "duration", 3*time.Minute, "how long the kubelets run")
	flag.DurationVar(&o.signingDuration, "signing-duration", time.Minute, "certificate lifetime (kubelets rotate at 70-90% of it)")
	flag.BoolVar(&o.keep, "keep", false, "keep the cluster and the controller running at the end, until Ctrl-C")
	flag.StringVar(&o.binary, "binary", "", "kubelet-csr-controller binary (default: build it)")
	flag.StringVar(&o.sample, "config", "config/samples/controller-config.yaml", "configuration to start from; CA files and signer durations are set by the demo")
	flag.Parse()
	// envtest logs through controller-runtime's logger; the demo's own
	// output is what it prints.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "%6s  %s\n", elapsed(start), fmt.Sprintf(format, args...))
	}
	say("starting etcd and kube-apiserver (bootstrap tokens, Node+RBAC authorization, kubeadm's RBAC bindings)")
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()

	bin := o.binary
	if bin == "" {
		if bin, err = cluster.ControllerBinary(ctx, c.Dir); err != nil {
			return err
		}
	}
	cfg, _, err := config.Load(o.sample)
	if err != nil {
		return err
	}
	cfg.CA = &config.CAFiles{CertFile: c.CACertFile, KeyFile: c.CAKeyFile}
	cluster.ShortLived(cfg, o.signingDuration)
	cfgFile := filepath.Join(c.Dir, "config.yaml")
	if err := cluster.WriteConfig(cfg, cfgFile); err != nil {
		return err
	}
	ctrl, err := c.StartController(ctx, cluster.ControllerOptions{Binary: bin, ConfigFile: cfgFile})
	if err != nil {
		return err
	}
	defer func() { _ = ctrl.Stop() }()
	if err := ctrl.WaitReady(ctx, time.Minute); err != nil {
		return err
	}
	say("kubelet-csr-controller is leading and ready (signing duration %s, log %s)", o.signingDuration, ctrl.LogFile)

	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	tally := watchDecisions(ctx, cs, say)

	token, err := c.CreateBootstrapToken(ctx, "abcdef", "0123456789abcdef", 24*time.Hour)
	if err != nil {
		return err
	}
	var nodes []*kubelet.Kubelet
	defer func() {
		for _, k := range nodes {
			k.Stop()
		}
	}()
	for i := 1; i <= o.nodes+1; i++ {
		name := fmt.Sprintf("node-%d", i)
		ko := kubelet.Options{NodeName: name, Addresses: kubelet.Addresses(name, i), Bootstrap: c.BootstrapConfig(token), CertDir: filepath.Join(c.Dir, name)}
		if i == o.nodes+1 {
			ko.NodeName = "node-liar"
			ko.Addresses = kubelet.Addresses(ko.NodeName, i)
			ko.ExtraServingIPs = []net.IP{net.ParseIP(kubelet.Addresses("node-1", 1)[0].Address)}
			ko.CertDir = filepath.Join(c.Dir, ko.NodeName)
		}
		if err := os.MkdirAll(ko.CertDir, 0o700); err != nil {
			return err
		}
		k, err := kubelet.Start(ctx, ko)
		if err != nil {
			return err
		}
		nodes = append(nodes, k)
	}
	say("started %d kubelets with bootstrap token abcdef; node-liar also claims node-1's address %s", len(nodes), kubelet.Addresses("node-1", 1)[0].Address)

	kubectl := kubectlView(c.AdminKubeconfig)
	ticker := time.NewTicker(time.Minute)
	defer ticker.Stop()
	deadline := time.After(o.duration)
loop:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			fmt.Fprintf(out, "\n%6s  the newest CSRs, as kubectl get csr shows them:\n", elapsed(start))
			kubectl(ctx, cs, out, 8)
			fmt.Fprintln(out)
		case <-deadline:
			break loop
		}
	}
	for _, k := range nodes {
		k.Stop()
	}
	fmt.Fprintf(out, "\n%6s  kubelets stopped. kubectl get csr (the cleaner deletes CSRs whose certificate expired):\n", elapsed(start))
	kubectl(ctx, cs, out, 0)
	summary(out, nodes, tally, c.CA.Cert, o)
	nodes = nil

	if o.keep {
		fmt.Fprintf(out, "\nThe cluster and the controller keep running. Explore with:\n  export KUBECONFIG=%s\n  kubectl get csr\n  kubectl describe csr <name>\nController log: %s\nCtrl-C stops everything.\n", c.AdminKubeconfig, ctrl.LogFile)
		<-ctx.Done()
	}
	return nil
}

// tally counts what the watcher saw happen to CSRs, including those the
// cleaner deleted since.
type tally struct {
	mu      sync.Mutex
	final   map[string]string // CSR name -> ISSUED or DENIED reason
	deleted int
}

// watchDecisions prints one line per decision and per certificate.
func watchDecisions(ctx context.Context, cs kubernetes.Interface, say func(string, ...any)) *tally {
	t := &tally{final: map[string]string{}}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Certificates().V1().CertificateSigningRequests().Informer()
	report := func(obj any) {
		csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return
		}
		line, outcome := describe(csr)
		t.mu.Lock()
		defer t.mu.Unlock()
		if outcome == "" || t.final[csr.Name] == outcome {
			return
		}
		t.final[csr.Name] = outcome
		say("%s", line)
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    report,
		UpdateFunc: func(_, n any) { report(n) },
		DeleteFunc: func(any) { t.mu.Lock(); t.deleted++; t.mu.Unlock() },
	})
	factory.Start(ctx.Done())
	return t
}

// describe is one line about a decided CSR, and its outcome ("" while it
// is pending or approved but not issued yet).
func describe(csr *certificatesv1.CertificateSigningRequest) (string, string) {
	r := approver.Read(csr)
	kind := "client "
	if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		kind = "serving"
	}
	who := fmt.Sprintf("%-10s %-9s %s", r.NodeName, kind, csr.Name)
	s := approver.StateOf(csr)
	switch {
	case s.Issued:
		cert, err := leaf(csr.Status.Certificate)
		if err != nil {
			return "", ""
		}
		return fmt.Sprintf("%s  ISSUED  serial %s valid until %s, requested by %s", who, serial(cert), expiry(cert), csr.Spec.Username), "Issued"
	case s.Denied:
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied {
				return fmt.Sprintf("%s  DENIED  %s: %s", who, c.Reason, c.Message), "Denied " + c.Reason
			}
		}
	}
	return "", ""
}

// kubectlView prints `kubectl get csr` (the last n rows; all when n is 0),
// or the same columns computed here when kubectl is not installed.
func kubectlView(kubeconfig string) func(context.Context, kubernetes.Interface, io.Writer, int) {
	path, err := exec.LookPath("kubectl")
	return func(ctx context.Context, cs kubernetes.Interface, out io.Writer, n int) {
		var text string
		if err == nil {
			cmd := exec.CommandContext(ctx, path, "--kubeconfig", kubeconfig, "get", "csr", "--sort-by=.metadata.creationTimestamp")
			b, cerr := cmd.CombinedOutput()
			if cerr == nil {
				text = string(b)
			}
		}
		if text == "" {
			text = ownTable(ctx, cs)
		}
		lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
		if n > 0 && len(lines) > n+1 {
			fmt.Fprintf(out, "%s\n  … %d older rows …\n", lines[0], len(lines)-n-1)
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintln(out, strings.Join(lines, "\n"))
	}
}

// ownTable prints the columns of `kubectl get csr`.
func ownTable(ctx context.Context, cs kubernetes.Interface) string {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, listAll)
	if err != nil {
		return err.Error()
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool { return items[i].CreationTimestamp.Before(&items[j].CreationTimestamp) })
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tAGE\tSIGNERNAME\tREQUESTOR\tREQUESTEDDURATION\tCONDITION")
	for i := range items {
		csr := &items[i]
		requested := "<none>"
		if e := csr.Spec.ExpirationSeconds; e != nil {
			requested = duration.HumanDuration(time.Duration(*e) * time.Second)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", csr.Name, duration.HumanDuration(time.Since(csr.CreationTimestamp.Time)), csr.Spec.SignerName, csr.Spec.Username, requested, conditionColumn(csr))
	}
	_ = w.Flush()
	return b.String()
}

func conditionColumn(csr *certificatesv1.CertificateSigningRequest) string {
	s := approver.StateOf(csr)
	var parts []string
	switch {
	case s.Approved:
		parts = append(parts, "Approved")
	case s.Denied:
		parts = append(parts, "Denied")
	default:
		parts = append(parts, "Pending")
	}
	if s.Failed {
		parts = append(parts, "Failed")
	}
	if s.Issued {
		parts = append(parts, "Issued")
	}
	return strings.Join(parts, ",")
}

// summary prints, per node, the certificates it holds and how often each
// was rotated, then what happened to all CSRs.
func summary(out io.Writer, nodes []*kubelet.Kubelet, t *tally, ca *x509.Certificate, o options) {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	fmt.Fprintf(out, "\nSummary after %s with %s certificates:\n", o.duration, o.signingDuration)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tCLIENT SERIAL\tEXPIRES\tROTATIONS\tSERVING SERIAL\tEXPIRES\tROTATIONS\tCHAINS TO CA")
	for _, k := range nodes {
		client, serving := k.ClientCertificate(), k.ServingCertificate()
		cr, sr := k.Rotations()
		ok := "yes"
		for _, c := range []*x509.Certificate{client, serving} {
			if c == nil {
				continue
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: c.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				ok = "NO: " + err.Error()
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", k.Name(), serial(client), expiry(client), cr, serial(serving), expiry(serving), sr, ok)
	}
	_ = w.Flush()
	t.mu.Lock()
	defer t.mu.Unlock()
	counts := map[string]int{}
	for _, outcome := range t.final {
		counts[outcome]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprint(out, "\nCSRs decided:")
	for _, k := range keys {
		fmt.Fprintf(out, "  %s %d", k, counts[k])
	}
	fmt.Fprintf(out, "\nCSRs deleted by the cleaner once their certificate expired: %d\n", t.deleted)
}

var listAll = metav1.ListOptions{}

func elapsed(start time.Time) string {
	d := time.Since(start).Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

func leaf(pemBytes []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("not PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}

func serial(c *x509.Certificate) string {
	if c == nil {
		return "-"
	}
	s := fmt.Sprintf("%x", c.SerialNumber)
	return s[:min(len(s), 10)]
}

func expiry(c *x509.Certificate) string {
	if c == nil {
		return "-"
	}
	return c.NotAfter.Local().Format("15:04:05")
}
