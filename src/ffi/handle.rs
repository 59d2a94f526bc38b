//! Opaque handles: how C pointers become Rust references, and back.
//!
//! A handle is a `Box` of a Rust struct that C only sees as an incomplete type. Each handle
//! type carries a magic tag, checked on every use and cleared on free, so a NULL, foreign or
//! (while the memory is not yet reused) freed pointer gives LMX_STATUS_INVALID_ARGUMENT
//! instead of undefined behaviour. Shared state inside a handle is an `Arc`, so freeing one
//! handle never invalidates another that depends on it.

use crate::{Error, Result};

/// A handle type: its magic tag and name for messages.
pub(crate) trait Handle: Sized {
    const MAGIC: u64;
    const NAME: &'static str;
    fn magic(&self) -> u64;
    fn clear_magic(&mut self);
}

/// Moves a value into a new handle.
pub(crate) fn into_handle<T: Handle>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

fn check<T: Handle>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    if (p as usize) % std::mem::align_of::<T>() != 0 {
        return Err(Error::invalid(format!("{name} is not a valid {}", T::NAME)));
    }
    // SAFETY: non-NULL and aligned; the caller promises it came from liblmx. The tag tells a
    // live handle from a freed or foreign one on a best-effort basis.
    if unsafe { (*p).magic() } != T::MAGIC {
        return Err(Error::invalid(format!(
            "{name} is not a valid {} (freed, or not made by liblmx)",
            T::NAME
        )));
    }
    Ok(())
}

/// Borrows a handle.
pub(crate) fn handle_ref<'a, T: Handle>(p: *const T, name: &str) -> Result<&'a T> {
    check(p, name)?;
    // SAFETY: checked above.
    Ok(unsafe { &*p })
}

/// Borrows a handle mutably.
pub(crate) fn handle_mut<'a, T: Handle>(p: *mut T, name: &str) -> Result<&'a mut T> {
    check(p, name)?;
    // SAFETY: checked above; C owns exclusivity for calls documented as not thread-safe.
    Ok(unsafe { &mut *p })
}

/// Takes a handle back to free it. NULL gives Ok(None).
pub(crate) fn take_handle<T: Handle>(p: *mut T, name: &str) -> Result<Option<Box<T>>> {
    if p.is_null() {
        return Ok(None);
    }
    check(p, name)?;
    // SAFETY: checked above; the handle was made by into_handle.
    let mut b = unsafe { Box::from_raw(p) };
    b.clear_magic();
    Ok(Some(b))
}

macro_rules! handle_type {
    ($t:ident, $magic:expr, $name:expr) => {
        impl $crate::ffi::handle::Handle for $t {
            const MAGIC: u64 = $magic;
            const NAME: &'static str = $name;
            fn magic(&self) -> u64 {
                self.magic
            }
            fn clear_magic(&mut self) {
                self.magic = 0;
            }
        }
    };
}
pub(crate) use handle_type;
