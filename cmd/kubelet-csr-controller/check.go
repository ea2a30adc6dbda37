package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/config"
	"github.com/nodecsr/kubelet-csr-controller/controllers"
)

const checkUsage = `Usage: kubelet-csr-controller check --config FILE [--node nodes.yaml]... [--authorized=false] csr.yaml

Decides one CSR with the policy of FILE, without a cluster, and prints the
decision. csr.yaml is a CertificateSigningRequest as "kubectl get csr NAME -o
yaml" prints it. Each --node file holds a Node or a list of them ("kubectl
get node NAME -o yaml", "kubectl get nodes -o yaml"): the one the CSR's
CommonName names is its Node, without which the Node counts as not
registered; the others are checked for the request's names and addresses.
Some facts only the running controller has, so check assumes them and says
so in its output: the SubjectAccessReview of a client CSR (--authorized,
default true), the other CSRs of the same node (none: the flood rules of
maxPendingPerNode and Superseded are not applied), and DNS answers (from
this machine's resolver, not the controller's). Its "Approve" is therefore
not the controller's verdict; read the "assumed" lines.

Exit status: 0 approve, 3 anything else (deny, retry, leave pending), 1 or 2
errors.
`

func runCheck(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, checkUsage) }
	configFile := fs.String("config", "", "configuration file")
	var nodeFiles []string
	fs.Func("node", "Node or node list YAML (repeatable)", func(path string) error {
		nodeFiles = append(nodeFiles, path)
		return nil
	})
	authorized := fs.Bool("authorized", true, "assume the requester holds the nodeclient/selfnodeclient permission")
	if helped, err := parseArgs(fs, args); helped || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{msg: "check needs exactly one CSR file\n" + checkUsage}
	}
	cfg, _, err := config.Load(*configFile)
	if err != nil {
		return err
	}
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := readYAML(fs.Arg(0), csr); err != nil {
		return err
	}
	// The approver's options exactly as the controller builds them.
	ao := controllerOptions(cfg).Approver
	policy := ao.Policy
	nodes, err := readNodeFiles(nodeFiles)
	if err != nil {
		return err
	}
	var assumed []string
	sources := &controllers.Sources{
		Nodes: controllers.StaticNodes(nodes),
		Authorize: func(context.Context, *certificatesv1.CertificateSigningRequest, *authorizationv1.ResourceAttributes) (*approver.Authorization, error) {
			assumed = append(assumed, fmt.Sprintf("the requester's SubjectAccessReview answers allowed=%v (--authorized)", *authorized))
			return &approver.Authorization{Allowed: *authorized, Reason: "assumed by --authorized"}, nil
		},
		Resolve: func(ctx context.Context, names []string) map[string]approver.Lookup {
			assumed = append(assumed, fmt.Sprintf("DNS answers for %s come from this machine's resolver, not the controller's", strings.Join(names, ", ")))
			return controllers.Resolve(ctx, net.DefaultResolver, ao.DNSTimeout, names)
		},
	}
	in := approver.Read(csr)
	v := approver.NewReview(in, &policy)
	if v.Plan().Siblings {
		assumed = append(assumed, "no other CSR of this node is pending (the flood rules, maxPendingPerNode and Superseded, are not applied)")
	}
	d, _, err := controllers.Decide(ctx, sources, v, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "csr:      %s\nsigner:   %s\nnode:     %s\ndecision: %s\nreason:   %s\nmessage:  %s\n",
		csr.Name, csr.Spec.SignerName, in.NodeName, d.Verdict, d.Reason, d.Message)
	if d.Suspicion != "" {
		fmt.Fprintf(out, "suspect:  %s (the controller counts it and records a Warning Event)\n", d.Suspicion)
	}
	for _, a := range assumed {
		fmt.Fprintf(out, "assumed:  %s\n", a)
	}
	if d.Verdict != approver.Approve {
		return &notApprovedError{verdict: d.Verdict.String() + " (" + d.Reason + ")"}
	}
	return nil
}

// readNodeFiles reads the Nodes of every --node file.
func readNodeFiles(paths []string) ([]*corev1.Node, error) {
	var nodes []*corev1.Node
	for _, path := range paths {
		read, err := readNodes(path)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, read...)
	}
	return nodes, nil
}

// readNodes reads a Node or a list of Nodes.
func readNodes(path string) ([]*corev1.Node, error) {
	var list struct {
		Kind  string        `json:"kind"`
		Items []corev1.Node `json:"items"`
	}
	data, err := os.ReadFile(path) //nolint:gosec // a file the operator names
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	if err := decodeYAML(path, data, &list); err != nil {
		return nil, err
	}
	if strings.HasSuffix(list.Kind, "List") {
		nodes := make([]*corev1.Node, len(list.Items))
		for i := range list.Items {
			nodes[i] = &list.Items[i]
		}
		return nodes, nil
	}
	n := &corev1.Node{}
	if err := decodeYAML(path, data, n); err != nil {
		return nil, err
	}
	if n.Name == "" {
		return nil, &usageError{msg: path + " holds no Node (no metadata.name)"}
	}
	return []*corev1.Node{n}, nil
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path) //nolint:gosec // a file the operator names
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	return decodeYAML(path, data, into)
}

func decodeYAML(path string, data []byte, into any) error {
	if err := yaml.Unmarshal(data, into); err != nil {
		return &usageError{msg: fmt.Sprintf("%s: %v", path, err)}
	}
	return nil
}
