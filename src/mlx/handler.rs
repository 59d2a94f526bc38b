//! Captures MLX's error messages per thread.
//!
//! mlx-c reports a failure by calling the installed handler on the failing thread and then
//! returning non-zero. We keep the message in a thread-local slot that [`check`] takes right
//! after the call, so concurrent failures on different threads never see each other's text.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use super::sys;
use crate::{Error, ErrorKind, Result};

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INIT: Once = Once::new();

extern "C" fn on_error(msg: *const c_char, _data: *mut c_void) {
    // Called from C: must not unwind. Nothing here can panic except allocation failure.
    let text = if msg.is_null() {
        String::from("unknown MLX error")
    } else {
        // SAFETY: mlx-c passes a NUL-terminated string that lives for this call.
        unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
    };
    let _ = LAST.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = Some(text);
        }
    });
}

extern "C" fn keep_data(_data: *mut c_void) {
    // A non-NULL destructor: with NULL, mlx-c drops the data pointer it passes back.
}

/// Installs our error handler. Idempotent and cheap; every entry point that may be the first
/// MLX call of the process calls it.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: the handler and destructor are valid for the whole process.
        unsafe { sys::mlx_set_error_handler(Some(on_error), std::ptr::null_mut(), Some(keep_data)) };
        super::exit::install();
    });
}

/// MLX messages end with the mlx-c source location (" at /path/ops.cpp:123"), which tells a
/// user nothing; drop it.
fn strip_location(msg: &str) -> &str {
    if let Some(at) = msg.rfind(" at ") {
        let tail = &msg[at + 4..];
        if let Some(colon) = tail.rfind(':') {
            if tail[colon + 1..].chars().all(|c| c.is_ascii_digit()) && colon + 1 < tail.len() {
                return &msg[..at];
            }
        }
    }
    msg
}

/// Turns an mlx-c return code into a `Result`; `what` names the operation.
pub(crate) fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let msg = LAST
        .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("MLX returned error code {rc}"));
    let msg = strip_location(&msg).to_string();
    let lower = msg.to_ascii_lowercase();
    let kind = if lower.contains("unable to allocate")
        || lower.contains("out of memory")
        || lower.contains("bad_alloc")
        || lower.contains("attempting to allocate")
    {
        ErrorKind::OutOfMemory
    } else {
        ErrorKind::Mlx
    };
    Err(Error::new(kind, format!("{what}: {msg}")))
}

#[cfg(test)]
mod tests {
    use super::strip_location;

    #[test]
    fn strips_only_a_trailing_source_location() {
        assert_eq!(strip_location("[matmul] bad shapes at /x/ops.cpp:12"), "[matmul] bad shapes");
        assert_eq!(strip_location("look at this"), "look at this");
        assert_eq!(strip_location("at a:b"), "at a:b");
    }
}
