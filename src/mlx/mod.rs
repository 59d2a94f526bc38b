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
