//! MLX memory control. All values are bytes. These act on the whole process (MLX has one
//! allocator) and are thread-safe.

use super::boundary::{out, status, write_opt};
use super::lmx_status;
use crate::mlx::memory;

/// Sets MLX's memory limit to `limit` bytes and writes the previous limit to `previous_out`
/// (may be NULL). On every backend liblmx checks what it is about to allocate against it
/// (a model's weights at load, each KV cache growth of a session, batch or classification)
/// and refuses with LMX_STATUS_OUT_OF_MEMORY before allocating; the model and other sessions
/// keep working. Transient activations and MLX's buffer cache are not counted; where MLX's
/// allocator enforces the limit itself (Metal, CUDA) it also waits for running work before
/// allocating past it. Returns LMX_OK, or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_set_memory_limit(limit: usize, previous_out: *mut usize) -> lmx_status {
    status(|| {
        write_opt(previous_out, memory::set_memory_limit(limit as u64)? as usize);
        Ok(())
    })
}

/// Sets the limit of MLX's buffer cache (freed buffers kept for reuse) to `limit` bytes; 0
/// disables the cache. Writes the previous limit to `previous_out` (may be NULL).
/// Returns LMX_OK, or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_set_cache_limit(limit: usize, previous_out: *mut usize) -> lmx_status {
    status(|| {
        write_opt(previous_out, memory::set_cache_limit(limit as u64)? as usize);
        Ok(())
    })
}

/// Sets the wired (kept resident) memory limit to `limit` bytes; writes the previous one to
/// `previous_out` (may be NULL). Only Metal wires memory; other backends accept and ignore it
/// (the previous value is then 0). Returns LMX_OK, or LMX_STATUS_MLX (for example a limit
/// above the device's maximum).
#[no_mangle]
pub extern "C" fn lmx_set_wired_limit(limit: usize, previous_out: *mut usize) -> lmx_status {
    status(|| {
        write_opt(previous_out, memory::set_wired_limit(limit as u64)? as usize);
        Ok(())
    })
}

/// Writes MLX's current memory limit to `*out` (not NULL). Returns LMX_OK,
/// LMX_STATUS_INVALID_ARGUMENT (NULL), or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_get_memory_limit(out_bytes: *mut usize) -> lmx_status {
    status(|| {
        let o = out(out_bytes, "out_bytes")?;
        o.set(memory::memory_limit()? as usize);
        Ok(())
    })
}

/// Writes the bytes held by live arrays to `*out_bytes` (not NULL). Returns LMX_OK,
/// LMX_STATUS_INVALID_ARGUMENT (NULL), or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_get_active_memory(out_bytes: *mut usize) -> lmx_status {
    status(|| {
        let o = out(out_bytes, "out_bytes")?;
        o.set(memory::active_memory()? as usize);
        Ok(())
    })
}

/// Writes the highest active memory since start or the last lmx_reset_peak_memory() to
/// `*out_bytes` (not NULL). Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (NULL), or
/// LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_get_peak_memory(out_bytes: *mut usize) -> lmx_status {
    status(|| {
        let o = out(out_bytes, "out_bytes")?;
        o.set(memory::peak_memory()? as usize);
        Ok(())
    })
}

/// Writes the bytes in MLX's buffer cache to `*out_bytes` (not NULL). Returns LMX_OK,
/// LMX_STATUS_INVALID_ARGUMENT (NULL), or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_get_cache_memory(out_bytes: *mut usize) -> lmx_status {
    status(|| {
        let o = out(out_bytes, "out_bytes")?;
        o.set(memory::cache_memory()? as usize);
        Ok(())
    })
}

/// Resets the peak memory counter to the current active memory. Returns LMX_OK or
/// LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_reset_peak_memory() -> lmx_status {
    status(memory::reset_peak_memory)
}

/// Returns MLX's buffer cache to the system. Returns LMX_OK or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_clear_cache() -> lmx_status {
    status(memory::clear_cache)
}
