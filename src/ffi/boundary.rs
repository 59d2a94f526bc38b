//! The panic boundary and argument checks shared by every export.
//!
//! Each `extern "C"` function runs its body through [`status`] or [`value`]: the thread's last
//! error is cleared on entry (and again after a success), an `Err` becomes its status code
//! and message, and a panic becomes `LMX_STATUS_PANIC` instead of unwinding into C (which
//! would abort the host process).

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::error::{clear_last_error, set_last_error, status_of};
use super::lmx_status;
use crate::{Error, Result};

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal panic: {text}")
}

/// Runs a fallible export body.
pub(crate) fn status(f: impl FnOnce() -> Result<()>) -> lmx_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            // A callback may have made a failing call on this thread meanwhile: a success
            // leaves no message behind.
            clear_last_error();
            lmx_status::LMX_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            status_of(e.kind)
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            lmx_status::LMX_STATUS_PANIC
        }
    }
}

/// Runs an export body that returns a value; a panic gives `fallback`.
pub(crate) fn value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            fallback
        }
    }
}

/// A place in caller memory to write a result to. Written through the raw pointer (never a
/// Rust reference to caller memory, which may hold anything before the write).
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub(crate) fn set(&self, v: T) {
        // SAFETY: the caller promises a writable place (documented per function); the write
        // needs no alignment and reads nothing.
        unsafe { std::ptr::write_unaligned(self.0, v) }
    }
}

/// A required out pointer.
pub(crate) fn out<T>(p: *mut T, name: &str) -> Result<Out<T>> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    Ok(Out(p))
}

/// Writes through an optional out pointer (NULL: not wanted).
pub(crate) fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        Out(p).set(v);
    }
}

/// A required NUL-terminated UTF-8 string argument.
pub(crate) fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: the caller promises a NUL-terminated string (documented per function).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| Error::invalid(format!("{name} is not valid UTF-8 (byte {})", e.valid_up_to())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::lmx_last_error;

    fn last_error() -> String {
        // SAFETY: never NULL, valid until this thread's next call.
        unsafe { CStr::from_ptr(lmx_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn an_mlx_error_becomes_a_status_and_its_message() {
        let st = status(|| {
            let a = crate::mlx::Array::from_slice(&[1.0f32; 6], &[2, 3])?;
            crate::mlx::ops::matmul(&a, &a).map(|_| ())
        });
        assert_eq!(st, lmx_status::LMX_STATUS_MLX);
        assert!(last_error().contains("[matmul]"), "{}", last_error());
    }

    #[test]
    fn a_panic_becomes_a_status_not_an_abort() {
        let st = status(|| panic!("boom"));
        assert_eq!(st, lmx_status::LMX_STATUS_PANIC);
        assert!(last_error().contains("boom"));
        assert_eq!(value(7, || panic!("again")), 7);
        assert!(last_error().contains("again"));
    }
}
