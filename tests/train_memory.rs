//! A trainer made over a row of 40 MB of text takes memory of the order of the row, not of
//! its tokens, and gives everything back when freed: MLX's active memory and buffer cache,
//! and the process's resident memory. A test binary of its own, since MLX's counters and the
//! process's memory are process-wide.

mod common;

use std::ffi::CString;

use common::*;
use lmx::ffi::lmx_status;
use lmx::ffi::lora::*;
use lmx::ffi::model::*;
use lmx::mlx::memory;

/// The process's resident memory now and at its peak since [`reset_peak`], bytes (Linux).
#[cfg(target_os = "linux")]
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line[key.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() << 10
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Resets the peak resident memory to the current (Linux 4.0 and later).
#[cfg(target_os = "linux")]
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

const MIB: u64 = 1 << 20;

#[test]
fn a_freed_trainer_gives_its_memory_back() {
    let dir = TempDir::new("train-memory");
    let data = dir.0.join("train.jsonl");
    {
        let mut rows = String::with_capacity(41 << 20);
        for r in ["The quick brown fox.", "Rivers run to the sea.", "Count with me: one, two."] {
            rows.push_str(&format!("{{\"text\": \"{r}\"}}\n"));
        }
        rows.push_str("{\"text\": \"");
        while rows.len() < 40 << 20 {
            rows.push_str("the quick brown fox jumps over the lazy dog. ");
        }
        rows.push_str("\"}\n");
        std::fs::write(&data, rows).unwrap();
    }
    let model_dir = CString::new(fixtures().join("qwen3").to_str().unwrap()).unwrap();
    let mut m = std::ptr::null_mut();
    assert_eq!(lmx_model_load(model_dir.as_ptr(), std::ptr::null(), &mut m), lmx_status::LMX_OK);
    memory::clear_cache().unwrap();
    let active_before = memory::active_memory().unwrap();
    #[cfg(target_os = "linux")]
    let rss_before = {
        reset_peak();
        resident().0
    };

    let mut p: lmx_train_params = unsafe { std::mem::zeroed() };
    assert_eq!(lmx_train_params_init(&mut p, std::mem::size_of::<lmx_train_params>()), lmx_status::LMX_OK);
    let path = CString::new(data.to_str().unwrap()).unwrap();
    p.data_path = path.as_ptr();
    p.num_layers = 2;
    p.max_seq_length = 128;
    let mut t = std::ptr::null_mut();
    assert_eq!(lmx_trainer_create(m, &p, &mut t), lmx_status::LMX_OK);
    #[cfg(target_os = "linux")]
    {
        // The 40 MB row is held while it is parsed (the line, the parsed string): of the
        // order of the row. Tokenizing it whole took 5 GB.
        let (_, peak) = resident();
        assert!(
            peak < rss_before + 256 * MIB,
            "peak {} MiB over {} MiB before",
            peak / MIB,
            rss_before / MIB
        );
    }
    let mut r: lmx_train_report = unsafe { std::mem::zeroed() };
    r.struct_size = std::mem::size_of::<lmx_train_report>();
    for _ in 0..3 {
        assert_eq!(lmx_trainer_step(t, &mut r), lmx_status::LMX_OK);
    }
    assert!(memory::cache_memory().unwrap() > 0, "the steps left buffers in MLX's cache");
    assert!(memory::active_memory().unwrap() > active_before, "the trainer holds its adapter");

    assert_eq!(lmx_trainer_free(t), lmx_status::LMX_OK);
    assert_eq!(memory::active_memory().unwrap(), active_before, "MLX's active memory after free");
    assert_eq!(memory::cache_memory().unwrap(), 0, "MLX's buffer cache after free");
    #[cfg(target_os = "linux")]
    {
        let (now, _) = resident();
        assert!(
            now < rss_before + 64 * MIB,
            "resident {} MiB after free, {} MiB before",
            now / MIB,
            rss_before / MIB
        );
    }
    assert_eq!(lmx_model_free(m), lmx_status::LMX_OK);
}
