//! Llama (1-3.x, SmolLM) and Mistral: pre-norm blocks, SwiGLU, optional biases, optional
//! rope scaling; Mistral may slide a window over every layer.

use super::{check_activation, layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::ModelSpec;
use crate::model::config::Config;
use crate::Result;

pub fn spec(cfg: &Config, model_type: &str) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let attention_bias = cfg.bool("attention_bias")?.unwrap_or(false);
    let window = super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?;
    let sliding = match layer_types(cfg, c.layers)? {
        Some(types) => types,
        // Mistral applies its window (when set) to every layer.
        None => vec![model_type == "mistral" && window.is_some(); c.layers as usize],
    };
    let arch = if model_type == "mistral" { "mistral" } else { "llama" };
    pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch,
            qk_norm: None,
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            mlp_bias: cfg.bool("mlp_bias")?.unwrap_or(false),
            sliding,
            window,
            ..Default::default()
        },
    )
}
