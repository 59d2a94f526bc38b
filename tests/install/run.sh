#!/usr/bin/env bash
# `make test-install`: installs liblmx into a temporary prefix, then builds and runs, from
# folders outside this repository, a C program (`pkg-config --cflags --libs lmx`) and a Go
# module importing the liblmx packages, with PKG_CONFIG_PATH naming only the installed
# lmx.pc; both must load the installed liblmx and MLX, not the build tree's.
# Usage: run.sh VERSION TARGET_DIR MLX_LIBDIR MODEL_DIR
set -euo pipefail
version=$1 target=$2 mlxlib=$3 model=$4
major=${version%%.*}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

"$root/scripts/install.sh" "$prefix" "$prefix" "$version" "$target" "$mlxlib" >/dev/null
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
fail() { echo "test-install: $*" >&2; exit 1; }

[ "$(readlink "$prefix/lib/liblmx.so")" = "liblmx.so.$major" ] || fail "liblmx.so does not link to liblmx.so.$major"
[ "$(readlink "$prefix/lib/liblmx.so.$major")" = "liblmx.so.$version" ] || fail "no liblmx.so.$major -> liblmx.so.$version"
readelf -d "$prefix/lib/liblmx.so.$version" | grep -q "(SONAME).*\[liblmx.so.$major\]" || fail "soname is not liblmx.so.$major"
[ "$(pkg-config --modversion lmx)" = "$version" ] || fail "pkg-config reports $(pkg-config --modversion lmx)"
for f in lib/liblmx.a include/lmx/lmx.h include/lmx/module.modulemap bin/lmx; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done

# Both programs must resolve liblmx and libmlx inside the prefix.
check_links() {
  local deps
  deps=$(ldd "$1")
  grep -q "liblmx.so.$major => $prefix/lib/liblmx.so.$major" <<<"$deps" || fail "$1 does not load the installed liblmx: $deps"
  grep -q "libmlx.so => $prefix/lib/lmx/mlx/lib/libmlx.so" <<<"$deps" || fail "$1 does not load the installed MLX: $deps"
}

mkdir "$tmp/c"
cp "$root/tests/install/hello.c" "$tmp/c/"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags lmx) "$tmp/c/hello.c" -o "$tmp/c/hello" $(pkg-config --libs lmx)
check_links "$tmp/c/hello"
"$tmp/c/hello" "$model" | tail -1 | grep -q "liblmx $version: ok" || fail "the C program failed"
echo "test-install: a C program built with pkg-config runs against $prefix"

"$prefix/bin/lmx" version >/dev/null || fail "the installed lmx CLI does not run"

mkdir "$tmp/go"
cp "$root/tests/install/main.go" "$tmp/go/"
cat >"$tmp/go/go.mod" <<MOD
module example.com/lmxapp

go 1.26

require liblmx/go v0.0.0

replace liblmx/go => $root/go
MOD
# A build cache of its own: Go's cache keys a cgo package on the pkg-config program, not on
# what it prints, so a package built earlier against this tree would be reused unchanged.
(cd "$tmp/go" && GOCACHE=$tmp/gocache go build -o app .) || fail "the Go module does not build against the installed liblmx"
check_links "$tmp/go/app"
"$tmp/go/app" "$model" | tail -1 | grep -q "liblmx $version: ok" || fail "the Go program failed"
echo "test-install: a Go module outside the repository builds and runs against $prefix"
