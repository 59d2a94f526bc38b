//! Library version and the ABI check symbol.

use std::ffi::c_char;

/// Major version; equals Cargo.toml's (a test checks).
pub const LMX_VERSION_MAJOR: u32 = 0;
/// Minor version; equals Cargo.toml's (a test checks).
pub const LMX_VERSION_MINOR: u32 = 1;
/// Patch version; equals Cargo.toml's (a test checks).
pub const LMX_VERSION_PATCH: u32 = 0;
/// The ABI generation (2: lmx_classify gained its logits capacity). Incompatible changes bump it and rename the `lmx_abi_N` symbol, so a
/// program built against another generation fails to link instead of misbehaving.
pub const LMX_ABI_VERSION: u32 = 2;

/// The library version, "MAJOR.MINOR.PATCH". Never NULL; static, valid forever. Thread-safe.
#[no_mangle]
pub extern "C" fn lmx_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Returns LMX_ABI_VERSION. Exists so that bindings can reference it at link time: a library
/// of another ABI generation lacks the symbol and the link fails. Thread-safe.
#[no_mangle]
pub extern "C" fn lmx_abi_2() -> u32 {
    LMX_ABI_VERSION
}
