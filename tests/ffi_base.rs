//! The base C ABI, called as `extern "C"` functions from Rust.

use std::ffi::CStr;

use lmx::ffi::device::{lmx_backend, lmx_device, lmx_device_info};
use lmx::ffi::error::{lmx_last_error, lmx_status_string};
use lmx::ffi::lmx_status;
use lmx::ffi::memory::*;
use lmx::ffi::version::*;

fn last_error() -> String {
    unsafe { CStr::from_ptr(lmx_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn version_string_matches_cargo() {
    let v = unsafe { CStr::from_ptr(lmx_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(v, format!("{LMX_VERSION_MAJOR}.{LMX_VERSION_MINOR}.{LMX_VERSION_PATCH}"));
    assert_eq!(lmx_abi_2(), LMX_ABI_VERSION);
}

#[test]
fn status_strings_cover_every_status() {
    for s in 0..=11 {
        let text = unsafe { CStr::from_ptr(lmx_status_string(s)) }.to_str().unwrap();
        assert_ne!(text, "unknown status", "status {s}");
    }
    let text = unsafe { CStr::from_ptr(lmx_status_string(99)) }.to_str().unwrap();
    assert_eq!(text, "unknown status");
}

#[test]
fn null_out_pointers_are_invalid_arguments_with_a_message() {
    assert_eq!(lmx_get_active_memory(std::ptr::null_mut()), lmx_status::LMX_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("out_bytes is NULL"));
    let mut v = 0usize;
    assert_eq!(lmx_get_active_memory(&mut v), lmx_status::LMX_OK);
    assert_eq!(last_error(), "");
}

#[test]
fn limits_write_the_previous_value() {
    let mut prev = 0usize;
    assert_eq!(lmx_set_cache_limit(12345, &mut prev), lmx_status::LMX_OK);
    let mut back = 0usize;
    assert_eq!(lmx_set_cache_limit(prev, &mut back), lmx_status::LMX_OK);
    assert_eq!(back, 12345);
    assert_eq!(lmx_set_memory_limit(1 << 32, std::ptr::null_mut()), lmx_status::LMX_OK);
    let mut limit = 0usize;
    assert_eq!(lmx_get_memory_limit(&mut limit), lmx_status::LMX_OK);
    assert_eq!(limit, 1 << 32);
}

#[test]
fn device_info_checks_struct_size_and_fills_the_struct() {
    let mut d: lmx_device = unsafe { std::mem::zeroed() };
    assert_eq!(lmx_device_info(&mut d), lmx_status::LMX_STATUS_INVALID_ARGUMENT);
    assert!(last_error().contains("struct_size"));
    d.struct_size = std::mem::size_of::<lmx_device>();
    assert_eq!(lmx_device_info(&mut d), lmx_status::LMX_OK);
    let name = unsafe { CStr::from_ptr(d.name.as_ptr()) }.to_str().unwrap();
    if cfg!(target_os = "linux") {
        assert!(
            d.backend as i32 == lmx_backend::LMX_BACKEND_CUDA as i32
                || d.backend as i32 == lmx_backend::LMX_BACKEND_CPU as i32,
            "backend {}",
            d.backend as i32
        );
        assert!(d.memory_size > 0);
    }
    if cfg!(target_os = "linux") {
        assert!(!name.is_empty(), "the device has no name");
    }
}
