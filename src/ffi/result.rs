//! Finish reasons and metrics as the C API reports them.

use super::sized::{c_struct, write_out};
use crate::engine::{FinishReason, Metrics};

/// Why a generation ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lmx_finish_reason {
    /// No generation has finished yet.
    LMX_FINISH_NONE = 0,
    /// An EOS token, a stop token or a stop string.
    LMX_FINISH_STOP = 1,
    /// max_tokens or the context length.
    LMX_FINISH_LENGTH = 2,
    /// lmx_session_cancel(), the callback returning non-zero, or a stream freed early.
    LMX_FINISH_CANCELLED = 3,
    LMX_FINISH_ERROR = 4,
}

impl From<FinishReason> for lmx_finish_reason {
    fn from(f: FinishReason) -> Self {
        match f {
            FinishReason::Stop => lmx_finish_reason::LMX_FINISH_STOP,
            FinishReason::Length => lmx_finish_reason::LMX_FINISH_LENGTH,
            FinishReason::Cancelled => lmx_finish_reason::LMX_FINISH_CANCELLED,
            FinishReason::Error => lmx_finish_reason::LMX_FINISH_ERROR,
        }
    }
}

/// Measurements of one call. Set struct_size to sizeof(lmx_metrics) before passing it.
/// Times are seconds, rates tokens per second, memory bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct lmx_metrics {
    pub struct_size: usize,
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Prompt tokens computed (fewer than prompt_tokens when the session's cache held a prefix).
    pub prefill_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Seconds from the call's start to the first generated token.
    pub time_to_first_token: f64,
    /// Seconds computing the prompt.
    pub prefill_seconds: f64,
    /// Seconds generating after the first token.
    pub decode_seconds: f64,
    /// Seconds of the whole call.
    pub total_seconds: f64,
    /// prefill_tokens / prefill_seconds.
    pub prefill_tokens_per_second: f64,
    /// Tokens per second after the first one.
    pub decode_tokens_per_second: f64,
    /// MLX peak memory (bytes) during the call.
    pub peak_memory: u64,
    /// MLX active memory (bytes) at its end.
    pub active_memory: u64,
}

c_struct!(lmx_metrics {
    struct_size,
    prompt_tokens,
    prefill_tokens,
    generated_tokens,
    time_to_first_token,
    prefill_seconds,
    decode_seconds,
    total_seconds,
    prefill_tokens_per_second,
    decode_tokens_per_second,
    peak_memory,
    active_memory
});

impl lmx_metrics {
    pub(crate) fn from_engine(m: &Metrics) -> lmx_metrics {
        lmx_metrics {
            struct_size: std::mem::size_of::<lmx_metrics>(),
            prompt_tokens: m.prompt_tokens as u64,
            prefill_tokens: m.prefill_tokens as u64,
            generated_tokens: m.generated_tokens as u64,
            time_to_first_token: m.time_to_first_token,
            prefill_seconds: m.prefill_seconds,
            decode_seconds: m.decode_seconds,
            total_seconds: m.total_seconds,
            prefill_tokens_per_second: m.prefill_tokens_per_second,
            decode_tokens_per_second: m.decode_tokens_per_second,
            peak_memory: m.peak_memory,
            active_memory: m.active_memory,
        }
    }
}

/// Writes metrics to the caller's struct (not NULL), sized by its struct_size.
pub(crate) fn write_metrics(p: *mut lmx_metrics, m: &Metrics) -> crate::Result<()> {
    write_out(p, "metrics_out", &lmx_metrics::from_engine(m))
}
