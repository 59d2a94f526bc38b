//! Safe Rust over mlx-c, MLX's C API.
//!
//! Every mlx-c call goes through [`check`], which turns a non-zero return code into an
//! [`Error`](crate::Error) carrying MLX's own message. Our error handler is installed before
//! the first MLX call ([`init`]): mlx-c's default handler prints and calls `exit(-1)`, which
//! must never happen inside a host process. Nothing in this module panics on bad input.

pub mod array;
pub mod device;
pub mod dtype;
mod handler;
pub mod io;
pub mod memory;
pub mod ops;
pub mod random;
pub mod sys;
pub mod transforms;

pub use array::{Array, Element};
pub use device::{with_stream, Backend, Device, DeviceKind, Stream};
pub use dtype::Dtype;
pub use handler::init;
pub(crate) use handler::check;
pub use transforms::{async_eval, eval};

/// Serializes MLX work across threads.
///
/// MLX's graph building and evaluation are not documented as safe to call from several
/// threads at once, so liblmx holds this lock around every sequence of MLX calls that
/// computes (loading weights, a prefill chunk, a decode step) and releases it while handing
/// results to callers. Work already dispatched asynchronously keeps running on its stream
/// while another thread holds the lock. Reading memory counters needs no lock. Not reentrant:
/// never call a function that takes it while holding it.
pub fn compute_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic while holding the lock leaves no MLX state half-updated that a later caller
    // could trip over (the panicking call's arrays are dropped), so poisoning is ignored.
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
