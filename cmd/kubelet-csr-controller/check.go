package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

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
Client CSRs need a SubjectAccessReview that only a cluster can answer:
--authorized says what to assume. DNS names are resolved for real when the
policy asks for it.

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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &usageError{msg: err.Error()}
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
	in := approver.Read(csr)
	plan := approver.PlanFor(in, &policy)
	facts := &approver.Facts{Now: time.Now()}
	var nodes []*corev1.Node
	for _, path := range nodeFiles {
		read, err := readNodes(path)
		if err != nil {
			return err
		}
		nodes = append(nodes, read...)
	}
	if plan.Node != "" {
		if i := slices.IndexFunc(nodes, func(n *corev1.Node) bool { return n.Name == plan.Node }); i >= 0 {
			facts.Node = nodes[i]
		}
	}
	if plan.Claimants {
		facts.Claimants = approver.ClaimantsOf(in, &policy, nodes)
	}
	if plan.Permission != nil {
		facts.Authorization = &approver.Authorization{Allowed: *authorized, Reason: "assumed by --authorized"}
	}
	if plan.ResolveDNS {
		facts.Lookups = controllers.Resolve(ctx, net.DefaultResolver, ao.DNSTimeout, approver.DNSNamesToResolve(in, facts.Node, &policy))
	}
	d := approver.Evaluate(in, facts, &policy)
	fmt.Fprintf(out, "csr:      %s\nsigner:   %s\nnode:     %s\ndecision: %s\nreason:   %s\nmessage:  %s\n",
		csr.Name, csr.Spec.SignerName, in.NodeName, d.Verdict, d.Reason, d.Message)
	if d.Verdict != approver.Approve {
		return &notApprovedError{verdict: d.Verdict.String() + " (" + d.Reason + ")"}
	}
	return nil
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
