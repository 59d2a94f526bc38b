//! Status codes and the per-thread last error message.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

use super::boundary;
use crate::ErrorKind;

/// The result of a liblmx call. Values are fixed forever; a retired value is never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lmx_status {
    /// Success.
    LMX_OK = 0,
    /// An argument is NULL where it may not be, out of range, or malformed.
    LMX_STATUS_INVALID_ARGUMENT = 1,
    /// A file, folder, tensor or name does not exist.
    LMX_STATUS_NOT_FOUND = 2,
    /// Reading or writing a file failed.
    LMX_STATUS_IO = 3,
    /// A file exists but its contents are corrupt or inconsistent.
    LMX_STATUS_FORMAT = 4,
    /// Valid input this build cannot handle (an architecture, dtype or device).
    LMX_STATUS_UNSUPPORTED = 5,
    /// MLX could not allocate memory.
    LMX_STATUS_OUT_OF_MEMORY = 6,
    /// MLX reported an error; the message is MLX's.
    LMX_STATUS_MLX = 7,
    /// The operation was cancelled.
    LMX_STATUS_CANCELLED = 8,
    /// The handle is in use by another call.
    LMX_STATUS_BUSY = 9,
    /// A bug in liblmx was caught at the boundary; the library is still usable.
    LMX_STATUS_PANIC = 10,
    /// An internal invariant failed.
    LMX_STATUS_INTERNAL = 11,
}

pub(crate) fn status_of(kind: ErrorKind) -> lmx_status {
    use lmx_status::*;
    match kind {
        ErrorKind::InvalidArgument => LMX_STATUS_INVALID_ARGUMENT,
        ErrorKind::NotFound => LMX_STATUS_NOT_FOUND,
        ErrorKind::Io => LMX_STATUS_IO,
        ErrorKind::Format => LMX_STATUS_FORMAT,
        ErrorKind::Unsupported => LMX_STATUS_UNSUPPORTED,
        ErrorKind::OutOfMemory => LMX_STATUS_OUT_OF_MEMORY,
        ErrorKind::Mlx => LMX_STATUS_MLX,
        ErrorKind::Cancelled => LMX_STATUS_CANCELLED,
        ErrorKind::Busy => LMX_STATUS_BUSY,
        ErrorKind::Panic => LMX_STATUS_PANIC,
        ErrorKind::Internal => LMX_STATUS_INTERNAL,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = CString::default();
        }
    });
}

pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "?")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = c;
        }
    });
}

/// The message of the calling thread's last failed liblmx call, or "" if its last call
/// succeeded. Never NULL. Owned by liblmx: valid until this thread's next liblmx call (other
/// than `lmx_last_error` itself). Thread-safe: each thread has its own message.
#[no_mangle]
pub extern "C" fn lmx_last_error() -> *const c_char {
    // Not through the boundary: reading the message must not clear it.
    LAST_ERROR
        .try_with(|e| e.try_borrow().map(|e| e.as_ptr()).unwrap_or(c"".as_ptr()))
        .unwrap_or(c"".as_ptr())
}

/// A static description of a status code, for example "invalid argument". Never NULL; an
/// unknown value gives "unknown status". Owned by liblmx, valid forever. Thread-safe.
#[no_mangle]
pub extern "C" fn lmx_status_string(status: i32) -> *const c_char {
    boundary::value(c"unknown status".as_ptr(), || {
        let s: &'static std::ffi::CStr = match status {
            0 => c"ok",
            1 => c"invalid argument",
            2 => c"not found",
            3 => c"I/O error",
            4 => c"corrupt or malformed input",
            5 => c"unsupported",
            6 => c"out of memory",
            7 => c"MLX error",
            8 => c"cancelled",
            9 => c"busy",
            10 => c"internal panic",
            11 => c"internal error",
            _ => c"unknown status",
        };
        s.as_ptr()
    })
}
