#!/usr/bin/env bash
# Builds the controller's image as an OCI image layout, with no container
# engine and nothing fetched beyond the Go module proxy:
#
#   hack/tools/image/build.sh [OUT]        OUT defaults to _output/image
#
# It writes
#   OUT/               the OCI layout (index.json at its root): one image index,
#                      tagged VERSION, with an image per platform in PLATFORMS
#   OUT.cdx.json       a CycloneDX SBOM of the Go modules linked into the binary
#   OUT.digest         the image index's digest (sha256:...)
#
# The binaries are static (CGO off, -trimpath) and stamped by
# hack/build-flags.sh, the same flags as make build and the Dockerfile. Every
# time inside comes from the commit, so two builds of one commit are identical.
# Push the result with crane (pinned here: go tool -modfile=hack/tools/image/go.mod
# crane push OUT REF) or skopeo (skopeo copy --all oci:OUT:VERSION docker://REF).
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "${root}"
out=${1:-${root}/_output/image}
[[ "${out}" = /* ]] || out="${root}/${out}"
platforms=${PLATFORMS:-linux/amd64 linux/arm64}

version=$(hack/build-flags.sh version)
commit=$(hack/build-flags.sh commit)
created=$(hack/build-flags.sh date)
ldflags=$(hack/build-flags.sh ldflags)
read -r -a goflags <<<"$(hack/build-flags.sh goflags)"
if [[ "${created}" == unknown ]]; then
	echo "build.sh: no commit time (no git, no SOURCE_DATE_EPOCH): an image must be reproducible" >&2
	exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT

args=()
for p in ${platforms}; do
	bin="${work}/${p/\//-}/kubelet-csr-controller"
	echo "build.sh: building ${p}" >&2
	GOOS=${p%/*} GOARCH=${p#*/} CGO_ENABLED=0 \
		go build "${goflags[@]}" -ldflags "${ldflags}" -o "${bin}" ./cmd/kubelet-csr-controller
	args+=(--binary "${p}=${bin}")
done

rm -rf "${out}" "${out}.cdx.json" "${out}.digest"
mkdir -p "$(dirname "${out}")"
digest=$(cd hack/tools/image && go run . --out "${out}" --version "${version}" --revision "${commit}" --created "${created}" "${args[@]}")
echo "${digest}" >"${out}.digest"

# The SBOM: the modules the linux/amd64 binary links (the platforms share
# them; the controller has no per-platform dependencies). No serial number
# and no timestamp, so that it is reproducible too.
(cd hack/tools/image && GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go tool cyclonedx-gomod app \
	-json -licenses -noserial -notimestamp -main cmd/kubelet-csr-controller \
	-output "${out}.cdx.json" "${root}") 2> >(grep -v '^{"level":"info"' >&2 || true)

echo "build.sh: ${out} (index ${digest}), ${out}.cdx.json" >&2
