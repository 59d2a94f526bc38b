#!/usr/bin/env bash
# `make install`: copies liblmx (shared, with its soname links, and static), the header and
# Swift module map, lmx.pc, the lmx CLI and MLX's runtime into a prefix.
# Usage: install.sh DESTDIR_PREFIX PREFIX VERSION TARGET_DIR MLX_LIBDIR
#   DESTDIR_PREFIX: where files go (DESTDIR + PREFIX); PREFIX: where they will live (for lmx.pc).
# Layout: lib/liblmx.so.VERSION, lib/liblmx.so.MAJOR -> it, lib/liblmx.so -> liblmx.so.MAJOR,
# lib/liblmx.a, lib/lmx/mlx/lib (libmlx.so and the wheel's sibling *.libs folders, where the
# installed library looks first), lib/pkgconfig/lmx.pc, include/lmx/{lmx.h,module.modulemap},
# bin/lmx.
set -euo pipefail
dest=$1 prefix=$2 version=$3 target=$4 mlxlib=$5
major=${version%%.*}
root=$(cd "$(dirname "$0")/.." && pwd)

install -d "$dest/lib/pkgconfig" "$dest/include/lmx" "$dest/bin" "$dest/lib/lmx/mlx"
install -m 0755 "$target/liblmx.so" "$dest/lib/liblmx.so.$version"
ln -sf "liblmx.so.$version" "$dest/lib/liblmx.so.$major"
ln -sf "liblmx.so.$major" "$dest/lib/liblmx.so"
install -m 0644 "$target/liblmx.a" "$dest/lib/liblmx.a"
install -m 0644 "$root/include/lmx.h" "$root/include/module.modulemap" "$dest/include/lmx/"
install -m 0755 "$target/lmx" "$dest/bin/lmx"

# MLX: the wheel's lib folder, and the folders of libraries the wheel bundles beside the
# package (libmlx.so finds them through its own $ORIGIN/../../<name>.libs RPATH).
site=$(dirname "$(dirname "$mlxlib")")
rm -rf "$dest/lib/lmx/mlx/lib"
cp -a "$mlxlib" "$dest/lib/lmx/mlx/lib"
for d in "$site"/mlx*.libs; do
  [ -d "$d" ] || continue
  rm -rf "$dest/lib/lmx/$(basename "$d")"
  cp -a "$d" "$dest/lib/lmx/"
done

"$root/scripts/lmx_pc.sh" "$version" "$prefix/lib" "$prefix/include/lmx" "$prefix/lib/lmx/mlx/lib" \
  > "$dest/lib/pkgconfig/lmx.pc"
echo "installed liblmx $version into $dest"
