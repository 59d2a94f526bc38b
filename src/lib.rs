//! liblmx: large language models on Apple's MLX array runtime, behind a stable C ABI.
//!
//! Layers, each depending only on those before it:
//! [`mlx`] (safe Rust over mlx-c) -> `model` -> `engine` -> [`ffi`] (the C ABI) and the CLI.

pub mod engine;
pub mod error;
pub mod ffi;
pub mod files;
pub mod mlx;
pub mod model;

pub use error::{Error, ErrorKind, Result};

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
