// Command image writes the controller's multi-platform OCI image layout
// from binaries built beforehand (hack/tools/image/build.sh builds them),
// with no container engine and nothing fetched: an empty base, one layer with
// the static binary and an /etc/passwd naming user 65532, nothing else (no
// shell). Every byte comes from its inputs and the commit time, so two runs on
// one commit write the same digests.
//
//	go run . --out DIR --version v0.2.0 --revision SHA --created 2026-12-01T10:00:00Z \
//	    --binary linux/amd64=PATH --binary linux/arm64=PATH
//
// It prints the image index's digest on stdout and each platform's sizes on
// stderr.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o := options{binaries: map[platform]string{}}
	var created string
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "Directory to write the OCI layout into; it must not exist or be empty.")
	fs.StringVar(&o.version, "version", "", "The version: the image's tag (ref.name) and its version annotation.")
	fs.StringVar(&o.revision, "revision", "", "The full commit hash.")
	fs.StringVar(&created, "created", "", "The commit time, RFC 3339: file times, config created, annotation.")
	fs.StringVar(&o.source, "source", "https://github.com/nodecsr/kubelet-csr-controller", "The source repository URL.")
	fs.Func("binary", "OS/ARCH=PATH of a static binary, once per platform.", func(s string) error {
		p, path, ok := strings.Cut(s, "=")
		if !ok {
			return errors.New("want OS/ARCH=PATH")
		}
		goos, goarch, ok := strings.Cut(p, "/")
		if !ok || goos == "" || goarch == "" {
			return fmt.Errorf("platform %q: want OS/ARCH", p)
		}
		o.binaries[platform{goos, goarch}] = path
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case o.out == "", o.version == "", o.revision == "", created == "":
		return errors.New("--out, --version, --revision and --created are required")
	case len(o.binaries) == 0:
		return errors.New("give at least one --binary")
	}
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("--created: %w", err)
	}
	o.created = t.UTC()

	res, err := build(o)
	if err != nil {
		return err
	}
	for _, p := range res.platforms {
		fmt.Fprintf(os.Stderr, "%s: manifest %s, layer %s compressed, binary %s\n",
			p.platform, p.manifest, mib(p.layerSize), mib(p.binarySize))
	}
	fmt.Println(res.index)
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n) }
