#!/usr/bin/env bash
# The version-skew matrix (make compat; not part of make test or CI): the
# envtest suites (go test ./...) against older kube-apiservers, and the
# real-kubelet test (test/e2e-kubelet) with an older kubelet against the
# v1.37.2 API server. Each row builds its binaries once into the tools cache
# (hack/build-tools.sh with KCC_KUBE_TOOLS) and logs to _output/compat/.
# It runs every row, prints a table and exits non-zero if any row failed.
#
#   hack/compat.sh [ROW...]   ROW: apiserver-1.36 apiserver-1.35 kubelet-1.34 (default: those whose module exists)
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=_output/compat
mkdir -p "${out}"
bin="${PWD}/bin/kubelet-csr-controller"
helm="$(hack/build-tools.sh helm)/helm"
promtool="$(hack/build-tools.sh promtool)/promtool"

if [[ $# -eq 0 ]]; then
	for m in hack/tools/kube-1.*; do
		v=${m#hack/tools/kube-}
		if grep -q 'cmd/kube-apiserver' "${m}/go.mod"; then set -- "$@" "apiserver-${v}"; fi
		if grep -q 'cmd/kubelet' "${m}/go.mod"; then set -- "$@" "kubelet-${v}"; fi
	done
fi

declare -a rows
failed=0
for row in "$@"; do
	kind=${row%-*} v=${row##*-}
	log="${out}/${row}.log"
	start=${SECONDS}
	echo "compat: ${row} (log ${log})" >&2
	case "${kind}" in
	apiserver)
		# Every package's tests with that API server and etcd (and its
		# kube-controller-manager, for the cut-over and the benchmark's
		# baseline); no -race, to keep the matrix affordable.
		assets=$(KCC_KUBE_TOOLS="kube-${v}" hack/build-tools.sh kube-apiserver etcd kube-controller-manager)
		# (test/image starts no API server: it is left out.)
		mapfile -t pkgs < <(go list ./... | grep -v '/test/image$')
		cmd=(env KUBEBUILDER_ASSETS="${assets}" HELM="${helm}" PROMTOOL="${promtool}" KCC_BINARY="${bin}"
			go test -count=1 -timeout 30m "${pkgs[@]}")
		;;
	kubelet)
		kubelets=$(KCC_KUBE_TOOLS="kube-${v}" hack/build-tools.sh kubelet fakecri)
		cmd=(env KUBEBUILDER_ASSETS="$(hack/build-tools.sh kube-apiserver etcd kube-controller-manager)" HELM="${helm}" KCC_BINARY="${bin}"
			KCC_KUBELET_DIR="${kubelets}" go test -tags e2ekubelet -count=1 -v -timeout 15m ./test/e2e-kubelet/)
		;;
	*)
		echo "compat: unknown row ${row}" >&2
		exit 2
		;;
	esac
	build=$((SECONDS - start))
	if "${cmd[@]}" >"${log}" 2>&1; then result=pass; else result=FAIL failed=1; fi
	fails=$(grep -E '^--- FAIL: ' "${log}" | awk '{print $3}' | sort -u | paste -sd' ' - || true)
	rows+=("$(printf '%-16s %-5s build %4ss  test %4ss  %s' "${row}" "${result}" "${build}" "$((SECONDS - start - build))" "${fails:+failed: ${fails}}")")
done
printf '%s\n' "${rows[@]}" | tee "${out}/summary.txt"
exit "${failed}"
