//! Seeded random numbers. Sampling takes an explicit key, so a seed gives the same tokens
//! whatever else the process does with MLX's global generator.

use super::ops::op;
use super::{check, init, sys, Array, Dtype};
use crate::Result;

/// A PRNG key for `seed`.
pub fn key(seed: u64) -> Result<Array> {
    init();
    // SAFETY: an empty handle for mlx-c to fill.
    let mut raw = unsafe { sys::mlx_array_new() };
    let rc = unsafe { sys::mlx_random_key(&mut raw, seed) };
    let a = Array::from_raw(raw);
    check(rc, "random key")?;
    Ok(a)
}

/// Splits a key into `num` new keys, stacked on axis 0.
pub fn split(key: &Array, num: i32) -> Result<Array> {
    // SAFETY: live handle.
    op("random split", |r, s| unsafe { sys::mlx_random_split_num(r, key.raw(), num, s) })
}

/// Samples indices from the unnormalised log-probabilities along `axis`.
pub fn categorical(logits: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    let k = key.map(|k| k.raw()).unwrap_or_else(Array::null_raw);
    // SAFETY: live handles or null.
    op("random categorical", |r, s| unsafe { sys::mlx_random_categorical(r, logits.raw(), axis, k, s) })
}

/// Uniform samples in [low, high).
pub fn uniform(low: f32, high: f32, shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let lo = Array::scalar_f32(low);
    let hi = Array::scalar_f32(high);
    let k = key.map(|k| k.raw()).unwrap_or_else(Array::null_raw);
    // SAFETY: live handles or null.
    op("random uniform", |r, s| unsafe {
        sys::mlx_random_uniform(r, lo.raw(), hi.raw(), shape.as_ptr(), shape.len(), dtype.to_sys(), k, s)
    })
}

/// Normal samples (mean 0, standard deviation 1).
pub fn normal(shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let k = key.map(|k| k.raw()).unwrap_or_else(Array::null_raw);
    // SAFETY: live handles or null.
    op("random normal", |r, s| unsafe {
        sys::mlx_random_normal(r, shape.as_ptr(), shape.len(), dtype.to_sys(), 0.0, 1.0, k, s)
    })
}
