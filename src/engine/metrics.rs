//! Per-call measurements.

use std::time::Instant;

use serde::Serialize;

/// What one generation call did and how fast.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (fewer than prompt_tokens when the session's cache
    /// already held a prefix).
    pub prefill_tokens: usize,
    pub generated_tokens: usize,
    /// Seconds from the call to the first generated token (prefill included).
    pub time_to_first_token: f64,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub total_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    /// Seconds of `decode_seconds` spent waiting for the device to produce a token; the rest
    /// is host work (building and dispatching steps, detokenizing, the caller's callback).
    pub decode_wait_seconds: f64,
    /// Constrained decoding: seconds the matcher computed masks and forced tokens (on its
    /// own thread, beside the device), and seconds of that the decode loop waited for it.
    pub constraint_seconds: f64,
    pub constraint_wait_seconds: f64,
    /// Tokens the constraint forced, appended without a decode step each.
    pub forced_tokens: usize,
    /// MLX peak memory during the call, in bytes.
    pub peak_memory: u64,
    /// MLX active memory at the end of the call, in bytes.
    pub active_memory: u64,
}

impl Metrics {
    /// Completes the timings of a call that started at `started`, produced its first token at
    /// `first` (None: none came) and `generated` tokens in all, ending now; reads MLX's peak
    /// and active memory.
    pub(crate) fn finish(&mut self, started: Instant, first: Option<Instant>, generated: usize) {
        let now = Instant::now();
        let first_at = first.unwrap_or(now);
        self.generated_tokens = generated;
        self.total_seconds = (now - started).as_secs_f64();
        self.prefill_seconds = (first_at - started).as_secs_f64();
        self.time_to_first_token = if first.is_some() { self.prefill_seconds } else { 0.0 };
        self.decode_seconds = (now - first_at).as_secs_f64();
        self.peak_memory = crate::mlx::memory::peak_memory().unwrap_or(0);
        self.active_memory = crate::mlx::memory::active_memory().unwrap_or(0);
        self.finish_rates();
    }

    fn finish_rates(&mut self) {
        self.prefill_tokens_per_second =
            if self.prefill_seconds > 0.0 { self.prefill_tokens as f64 / self.prefill_seconds } else { 0.0 };
        // The first token comes out of the prefill; decode produces the rest.
        let decoded = self.generated_tokens.saturating_sub(1);
        self.decode_tokens_per_second =
            if self.decode_seconds > 0.0 { decoded as f64 / self.decode_seconds } else { 0.0 };
    }
}
