//! Evaluation boundaries.

use super::ops::VecArray;
use super::{check, Array};
use crate::Result;

/// Evaluates the arrays (and everything they depend on), waiting for the result.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let _lock = super::compute_lock();
    let v = VecArray::new(arrays);
    // SAFETY: live vector.
    check(unsafe { super::sys::mlx_eval(v.0) }, "eval")
}

/// Starts evaluating the arrays and returns at once; a later `eval` or data read waits.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    let _lock = super::compute_lock();
    let v = VecArray::new(arrays);
    // SAFETY: live vector.
    check(unsafe { super::sys::mlx_async_eval(v.0) }, "async_eval")
}
