#!/usr/bin/env bash
# Builds a release's artifacts into _output/release, with no container
# engine and no network beyond the Go module proxy:
#
#   hack/release.sh v0.2.0            (make release VERSION=v0.2.0)
#
#   image/                               the OCI image layout (linux/amd64, linux/arm64), tagged v0.2.0
#   kubelet-csr-controller-image-v0.2.0.oci.tar   the same layout as one reproducible tar
#   kubelet-csr-controller-v0.2.0.cdx.json        CycloneDX SBOM of the binary's Go modules
#   kubelet-csr-controller-0.2.0.tgz              the chart: version 0.2.0, appVersion (and image tag) v0.2.0
#   image.digest                         the image index's digest, for signing by digest
#   SHA256SUMS                           checksums of all of the above
#
# The release workflow runs exactly this, then pushes and signs (RELEASING.md).
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

version=${1:-}
if [[ ! "${version}" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release.sh: give the release as vMAJOR.MINOR.PATCH[-PRERELEASE], e.g. make release VERSION=v0.2.0 (got ${version@Q})" >&2
	exit 2
fi
chart_version=${version#v}
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" && -z "${ALLOW_DIRTY:-}" ]]; then
	echo "release.sh: the work tree has uncommitted changes; a release is built from a commit (ALLOW_DIRTY=1 to try anyway)" >&2
	exit 2
fi

out=_output/release
rm -rf "${out}"
mkdir -p "${out}"

VERSION=${version} hack/tools/image/build.sh "${out}/image"
mv "${out}/image.cdx.json" "${out}/kubelet-csr-controller-${version}.cdx.json"

# One tar of the layout, byte for byte the same for one commit.
epoch=$(hack/build-flags.sh epoch)
tar --sort=name --mtime="@${epoch}" --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w \
	--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
	-C "${out}/image" -cf "${out}/kubelet-csr-controller-image-${version}.oci.tar" .

helm=$(hack/build-tools.sh helm)/helm
# A copy of the chart whose Artifact Hub image annotation names this
# release's tag, as --app-version does for the default image.
chart="${out}/chart/kubelet-csr-controller"
mkdir -p "${out}/chart"
cp -R charts/kubelet-csr-controller "${chart}"
sed -i -E "s#(image: ghcr.io/nodecsr/kubelet-csr-controller):.*#\1:${version}#" "${chart}/Chart.yaml"
"${helm}" lint "${chart}" >/dev/null
"${helm}" package "${chart}" --version "${chart_version}" --app-version "${version}" \
	--destination "${out}" >/dev/null
rm -rf "${out}/chart"

(cd "${out}" && sha256sum ./*.tar ./*.tgz ./*.cdx.json image.digest >SHA256SUMS)
echo "release.sh: ${version} in ${out}:" >&2
(cd "${out}" && cat SHA256SUMS) >&2
