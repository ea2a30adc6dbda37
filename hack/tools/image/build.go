package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts.
const (
	title       = "kubelet-csr-controller"
	description = "Approves, signs and cleans up kubelet certificate signing requests."
	licenses    = "Apache-2.0"
	binaryPath  = "/kubelet-csr-controller"
	user        = "65532:65532" // nonroot, as distroless names it
)

type platform struct{ os, arch string }

func (p platform) String() string { return p.os + "/" + p.arch }

type options struct {
	out               string
	version, revision string
	source            string
	created           time.Time
	binaries          map[platform]string
}

type result struct {
	index     v1.Hash
	platforms []platformResult
}

type platformResult struct {
	platform   platform
	manifest   v1.Hash
	layerSize  int64 // compressed, as pulled
	binarySize int64
}

// annotations are the org.opencontainers.image.* keys, on the index, each
// manifest, and as labels in each config (where docker inspect shows them).
func (o options) annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.url":         o.source,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.licenses":    licenses,
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.description": description,
	}
}

// build writes the OCI layout: index.json naming one image index (tagged
// with the version) that holds one image per platform.
func build(o options) (result, error) {
	if err := emptyDir(o.out); err != nil {
		return result{}, err
	}
	var res result
	// Platforms in a fixed order: the index's bytes must not depend on the
	// order of the flags or of a map.
	plats := make([]platform, 0, len(o.binaries))
	for p := range o.binaries {
		plats = append(plats, p)
	}
	sort.Slice(plats, func(i, j int) bool { return plats[i].String() < plats[j].String() })

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range plats {
		img, pr, err := platformImage(o, p)
		if err != nil {
			return result{}, fmt.Errorf("%s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: p.os, Architecture: p.arch},
			},
		})
		res.platforms = append(res.platforms, pr)
	}
	idx, ok := mutate.Annotations(idx, o.annotations()).(v1.ImageIndex)
	if !ok {
		return result{}, errors.New("annotating the index did not give an index")
	}

	lp, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return result{}, fmt.Errorf("write layout %s: %w", o.out, err)
	}
	// ref.name is the tag: skopeo copy oci:DIR:TAG and crane find it by it.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.version,
	})); err != nil {
		return result{}, fmt.Errorf("write the image index: %w", err)
	}
	if res.index, err = idx.Digest(); err != nil {
		return result{}, err
	}
	return res, nil
}

// platformImage is one platform's image: the layer on an empty base and a
// config that runs the binary as 65532.
func platformImage(o options, p platform) (v1.Image, platformResult, error) {
	pr := platformResult{platform: p}
	bin, err := os.ReadFile(o.binaries[p])
	if err != nil {
		return nil, pr, err
	}
	pr.binarySize = int64(len(bin))
	tarBytes, err := rootfs(bin, o.created)
	if err != nil {
		return nil, pr, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, pr, err
	}
	if pr.layerSize, err = layer.Size(); err != nil {
		return nil, pr, err
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	created := v1.Time{Time: o.created}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "hack/tools/image: " + binaryPath + ", /etc/passwd, /etc/group",
		},
	})
	if err != nil {
		return nil, pr, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, pr, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = p.os, p.arch
	cf.Created = created
	cf.Config = v1.Config{
		User:       user,
		Entrypoint: []string{binaryPath},
		WorkingDir: "/",
		Labels:     o.annotations(),
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, pr, err
	}
	img, ok := mutate.Annotations(img, o.annotations()).(v1.Image)
	if !ok {
		return nil, pr, errors.New("annotating the image did not give an image")
	}
	if pr.manifest, err = img.Digest(); err != nil {
		return nil, pr, err
	}
	return img, pr, nil
}

// rootfs is the layer's tar: entries sorted, owned by root unless they
// belong to the user, every time the commit time, no user or group names, so
// that the same binary always gives the same bytes.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	const (
		passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
		group = "root:x:0:\nnonroot:x:65532:\n"
	)
	type entry struct {
		name     string
		mode     int64
		uid, gid int
		body     []byte // nil: a directory
	}
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: 65532, gid: 65532},
		{name: binaryPath[1:], mode: 0o755, body: bin},
		{name: "tmp/", mode: 0o1777},
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// emptyDir makes dir, or checks that it is empty: appending to an old
// layout's index.json would give an index with two entries.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o755)
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty; remove it first", dir)
	}
	return nil
}
