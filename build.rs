//! Links liblmx to MLX and mlx-c.
//!
//! On macOS the `mlx-sys` crate builds both and provides the bindings; nothing happens here.
//! Elsewhere MLX is the PyPI wheel (`libmlx.so`) and mlx-c is built by the Makefile from the
//! source packaged in `mlx-sys`. This script generates the same bindings `mlx-sys` would
//! (every `mlx/c/*.h`, sorted, `-I` the mlx-c root, `malloc`/`realloc` blocklisted) and links:
//! mlx-c statically, `libmlx.so` dynamically with an RPATH (not RUNPATH: a RUNPATH is not used
//! for a dependency's own dependencies), libstdc++, and OpenBLAS ahead of the wheel's reference
//! BLAS unless `LMX_OPENBLAS=0`.
//!
//! Inputs, each with a default that `make` satisfies:
//! - `LMX_MLX_PREFIX`: the MLX install prefix (`python -m mlx --cmake-dir`); default: ask
//!   `.venv/bin/python`.
//! - `LMX_MLXC_BUILD`: mlx-c's CMake build folder holding `libmlxc.a`; default `build/mlx-c`.
//! - `LMX_MLXC_SRC`: mlx-c's source root; default: read from that build folder's CMakeCache.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        return;
    }
    #[cfg(not(target_os = "macos"))]
    linux::run();
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!("hint: run `make` once; it installs MLX in .venv and builds mlx-c in build/mlx-c");
    std::process::exit(1);
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()))
}

fn env_path(name: &str) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn mlx_prefix() -> PathBuf {
    if let Some(p) = env_path("LMX_MLX_PREFIX") {
        return p;
    }
    let python = manifest_dir().join(".venv/bin/python");
    let out = Command::new(&python)
        .args(["-m", "mlx", "--cmake-dir"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", python.display())));
    if !out.status.success() {
        fail(&format!("{} -m mlx --cmake-dir failed", python.display()));
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn mlxc_source(build: &Path) -> PathBuf {
    if let Some(p) = env_path("LMX_MLXC_SRC") {
        return p;
    }
    let cache = build.join("CMakeCache.txt");
    let text = std::fs::read_to_string(&cache)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", cache.display())));
    text.lines()
        .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
        .map(PathBuf::from)
        .unwrap_or_else(|| fail(&format!("{} names no source folder", cache.display())))
}

#[cfg(not(target_os = "macos"))]
mod linux {
    use super::*;

    pub fn run() {
        let prefix = mlx_prefix();
        let build = env_path("LMX_MLXC_BUILD").unwrap_or_else(|| manifest_dir().join("build/mlx-c"));
        let src = mlxc_source(&build);
        let mlx_lib = prefix.join("lib");
        if !mlx_lib.join("libmlx.so").exists() {
            fail(&format!("no libmlx.so in {}", mlx_lib.display()));
        }
        if !build.join("libmlxc.a").exists() {
            fail(&format!("no libmlxc.a in {}", build.display()));
        }
        println!("cargo:rerun-if-changed={}", build.join("libmlxc.a").display());

        bindings(&src);

        println!("cargo:rustc-link-search=native={}", build.display());
        println!("cargo:rustc-link-lib=static=mlxc");
        println!("cargo:rustc-link-search=native={}", mlx_lib.display());
        println!("cargo:rustc-link-lib=dylib=mlx");
        println!("cargo:rustc-link-lib=dylib=stdc++");
        // RPATH, not RUNPATH, so that libmlx.so's own dependencies resolve too, and so that
        // programs linking liblmx.so find MLX with no LD_LIBRARY_PATH.
        // `make install` copies MLX's runtime next to the library (lib/lmx/mlx/lib), so an
        // installed liblmx.so or lmx finds it there first; the build tree's copy is the
        // fallback (what a build that is not installed uses).
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/lmx/mlx/lib:$ORIGIN/../lib/lmx/mlx/lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", mlx_lib.display());
        // The shared library's soname carries the major version: liblmx.so.MAJOR.
        let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblmx.so.{major}");
        println!("cargo:rustc-env=LMX_MLX_LIB_DIR={}", mlx_lib.display());

        println!("cargo:rerun-if-env-changed=LMX_OPENBLAS");
        if env::var("LMX_OPENBLAS").as_deref() != Ok("0") {
            // The wheel's libmlx.so calls unversioned cblas_* symbols that its bundled
            // reference BLAS provides. A directly needed OpenBLAS comes earlier in the symbol
            // search order, so MLX's matmuls run on it (about 15x faster here).
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-l:libopenblas.so.0");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }

    fn bindings(src: &Path) {
        let dir = src.join("mlx/c");
        let mut headers: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", dir.display())))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "h"))
            .collect();
        headers.sort();
        let builder = headers.iter().fold(
            bindgen::Builder::default()
                .rust_target("1.73.0".parse().expect("a valid rust target"))
                .clang_arg(format!("-I{}", src.display()))
                .blocklist_function("malloc")
                .blocklist_function("realloc")
                // Not part of the API; only adds hundreds of generated tests.
                .layout_tests(false),
            |b, h| b.header(h.to_string_lossy()),
        );
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
        builder
            .generate()
            .unwrap_or_else(|e| fail(&format!("bindgen over {}: {e}", dir.display())))
            .write_to_file(&out)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", out.display())));
    }
}
