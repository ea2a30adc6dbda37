// Package image inspects the OCI image layout hack/tools/image/build.sh
// writes (make image): both platforms, a static binary that runs, the user
// and the entrypoint, no shell, the annotations, the SBOM beside it, and the
// same digest from a second build.
//
// make test builds the layout first and names it in KCC_IMAGE; without it the
// test builds one itself.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The parts of the OCI image spec the test reads.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type index struct {
	MediaType   string            `json:"mediaType"`
	Manifests   []descriptor      `json:"manifests"`
	Annotations map[string]string `json:"annotations"`
}

type manifest struct {
	MediaType   string            `json:"mediaType"`
	Config      descriptor        `json:"config"`
	Layers      []descriptor      `json:"layers"`
	Annotations map[string]string `json:"annotations"`
}

type imageConfig struct {
	Created      time.Time `json:"created"`
	OS           string    `json:"os"`
	Architecture string    `json:"architecture"`
	Config       struct {
		User       string            `json:"User"`
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Env        []string          `json:"Env"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

const (
	ociIndex    = "application/vnd.oci.image.index.v1+json"
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// build runs hack/tools/image/build.sh into a new directory.
func build(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image")
	cmd := exec.Command(filepath.Join(root(t), "hack/tools/image/build.sh"), out)
	cmd.Dir = root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	return out
}

func layout(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KCC_IMAGE"); dir != "" {
		return dir
	}
	t.Log("KCC_IMAGE is not set: building the image (make test builds it first)")
	return build(t)
}

func blob(t *testing.T, dir string, d descriptor) []byte {
	t.Helper()
	algo, hex, ok := strings.Cut(d.Digest, ":")
	if !ok || algo != "sha256" {
		t.Fatalf("digest %q: want sha256:HEX", d.Digest)
	}
	b, err := os.ReadFile(filepath.Join(dir, "blobs", algo, hex))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != d.Size {
		t.Fatalf("blob %s: %d bytes, the descriptor says %d", d.Digest, len(b), d.Size)
	}
	return b
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// files reads a layer's tar: each entry's name, mode, owner, and body for
// regular files.
type file struct {
	mode     int64
	uid, gid int
	typ      byte
	body     []byte
}

func files(t *testing.T, layer []byte) map[string]file {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]file{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = file{mode: h.Mode, uid: h.Uid, gid: h.Gid, typ: h.Typeflag, body: body}
	}
}

func gitOutput(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = root(t)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(b))
}

func TestTheImageLayout(t *testing.T) {
	dir := layout(t)
	commit := gitOutput(t, "rev-parse", "HEAD")
	epoch, err := strconv.ParseInt(gitOutput(t, "log", "-1", "--format=%ct"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Unix(epoch, 0).UTC()

	var top index
	decode(t, readFile(t, filepath.Join(dir, "index.json")), &top)
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != ociIndex {
		t.Fatalf("index.json holds %+v; want one image index", top.Manifests)
	}
	version := top.Manifests[0].Annotations["org.opencontainers.image.ref.name"]
	if version == "" {
		t.Error("index.json names no tag (org.opencontainers.image.ref.name)")
	}
	var idx index
	decode(t, blob(t, dir, top.Manifests[0]), &idx)

	wantAnnotations := map[string]string{
		"org.opencontainers.image.source":      "https://github.com/nodecsr/kubelet-csr-controller",
		"org.opencontainers.image.url":         "https://github.com/nodecsr/kubelet-csr-controller",
		"org.opencontainers.image.revision":    commit,
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
		"org.opencontainers.image.title":       "kubelet-csr-controller",
		"org.opencontainers.image.description": "Approves, signs and cleans up kubelet certificate signing requests.",
	}
	if diff := cmp.Diff(wantAnnotations, idx.Annotations); diff != "" {
		t.Errorf("the image index's annotations (-want +got):\n%s", diff)
	}

	var platforms []string
	for _, d := range idx.Manifests {
		if d.Platform == nil || d.MediaType != ociManifest {
			t.Fatalf("an index entry %+v is not a platform's image manifest", d)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		platforms = append(platforms, p)
		t.Run(p, func(t *testing.T) {
			var m manifest
			decode(t, blob(t, dir, d), &m)
			if diff := cmp.Diff(wantAnnotations, m.Annotations); diff != "" {
				t.Errorf("the manifest's annotations (-want +got):\n%s", diff)
			}
			var cfg imageConfig
			decode(t, blob(t, dir, m.Config), &cfg)
			if got := cfg.OS + "/" + cfg.Architecture; got != p {
				t.Errorf("the config is for %s", got)
			}
			if !cfg.Created.Equal(created) {
				t.Errorf("created %v; want the commit's time %v", cfg.Created, created)
			}
			if cfg.Config.User != "65532:65532" {
				t.Errorf("user %q; want 65532:65532", cfg.Config.User)
			}
			if diff := cmp.Diff([]string{"/kubelet-csr-controller"}, cfg.Config.Entrypoint); diff != "" || len(cfg.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q, cmd %q; want only the binary", cfg.Config.Entrypoint, cfg.Config.Cmd)
			}
			if diff := cmp.Diff(wantAnnotations, cfg.Config.Labels); diff != "" {
				t.Errorf("the config's labels (-want +got):\n%s", diff)
			}
			if len(m.Layers) != 1 || m.Layers[0].MediaType != ociLayer {
				t.Fatalf("layers %+v; want one gzip tar layer", m.Layers)
			}
			fs := files(t, blob(t, dir, m.Layers[0]))
			var names []string
			for name := range fs {
				names = append(names, name)
			}
			sort.Strings(names)
			// Nothing else: no shell, no package manager, no base image.
			want := []string{"etc", "etc/group", "etc/passwd", "home", "home/nonroot", "kubelet-csr-controller", "tmp"}
			if diff := cmp.Diff(want, names); diff != "" {
				t.Errorf("the layer's files (-want +got):\n%s", diff)
			}
			if !strings.Contains(string(fs["etc/passwd"].body), "nonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd does not name user 65532:\n%s", fs["etc/passwd"].body)
			}
			if h := fs["home/nonroot"]; h.uid != 65532 || h.gid != 65532 {
				t.Errorf("/home/nonroot is owned by %d:%d; want 65532", h.uid, h.gid)
			}
			bin := fs["kubelet-csr-controller"]
			if bin.typ != tar.TypeReg || bin.mode&0o111 == 0 {
				t.Fatalf("the binary is not an executable file (type %c, mode %o)", bin.typ, bin.mode)
			}
			checkStatic(t, bin.body, d.Platform.Architecture)
			if p == runtime.GOOS+"/"+runtime.GOARCH {
				checkVersion(t, bin.body, version, commit, created)
			}
		})
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}

	// The SBOM beside the layout lists the modules the binary links.
	var sbom struct {
		BOMFormat  string `json:"bomFormat"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"components"`
	}
	decode(t, readFile(t, dir+".cdx.json"), &sbom)
	found := map[string]bool{}
	for _, c := range sbom.Components {
		found[c.Name] = true
	}
	if sbom.BOMFormat != "CycloneDX" {
		t.Errorf("the SBOM's format is %q; want CycloneDX", sbom.BOMFormat)
	}
	for _, m := range []string{"sigs.k8s.io/controller-runtime", "k8s.io/client-go", "go.uber.org/zap"} {
		if !found[m] {
			t.Errorf("the SBOM does not list %s", m)
		}
	}
}

// Two builds of one commit give the same bytes, so anyone can check that a
// published image came from its commit.
func TestTwoBuildsOfOneCommitGiveTheSameDigest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image for two platforms")
	}
	first := strings.TrimSpace(string(readFile(t, layout(t)+".digest")))
	second := strings.TrimSpace(string(readFile(t, build(t)+".digest")))
	if first != second {
		t.Errorf("the image index's digest changed between two builds: %s, then %s", first, second)
	}
}

// checkStatic refuses a dynamically linked binary: it would not start on an
// empty base.
func checkStatic(t *testing.T, bin []byte, arch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("the binary is not ELF: %v", err)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine {
		t.Errorf("the binary is for %v; want %v", f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked (it has an interpreter): build it with CGO_ENABLED=0")
		}
	}
}

// checkVersion runs the image's own binary, as the container would.
func checkVersion(t *testing.T, bin []byte, version, commit string, created time.Time) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubelet-csr-controller")
	if err := os.WriteFile(path, bin, 0o755); err != nil { //nolint:gosec // an executable
		t.Fatal(err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	want := "kubelet-csr-controller " + version + " (commit " + commit[:7] + ", built " + created.Format(time.RFC3339) + ", go"
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("--version printed %q; want it to begin %q", out, want)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path) //nolint:gosec // a path the test chose
	if err != nil {
		t.Fatal(err)
	}
	return b
}
