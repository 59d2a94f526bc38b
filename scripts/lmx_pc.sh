#!/usr/bin/env bash
# Writes lmx.pc (pkg-config) to stdout.
# Usage: lmx_pc.sh VERSION LIBDIR INCLUDEDIR MLX_LIBDIR
# LIBDIR holds liblmx.so and liblmx.a, INCLUDEDIR lmx.h, MLX_LIBDIR libmlx.so (for static
# linking and the RPATH of programs that link liblmx statically).
set -euo pipefail
version=$1 libdir=$2 includedir=$3 mlxlibdir=$4
cat <<PC
libdir=$libdir
includedir=$includedir
mlxlibdir=$mlxlibdir

Name: lmx
Description: Large language models on Apple's MLX runtime, behind a stable C ABI
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -llmx -Wl,-rpath,\${libdir}
Libs.private: -L\${mlxlibdir} -lmlx -Wl,-rpath,\${mlxlibdir} -lstdc++ -lpthread -ldl -lm
PC
