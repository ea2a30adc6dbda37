#!/usr/bin/env bash
# The one source of the controller's build flags and version stamp, for the
# Makefile, the Dockerfile and the image builder (hack/tools/image), so that
# every way of building gives the same bytes for the same commit.
#
#   hack/build-flags.sh [ldflags|goflags|version|commit|date|epoch]
#
#   ldflags  (default) the -ldflags value: -s -w and -X main.version, main.commit, main.date
#   goflags  the other go build flags: -trimpath -buildvcs=false
#   version  VERSION, else git describe --tags --always --dirty, else dev
#   commit   COMMIT, else the full hash of HEAD, else unknown
#   date     the commit time in RFC 3339 UTC (SOURCE_DATE_EPOCH, else git), else unknown
#   epoch    the same time in seconds since 1970
#
# The build date is the commit's, never the clock's: two builds of one commit
# are identical. Without git (a Docker build context) the environment must
# say VERSION, COMMIT and SOURCE_DATE_EPOCH.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

in_git() {
	command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1
}

version() {
	if [[ -n "${VERSION:-}" ]]; then
		echo "${VERSION}"
	elif in_git; then
		git describe --tags --always --dirty
	else
		echo dev
	fi
}

commit() {
	if [[ -n "${COMMIT:-}" ]]; then
		echo "${COMMIT}"
	elif in_git; then
		git rev-parse HEAD
	else
		echo unknown
	fi
}

epoch() {
	if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
		echo "${SOURCE_DATE_EPOCH}"
	elif in_git; then
		git log -1 --format=%ct
	fi
}

date_() {
	local e
	e=$(epoch)
	if [[ -z "${e}" ]]; then
		echo unknown
		return
	fi
	TZ=UTC date -d "@${e}" +%Y-%m-%dT%H:%M:%SZ
}

# The values go into -ldflags unquoted: refuse what would split or inject.
for v in "$(version)" "$(commit)"; do
	if [[ ! "${v}" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]]; then
		echo "build-flags.sh: ${v@Q} is not a version or commit (letters, digits, . _ + -)" >&2
		exit 2
	fi
done

case "${1:-ldflags}" in
ldflags) echo "-s -w -X main.version=$(version) -X main.commit=$(commit) -X main.date=$(date_)" ;;
goflags) echo "-trimpath -buildvcs=false" ;;
version) version ;;
commit) commit ;;
date) date_ ;;
epoch) epoch ;;
*)
	echo "build-flags.sh: unknown argument $1; known: ldflags goflags version commit date epoch" >&2
	exit 2
	;;
esac
