#!/usr/bin/env bash
# Builds the binaries that tests, the demo and the benchmark need from Go
# modules (there is no download site for them), into a per-version cache
# outside the work tree, rebuilding only what is missing.
#
#   hack/build-tools.sh [TOOL...]   TOOL: kube-apiserver etcd kube-controller-manager kubelet fakecri helm golangci-lint promtool
#
# KCC_KUBE_TOOLS picks the module of the Kubernetes binaries (kube-apiserver,
# etcd, kube-controller-manager, kubelet): hack/tools/kube (v1.37.2) by
# default; make compat sets kube-1.36 or kube-1.34 for the version-skew
# matrix. fakecri, the kubelet's in-memory runtime, is always built from
# hack/tools/kube (the CRI is v1 in every version) into the same directory.
#
# With no TOOL it builds kube-apiserver and etcd. It prints one line on stdout:
# the directory holding the binaries (for kube-apiserver and etcd this is the
# KUBEBUILDER_ASSETS directory envtest wants). Progress goes to stderr.
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="${root}/hack/tools"
cache="${KCC_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/kubelet-csr-controller}"
# Bump when the way the binaries are built changes, so that caches rebuild.
recipe=r2

# version MODULE_DIR MODULE prints the version MODULE_DIR's go.mod requires.
version() {
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# kube_ldflags stamps the Kubernetes version into kube-apiserver and
# kube-controller-manager, as Kubernetes' own build does; unstamped they
# report v0.0.0 and clients that check the server version (helm's
# kubeVersion) refuse them.
kube_ldflags() {
	local v=$1 minor
	minor=$(echo "${v}" | cut -d. -f2)
	echo "-X k8s.io/component-base/version.gitVersion=${v} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
}

# build NAME MODULE_DIR PACKAGE DEST [LDFLAGS] builds PACKAGE from MODULE_DIR
# into DEST/NAME unless it is already there. The binary appears atomically,
# so an interrupted build never leaves a half-written file that later runs
# would trust.
build() {
	local name=$1 dir=$2 pkg=$3 dest=$4 ldflags=${5:-}
	if [[ -x "${dest}/${name}" ]]; then
		return
	fi
	mkdir -p "${dest}"
	echo "building ${name} into ${dest} (once per version; kube-apiserver takes 7-9 minutes cold, the others 1-2)" >&2
	local start=${SECONDS}
	(cd "${dir}" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w ${ldflags}" -o "${dest}/${name}.tmp.$$" "${pkg}")
	mv "${dest}/${name}.tmp.$$" "${dest}/${name}"
	echo "built ${name} in $((SECONDS - start))s" >&2
}

if [[ $# -eq 0 ]]; then
	set -- kube-apiserver etcd
fi

kube="${tools}/${KCC_KUBE_TOOLS:-kube}"
if [[ ! -f "${kube}/go.mod" ]]; then
	echo "build-tools.sh: KCC_KUBE_TOOLS=${KCC_KUBE_TOOLS:-}: no module ${kube}" >&2
	exit 2
fi

out=""
for tool in "$@"; do
	case "${tool}" in
	kube-apiserver | kube-controller-manager | kubelet)
		dir="${kube}"
		v=$(version "${dir}" k8s.io/kubernetes)
		out="${cache}/k8s-${v}-${recipe}"
		build "${tool}" "${dir}" "k8s.io/kubernetes/cmd/${tool}" "${out}" "$(kube_ldflags "${v}")"
		;;
	fakecri)
		# An in-memory container runtime for the real kubelet
		# (k8s.io/cri-client/pkg/fake, as kubemark uses).
		out="${cache}/k8s-$(version "${kube}" k8s.io/kubernetes)-${recipe}"
		build fakecri "${tools}/kube" ./fakecri "${out}"
		;;
	etcd)
		dir="${kube}"
		out="${cache}/k8s-$(version "${dir}" k8s.io/kubernetes)-${recipe}"
		build etcd "${dir}" go.etcd.io/etcd/server/v3 "${out}"
		;;
	helm)
		dir="${tools}/helm"
		out="${cache}/helm-$(version "${dir}" helm.sh/helm/v3)"
		build helm "${dir}" helm.sh/helm/v3/cmd/helm "${out}"
		;;
	golangci-lint)
		dir="${tools}/lint"
		out="${cache}/golangci-lint-$(version "${dir}" github.com/golangci/golangci-lint/v2)"
		build golangci-lint "${dir}" github.com/golangci/golangci-lint/v2/cmd/golangci-lint "${out}"
		;;
	promtool)
		dir="${tools}/prometheus"
		out="${cache}/promtool-$(version "${dir}" github.com/prometheus/prometheus)"
		build promtool "${dir}" github.com/prometheus/prometheus/cmd/promtool "${out}"
		;;
	*)
		echo "build-tools.sh: unknown tool ${tool}; known: kube-apiserver etcd kube-controller-manager kubelet fakecri helm golangci-lint promtool" >&2
		exit 2
		;;
	esac
done
echo "${out}"
