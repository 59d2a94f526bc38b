//! Generation over a model: sampling, stop conditions, sessions that keep their KV cache
//! across calls, batching, and per-call metrics. Everything here runs MLX work under
//! [`crate::mlx::compute_lock`] and releases it while handing tokens to callers.

pub mod batch;
pub mod cancel;
pub mod generate;
mod guide;
pub mod metrics;
pub mod params;
pub mod sampling;
pub mod session;
pub mod session_file;
pub mod stop;
mod text;
pub mod train;
pub mod train_data;

pub use batch::{batch_generate, batch_generate_constrained, classify, BatchOutput, ClassifyOutput};
pub use cancel::Cancel;
pub use generate::{Event, FinishReason, Generation};
pub use metrics::Metrics;
pub use params::{GenerateParams, SamplerParams};
pub use session::{Session, SessionOptions};
