//! Llama (1-3.x, SmolLM) and Mistral: pre-norm blocks, SwiGLU, optional biases, optional
//! rope scaling; Mistral may slide a window over every layer.

use super::{check_activation, layer_types, Common};
use crate::model::config::Config;
use crate::model::rope::RopeParams;
use crate::model::spec::{AttentionSpec, LayerSpec, MlpKind, ModelSpec, NormStyle};
use crate::Result;

pub fn spec(cfg: &Config, model_type: &str) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let attention_bias = cfg.bool("attention_bias")?.unwrap_or(false);
    let mlp_bias = cfg.bool("mlp_bias")?.unwrap_or(false);
    let (rope, factor) = RopeParams::read(cfg, None, 10000.0)?.build(c.head_dim, c.max_position)?;
    let window = cfg.int("sliding_window")?;
    let sliding = match layer_types(cfg, c.layers)? {
        Some(types) => types,
        // Mistral applies its window (when set) to every layer.
        None => vec![model_type == "mistral" && window.is_some(); c.layers as usize],
    };
    let layers = sliding
        .into_iter()
        .map(|slides| LayerSpec {
            attn: AttentionSpec {
                n_heads: c.heads,
                n_kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                qk_norm: false,
                window: if slides { window } else { None },
                rope: rope.clone(),
                scale: (c.head_dim as f32).powf(-0.5) * factor,
                qkv_bias: attention_bias,
                o_bias: attention_bias,
            },
            mlp: MlpKind::SwiGlu,
            mlp_bias,
            intermediate: c.intermediate,
            sandwich_norms: false,
        })
        .collect();
    Ok(ModelSpec {
        arch: model_type.to_string(),
        hidden: c.hidden,
        vocab: c.vocab,
        norm_eps: c.norm_eps,
        norm_style: NormStyle::Weight,
        embed_scale: None,
        tie_embeddings: cfg.bool("tie_word_embeddings")?.unwrap_or(false),
        final_logit_softcap: None,
        max_position: c.max_position,
        layers,
    })
}
