//! Shared helpers for the integration tests: fixture paths, reference files, the real-model
//! cache, and the record of skipped tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lmx::mlx::{io, Array};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture case with a reference.json, sorted.
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Where `make real-models` puts the real checkpoints.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("LMX_TEST_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/lmx-test"),
    }
}

/// Whether the real models and the reference toolchain are required (LMX_REAL_MODELS=1, as
/// `make test` sets): then their absence fails a test instead of skipping it.
fn required() -> bool {
    std::env::var("LMX_REAL_MODELS").as_deref() == Ok("1")
}

/// Records that the running test skips its work, or part of it, and why. cargo reports such a
/// test as passed and keeps its output to itself, so the line goes to stderr past the test
/// harness's capture, and, where LMX_SKIPS names a folder (`make test-rust` sets it), into a
/// file there that `make test-rust` lists once `cargo test` is done. The test's name is its
/// thread's: the harness runs each test on a thread named after it.
pub fn skip(reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = format!("{}::{}", env!("CARGO_CRATE_NAME"), thread.name().unwrap_or("(unnamed thread)"));
    let _ = std::io::stderr().write_all(format!("skipped {test}: {reason}\n").as_bytes());
    if let Some(dir) = std::env::var_os("LMX_SKIPS") {
        // One file per test process; each record is one append of one line.
        let path = Path::new(&dir).join(format!("{}-{}.txt", env!("CARGO_CRATE_NAME"), std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.write_all(format!("{test}\t{reason}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// `path` when `ready`; else a failure when the real models are required, or None after
/// recording the skip.
#[track_caller]
fn prepared(path: PathBuf, ready: bool) -> Option<PathBuf> {
    if ready {
        return Some(path);
    }
    if required() {
        panic!("{} is not prepared: run `make real-models`", path.display());
    }
    skip(&format!("{} is not prepared (make real-models)", path.display()));
    None
}

/// A real model folder, or None (skip) when it is not prepared and not required
/// (LMX_REAL_MODELS=1 requires it).
#[track_caller]
pub fn folder(name: &str) -> Option<PathBuf> {
    let dir = cache_dir().join(name);
    let ready = dir.join("reference.json").exists();
    prepared(dir, ready)
}

/// A file (or folder) under the real-model cache, `rel` to it, or None (skip) when it is not
/// prepared and not required (LMX_REAL_MODELS=1 requires it).
#[track_caller]
pub fn real_file(rel: &str) -> Option<PathBuf> {
    let path = cache_dir().join(rel);
    let ready = path.exists();
    prepared(path, ready)
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("a list of ids").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

pub fn tensors(path: &Path) -> HashMap<String, Array> {
    io::load_safetensors(path).unwrap_or_else(|e| panic!("{e}")).tensors
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A temporary folder (the `tempfile` crate's), removed on drop; `.0` is its path.
pub struct TempDir(pub PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let t = tempfile::Builder::new().prefix(&format!("lmx-{tag}-")).tempdir().unwrap();
        TempDir(t.path().to_path_buf(), t)
    }
}

/// Copies a fixture folder so a test can damage the copy.
pub fn copy_fixture(case: &str, tag: &str) -> TempDir {
    let t = TempDir::new(tag);
    for e in std::fs::read_dir(fixtures().join(case)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), t.0.join(e.file_name())).unwrap();
    }
    t
}

/// The Python of the reference toolchain (`make test` makes it), or None to skip (a failure
/// under LMX_REAL_MODELS=1, as `make test` sets).
#[track_caller]
pub fn reference_python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ref/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(!required(), "{} is missing (make test installs it)", p.display());
    skip(&format!("{} is missing (make test installs it)", p.display()));
    None
}
