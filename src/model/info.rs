//! What a loaded model is.

use serde::Serialize;

/// A description of a loaded model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// `model_type` as the config gives it ("llama", "gemma3_text", ...).
    pub model_type: String,
    /// The architecture family that runs it ("llama", "mistral", "qwen2", "qwen3", "gemma3").
    pub architecture: String,
    pub param_count: u64,
    pub num_layers: i32,
    pub hidden_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub vocab_size: i32,
    pub context_length: i32,
    /// 0 for a dense model.
    pub quant_bits: i32,
    pub quant_group_size: i32,
    /// The dtype the weights are kept and computed in.
    pub dtype: String,
    pub chat_template: String,
    /// Bytes of the weights the model holds.
    pub weight_bytes: u64,
    pub load_seconds: f64,
    /// MLX's peak memory during the load, above what was active before it. MLX counts memory
    /// for the whole process: memory other threads allocate meanwhile counts too.
    pub load_peak_bytes: u64,
}
