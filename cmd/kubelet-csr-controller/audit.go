package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
)

const auditUsage = `Usage: kubelet-csr-controller audit --config FILE [--kubeconfig FILE | --node nodes.yaml...]

Dials each Node's kubelet (status.daemonEndpoints.kubeletEndpoint and the
first of its InternalIP, ExternalIP, InternalDNS, ExternalDNS, Hostname
addresses) and reports, per node, whether the certificate it serves chains
to the CA of FILE's kubernetes.io/kubelet-serving signer, whether its CN is
system:node:<name> (what KEP-4872 will require), whether its SANs cover the
Node's addresses, and when it expires: the running controller's audit
(audit.enabled), once, from here. Nodes come from the cluster (--kubeconfig,
$KUBECONFIG, ~/.kube/config) or from --node files ("kubectl get nodes -o
yaml"). audit.timeout and audit.concurrency bound the dials.

Exit status: 0 every node ok, 3 any other outcome, 1 or 2 errors.
`

// auditFailedError is audit's answer when a node is not ok.
type auditFailedError struct{ failed, total int }

func (e *auditFailedError) Error() string {
	return fmt.Sprintf("%d of %d nodes failed the audit", e.failed, e.total)
}

func runAudit(ctx context.Context, args []string, out io.Writer, now func() time.Time) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, auditUsage) }
	configFile := fs.String("config", "", "configuration file")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig to list Nodes with")
	var nodeFiles []string
	fs.Func("node", "Node or node list YAML (repeatable) instead of the cluster's", func(path string) error {
		nodeFiles = append(nodeFiles, path)
		return nil
	})
	if helped, err := parseArgs(fs, args); helped || err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{msg: "audit takes no arguments\n" + auditUsage}
	}
	cfg, _, err := config.Load(*configFile)
	if err != nil {
		return err
	}
	roots, err := servingRoots(cfg)
	if err != nil {
		return err
	}
	nodes, err := auditedNodes(ctx, cfg, *kubeconfig, nodeFiles)
	if err != nil {
		return err
	}
	o := controllers.AuditOptions{Timeout: cfg.Audit.Timeout.Duration, Concurrency: cfg.Audit.Concurrency}
	results := controllers.AuditNodes(ctx, nodes, roots, o, now)
	return printAudit(out, results)
}

// servingRoots loads the kubelet-serving signer's CA certificate.
func servingRoots(cfg *config.ControllerConfig) (*x509.CertPool, error) {
	for _, sc := range cfg.SignerConfigs() {
		if sc.Name != certificatesv1.KubeletServingSignerName {
			continue
		}
		certPEM, err := os.ReadFile(sc.CertFile) //nolint:gosec // the configuration's CA file
		if err != nil {
			return nil, &usageError{msg: err.Error()}
		}
		// Only the certificate: an audit needs no private key.
		block, _ := pem.Decode(certPEM)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, &usageError{msg: sc.CertFile + " holds no PEM CERTIFICATE"}
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, &usageError{msg: fmt.Sprintf("%s: %v", sc.CertFile, err)}
		}
		p := x509.NewCertPool()
		p.AddCert(cert)
		return p, nil
	}
	return nil, &usageError{msg: "the configuration has no kubernetes.io/kubelet-serving signer whose CA to audit against"}
}

func auditedNodes(ctx context.Context, cfg *config.ControllerConfig, kubeconfig string, files []string) ([]*corev1.Node, error) {
	if len(files) > 0 {
		return readNodeFiles(files)
	}
	rc, err := restConfig(kubeconfig, &cfg.Manager)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Nodes: %w", err)
	}
	nodes := make([]*corev1.Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = &list.Items[i]
	}
	return nodes, nil
}

func printAudit(out io.Writer, results []controllers.AuditResult) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tOUTCOME\tADDRESS\tNOT AFTER\tDETAIL")
	counts := map[string]int{}
	for _, r := range results {
		counts[r.Outcome]++
		notAfter := "-"
		if !r.NotAfter.IsZero() {
			notAfter = r.NotAfter.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Node, r.Outcome, r.Address, notAfter, r.Detail)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d nodes:", len(results))
	for _, o := range controllers.AuditOutcomes {
		if counts[o] > 0 {
			fmt.Fprintf(out, " %s %d", o, counts[o])
		}
	}
	fmt.Fprintln(out)
	if failed := len(results) - counts[controllers.AuditOK]; failed > 0 {
		return &auditFailedError{failed: failed, total: len(results)}
	}
	return nil
}
