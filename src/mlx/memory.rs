//! MLX's allocator: limits, cache, and usage counters (bytes).

use super::{check, init, sys};
use crate::Result;

fn get(f: unsafe extern "C" fn(*mut usize) -> i32, what: &str) -> Result<u64> {
    init();
    let mut v = 0usize;
    // SAFETY: valid out pointer.
    check(unsafe { f(&mut v) }, what)?;
    Ok(v as u64)
}

fn set(f: unsafe extern "C" fn(*mut usize, usize) -> i32, limit: u64, what: &str) -> Result<u64> {
    init();
    let mut prev = 0usize;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // SAFETY: valid out pointer.
    check(unsafe { f(&mut prev, limit) }, what)?;
    Ok(prev as u64)
}

/// Bytes held by live arrays.
pub fn active_memory() -> Result<u64> {
    get(sys::mlx_get_active_memory, "reading active memory")
}

/// The most active memory since start or the last [`reset_peak_memory`].
pub fn peak_memory() -> Result<u64> {
    get(sys::mlx_get_peak_memory, "reading peak memory")
}

/// Bytes kept in MLX's buffer cache for reuse.
pub fn cache_memory() -> Result<u64> {
    get(sys::mlx_get_cache_memory, "reading cache memory")
}

pub fn memory_limit() -> Result<u64> {
    get(sys::mlx_get_memory_limit, "reading the memory limit")
}

/// Sets the memory limit (a guideline MLX tries to keep under, waiting for work to finish
/// before allocating past it); returns the previous limit.
pub fn set_memory_limit(limit: u64) -> Result<u64> {
    set(sys::mlx_set_memory_limit, limit, "setting the memory limit")
}

/// Sets the buffer cache limit; returns the previous one. 0 disables the cache.
pub fn set_cache_limit(limit: u64) -> Result<u64> {
    set(sys::mlx_set_cache_limit, limit, "setting the cache limit")
}

/// Sets the wired (resident) limit; returns the previous one. Only Metal uses it; elsewhere
/// MLX accepts and ignores it.
pub fn set_wired_limit(limit: u64) -> Result<u64> {
    set(sys::mlx_set_wired_limit, limit, "setting the wired limit")
}

pub fn reset_peak_memory() -> Result<()> {
    init();
    // SAFETY: no arguments.
    check(unsafe { sys::mlx_reset_peak_memory() }, "resetting peak memory")
}

/// Frees MLX's buffer cache.
pub fn clear_cache() -> Result<()> {
    init();
    // SAFETY: no arguments.
    check(unsafe { sys::mlx_clear_cache() }, "clearing the cache")
}

/// Refuses, before anything is allocated, work that would take MLX's active memory past its
/// memory limit: `bytes` more for `what`. MLX itself enforces the limit only where its
/// allocator does (Metal, CUDA); liblmx checks the large allocations it makes (weights at
/// load, KV cache growth) against it on every backend, so the out-of-memory path is the same
/// everywhere and nothing is half-built when it is taken.
pub fn reserve(bytes: u64, what: &str) -> Result<()> {
    let limit = memory_limit()?;
    let active = active_memory()?;
    if active.saturating_add(bytes) > limit {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        return Err(crate::Error::new(
            crate::ErrorKind::OutOfMemory,
            format!(
                "{what} needs {:.1} MiB more; MLX's memory limit is {:.1} MiB with {:.1} MiB in use",
                mib(bytes),
                mib(limit),
                mib(active)
            ),
        ));
    }
    Ok(())
}
