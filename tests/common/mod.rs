//! Shared helpers for the integration tests: fixture paths and reference files.
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

/// A real model folder, or None (skip) when it is not prepared and not required
/// (LMX_REAL_MODELS=1 requires it).
pub fn folder(name: &str) -> Option<PathBuf> {
    let dir = cache_dir().join(name);
    if dir.join("reference.json").exists() {
        return Some(dir);
    }
    if std::env::var("LMX_REAL_MODELS").as_deref() == Ok("1") {
        panic!("{} is not prepared: run `make real-models`", dir.display());
    }
    eprintln!("skipping {name}: {} not prepared (make real-models)", dir.display());
    None
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

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("lmx-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
pub fn reference_python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ref/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("LMX_REAL_MODELS").as_deref() != Ok("1"),
        "{} is missing (make test installs it)",
        p.display()
    );
    eprintln!("skipped: {} is missing", p.display());
    None
}
