#!/usr/bin/env bash
# Builds the Debian packages httpgw and fastfilesrv into dist/:
#   deploy/build-deb.sh                 # this machine's architecture
#   GOARCH=arm64 deploy/build-deb.sh    # another one (static binaries, no cgo)
#   VERSION=1.2.3 deploy/build-deb.sh   # a version of your choosing
# The version comes from the last git tag vX.Y.Z (git describe):
#   v1.2.3 on HEAD         -> 1.2.3
#   5 commits after v1.2.3 -> 1.2.3+git5.0123abc
#   v1.3.0-rc1             -> 1.3.0~rc1 (sorts before 1.3.0)
#   no tag                 -> 0.0.0~git20261203.0123abc (commit date, UTC)
# and "+dirty" is added when the work tree has uncommitted changes. The
# version and the commit are stamped into the binaries with -ldflags -X,
# so that `httpgw -version` reports them even from a build without VCS
# information (-buildvcs=false, as CI builds).
# nfpm, the packager, is a Go tool dependency kept in deploy/tools.mod,
# apart from the product's go.mod: it is run with `go tool`, never
# downloaded as a binary.
set -euo pipefail
cd "$(dirname "$0")/.."

debVersion() {
	local d
	if d=$(git describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
		# vX.Y.Z[-pre]-N-gSHA
		local sha=${d##*-g} rest=${d%-g*}
		local n=${rest##*-} tag=${rest%-*}
		local v=${tag#v}
		v=${v/-/\~} # a pre-release sorts before its release
		if [[ $n != 0 ]]; then
			v="$v+git$n.$sha"
		fi
		echo "$v"
	else
		echo "0.0.0~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d).$(git rev-parse --short=7 HEAD)"
	fi
}

arch=${GOARCH:-$(go env GOARCH)}
revision=$(git rev-parse HEAD)
version=${VERSION:-$(debVersion)}
if [[ -z ${VERSION:-} ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
	version+="+dirty"
fi
build=dist/build/linux-$arch
mkdir -p "$build"

pkg=github.com/fastfile/fschunk/internal/cli
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Revision=$revision"
echo "building $version ($revision) for linux/$arch"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$build/" ./cmd/httpgw ./cmd/fastfilesrv

for p in httpgw fastfilesrv; do
	rm -f "dist/${p}_"*"_$arch.deb"
	FSCHUNK_VERSION=$version FSCHUNK_ARCH=$arch FSCHUNK_BUILD=$build \
	FSCHUNK_MAINTAINER=${DEB_MAINTAINER:-"fschunk maintainers <root@localhost>"} \
		go tool -modfile=deploy/tools.mod nfpm package --packager deb --config "deploy/nfpm/$p.yaml" --target dist/ >/dev/null
done
ls -l dist/*.deb
