//! Safe Rust over mlx-c, MLX's C API.
//!
//! Every mlx-c call goes through [`check`], which turns a non-zero return code into an
//! [`Error`](crate::Error) carrying MLX's own message. Our error handler is installed before
//! the first MLX call ([`init`]): mlx-c's default handler prints and calls `exit(-1)`, which
//! must never happen inside a host process. Nothing in this module panics on bad input.

pub mod array;
pub mod autodiff;
pub mod compile;
pub mod device;
pub mod dtype;
mod exit;
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
pub(crate) use handler::check;
pub use handler::init;
pub use transforms::{async_eval, eval};

/// Serializes MLX evaluation across threads; reentrant.
///
/// MLX's streams are not safe to submit to from several threads at once, and liblmx's
/// streams are usable from any thread (a Go program's calls hop between OS threads), so every
/// evaluation in liblmx runs under this lock: [`eval`], [`async_eval`] and the array reads
/// take it themselves, and the engine holds it across a whole step (prefill chunk, decode
/// step) and releases it while handing tokens to callers. Work already dispatched
/// asynchronously keeps running while another thread holds the lock. Building lazy graphs and
/// reading memory counters need no lock.
pub fn compute_lock() -> lock::ComputeGuard {
    lock::acquire()
}

mod lock;

/// Whether the calling thread holds the compute lock. liblmx never opens a file while it
/// does: file I/O can take any time (a slow disk, a network mount), and every other session
/// of the process would wait for it.
pub fn compute_lock_held() -> bool {
    lock::held_here()
}

static HOST_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_host_read(elements: usize) {
    HOST_READS.fetch_add(elements as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Array elements this process has copied from MLX to the host so far ([`Array::to_vec`],
/// [`Array::item`]). Lets tests prove that generation reads back token ids only, never a
/// vocabulary-sized row of logits.
pub fn host_reads() -> u64 {
    HOST_READS.load(std::sync::atomic::Ordering::Relaxed)
}
