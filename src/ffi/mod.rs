//! The C ABI. Conventions (README, "C API"): every function returns an `lmx_status` or has a
//! documented sentinel; results are written through `*_out` pointers only on success; the
//! calling thread's last error message is kept for `lmx_last_error()`; no panic crosses the
//! boundary. `include/lmx.h` is generated from these modules by cbindgen.

#![allow(non_camel_case_types)]
// Every export takes raw pointers from C and checks them (NULL, struct_size, handles looked up
// in their tables) before use; marking them `unsafe` would mean nothing to a C caller.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod batch;
pub(crate) mod boundary;
pub mod cancel;
pub mod device;
pub mod error;
pub(crate) mod handle;
pub mod inspect;
pub mod lora;
pub mod memory;
pub mod message;
pub mod model;
pub mod params;
pub mod result;
pub mod session;
pub mod session_state;
pub(crate) mod sized;
pub mod stream;
pub mod text;
pub mod version;

pub use error::lmx_status;
