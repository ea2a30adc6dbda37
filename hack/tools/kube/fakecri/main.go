// Command fakecri serves an in-memory container runtime and image service
// (k8s.io/cri-client/pkg/fake, the one kubemark's hollow nodes use) on a unix
// socket, so that a real kubelet can run on a machine with no container
// runtime. It runs until SIGINT or SIGTERM.
//
//	fakecri --endpoint unix:///tmp/kcc-kubelet/cri.sock
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	fakeremote "k8s.io/cri-client/pkg/fake"
)

func main() {
	endpoint := flag.String("endpoint", "", "the unix socket to serve on, as unix:///path/to.sock")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "fakecri: --endpoint is required")
		os.Exit(2)
	}
	runtime := fakeremote.NewFakeRemoteRuntime()
	if err := runtime.Start(*endpoint); err != nil {
		fmt.Fprintln(os.Stderr, "fakecri:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "fakecri: serving", *endpoint)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	runtime.Stop()
}
