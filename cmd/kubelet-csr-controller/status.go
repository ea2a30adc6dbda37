package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

const statusUsage = `Usage: kubelet-csr-controller status --selector LABELS [--namespace NS] [--lease NAME] [--timeout 1m] [--kubeconfig FILE]

Waits until a replica leads and is ready: the Lease NAME (default
kubelet-csr-controller; empty without leader election: any ready replica
will do) in NS is held and renewed by one of the Pods LABELS selects, and
that Pod is Ready. Prints the leader; exits 1 with the reason if that is
not so within --timeout. The chart's helm test runs it; operators can too.
It needs get on the Lease and list on Pods in NS.
`

// inClusterNamespace is where a pod's ServiceAccount namespace is mounted.
const inClusterNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func runStatus(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, statusUsage) }
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig; default: $KUBECONFIG, ~/.kube/config, in-cluster")
	namespace := fs.String("namespace", "", "namespace of the Lease and the Pods; default: the pod's own")
	lease := fs.String("lease", "kubelet-csr-controller", "the leader election Lease; empty: no leader election")
	selector := fs.String("selector", "", "label selector of the release's Pods")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for a ready leader")
	if helped, err := parseArgs(fs, args); helped || err != nil {
		return err
	}
	if fs.NArg() > 0 || *selector == "" {
		return &usageError{msg: "status needs --selector and no arguments; see status --help"}
	}
	if *namespace == "" {
		b, err := os.ReadFile(inClusterNamespace)
		if err != nil {
			return &usageError{msg: "--namespace is required outside a cluster"}
		}
		*namespace = strings.TrimSpace(string(b))
	}
	rc, err := restConfig(*kubeconfig, &config.Manager{ClientQPS: 5, ClientBurst: 10})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	var last error
	var leader *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, *timeout, true, func(ctx context.Context) (bool, error) {
		leader, last = readStatus(ctx, cs, *namespace, *lease, *selector)
		return last == nil, nil
	})
	if err != nil {
		if last == nil {
			last = err
		}
		return fmt.Errorf("no ready leader in %s after %s: %w", *namespace, *timeout, last)
	}
	if *lease == "" {
		fmt.Fprintf(out, "%s/%s is ready (no leader election)\n", *namespace, leader.Name)
	} else {
		fmt.Fprintf(out, "%s/%s leads (Lease %s) and is ready\n", *namespace, leader.Name, *lease)
	}
	return nil
}

// readStatus reads the Lease and the Pods and returns the ready leader.
func readStatus(ctx context.Context, cs kubernetes.Interface, ns, lease, selector string) (*corev1.Pod, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %s: %w", selector, err)
	}
	var l *coordinationv1.Lease
	if lease != "" {
		if l, err = cs.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("get Lease %s: %w", lease, err)
		}
	}
	return readyLeader(l, pods.Items, time.Now())
}

// readyLeader returns the Ready pod among pods that holds lease at now (any
// Ready pod when lease is nil), or why there is none. controller-runtime
// names a holder "<host name>_<uuid>"; the host name is the pod's name, or
// its node's with hostNetwork.
func readyLeader(lease *coordinationv1.Lease, pods []corev1.Pod, now time.Time) (*corev1.Pod, error) {
	if lease == nil {
		for i := range pods {
			if podReady(&pods[i]) {
				return &pods[i], nil
			}
		}
		return nil, fmt.Errorf("none of %d pods is ready", len(pods))
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	if holder == "" {
		return nil, fmt.Errorf("the Lease %s has no holder", lease.Name)
	}
	renewed := lease.Spec.RenewTime
	if renewed == nil || lease.Spec.LeaseDurationSeconds == nil ||
		now.After(renewed.Add(time.Duration(*lease.Spec.LeaseDurationSeconds)*time.Second)) {
		return nil, fmt.Errorf("the Lease %s is held by %s but has expired", lease.Name, holder)
	}
	host := holder
	if i := strings.LastIndex(holder, "_"); i > 0 {
		host = holder[:i]
	}
	var names []string
	for i := range pods {
		p := &pods[i]
		names = append(names, p.Name)
		if p.Name != host && (!p.Spec.HostNetwork || p.Spec.NodeName != host) {
			continue
		}
		if !podReady(p) {
			return nil, fmt.Errorf("the leader %s is not ready", p.Name)
		}
		return p, nil
	}
	return nil, fmt.Errorf("the Lease %s is held by %s, which is none of the pods %v", lease.Name, holder, names)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
