//! Raw bindings to mlx-c. On macOS these come from the `mlx-sys` crate; elsewhere build.rs
//! generates the same bindings with the same bindgen configuration, so the names agree.

#[cfg(target_os = "macos")]
pub use mlx_sys::*;

#[cfg(not(target_os = "macos"))]
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    improper_ctypes,
    clippy::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
#[cfg(not(target_os = "macos"))]
pub use generated::*;
