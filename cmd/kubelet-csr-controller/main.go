// Command kubelet-csr-controller approves, signs and cleans up kubelet
// certificate signing requests, replacing kube-controller-manager's
// csrapproving, csrsigning and csrcleaner controllers.
//
//	kubelet-csr-controller [flags]                    run the controller
//	kubelet-csr-controller check --config FILE [--node node.yaml] csr.yaml
//	                                                  decide one CSR offline
//	kubelet-csr-controller audit --config FILE [--kubeconfig FILE | --node nodes.yaml]
//	                                                  audit the certificates kubelets serve
//	kubelet-csr-controller status --selector LABELS   wait for a ready leader
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2 // bad flags or configuration: nothing was started
	exitNotAllow = 3 // check: the CSR would not be approved; audit: a node failed
)

// usageError is a mistake in how the binary was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseArgs parses a subcommand's flags. helped is true when help was asked
// for (the flag package has printed it: the subcommand is done); a bad flag
// is a usage error.
func parseArgs(fs *flag.FlagSet, args []string) (helped bool, err error) {
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return true, nil
	case err != nil:
		return false, &usageError{msg: err.Error()}
	}
	return false, nil
}

// notApprovedError is check's answer for a CSR that would not be approved.
type notApprovedError struct{ verdict string }

func (e *notApprovedError) Error() string { return "the CSR would not be approved: " + e.verdict }

func exitCode(err error) int {
	var u *usageError
	var c *config.Error
	var n *notApprovedError
	var a *auditFailedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &n), errors.As(err, &a):
		return exitNotAllow
	case errors.As(err, &u), errors.As(err, &c):
		fmt.Fprintln(os.Stderr, "kubelet-csr-controller:", err)
		return exitUsage
	default:
		fmt.Fprintln(os.Stderr, "kubelet-csr-controller:", err)
		return exitFailure
	}
}
