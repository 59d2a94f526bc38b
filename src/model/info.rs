//! What a loaded model is.

use std::time::Instant;

use serde::Serialize;

use crate::model::gguf::weights::Conversion;
use crate::model::nn::transformer::Transformer;
use crate::model::text::chat::ChatTemplate;
use crate::model::LoadParams;
use crate::Result;

/// The context length of a model whose config gives no `max_position_embeddings`.
pub const DEFAULT_CONTEXT: i32 = 4096;

/// A description of a loaded model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// `model_type` as the config gives it ("llama", "gemma3_text", ...).
    pub model_type: String,
    /// The architecture family that runs it ("llama", "qwen3", "gemma3", "phi3", ...).
    pub architecture: String,
    pub param_count: u64,
    /// Experts per mixture-of-experts layer (0 for a dense model).
    pub num_experts: i32,
    /// Experts each token is routed to (0 for a dense model).
    pub experts_per_token: i32,
    /// Parameters one token's forward pass uses: `param_count` less the routed experts it
    /// does not use (equal to `param_count` for a dense model).
    pub active_param_count: u64,
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
    /// "safetensors" (a model folder) or "gguf".
    pub format: String,
    /// The tokenizer: "tokenizer.json", or the GGUF vocabulary kind ("gpt2/smollm", ...).
    pub tokenizer: String,
    /// For a GGUF file, what each tensor type of the file became (empty for a folder).
    pub conversions: Vec<Conversion>,
}

/// What the weight store counted while a model was built.
pub struct Weights {
    pub bytes: u64,
    pub peak: u64,
    pub params: u64,
}

/// Where a model came from: its file format, its tokenizer, and for a GGUF file what each
/// tensor type became.
pub struct Source {
    /// "safetensors" or "gguf".
    pub format: &'static str,
    /// "tokenizer.json", or the GGUF vocabulary kind.
    pub tokenizer: String,
    pub conversions: Vec<Conversion>,
}

impl ModelInfo {
    /// The description of a model whose `transformer` was just built from `source`.
    pub fn describe(
        model_type: String,
        transformer: &Transformer,
        chat: &ChatTemplate,
        params: &LoadParams,
        weights: Weights,
        source: Source,
        start: Instant,
    ) -> Result<ModelInfo> {
        let s = transformer.spec();
        let first = &s.layers[0].attn;
        let max_pos = s.max_position.unwrap_or(DEFAULT_CONTEXT);
        let (quant_bits, quant_group_size) = transformer.quantization().unwrap_or((0, 0));
        let (num_experts, experts_per_token) = crate::model::arch::moe::experts(s);
        let moe = s.layers.iter().filter_map(|l| l.moe.as_ref());
        // Each sparse layer holds 3 * experts * intermediate * hidden expert parameters, of
        // which a token uses top_k / experts.
        let idle: u64 =
            moe.map(|m| 3 * (m.experts - m.top_k) as u64 * m.intermediate as u64 * s.hidden as u64).sum();
        Ok(ModelInfo {
            model_type,
            architecture: s.arch.clone(),
            param_count: weights.params,
            num_experts,
            experts_per_token,
            active_param_count: weights.params.saturating_sub(idle),
            num_layers: s.layers.len() as i32,
            hidden_size: s.hidden,
            num_heads: first.n_heads,
            num_kv_heads: first.n_kv_heads,
            head_dim: first.head_dim,
            vocab_size: s.vocab,
            context_length: params.context_length.unwrap_or(max_pos),
            quant_bits,
            quant_group_size,
            dtype: transformer.dtype()?.name().to_string(),
            chat_template: chat.source().to_string(),
            weight_bytes: weights.bytes,
            load_seconds: start.elapsed().as_secs_f64(),
            load_peak_bytes: weights.peak,
            format: source.format.into(),
            tokenizer: source.tokenizer,
            conversions: source.conversions,
        })
    }
}
