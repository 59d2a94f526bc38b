//! Qwen2 (biases on q, k, v) and Qwen3 (per-head q/k RMSNorm before rope, optional biases).

use super::{check_activation, layer_types, Common};
use crate::model::config::Config;
use crate::model::rope::RopeParams;
use crate::model::spec::{AttentionSpec, LayerSpec, MlpKind, ModelSpec, NormStyle};
use crate::Result;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Qwen2,
    Qwen3,
}

pub fn spec(cfg: &Config, version: Version) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let (qkv_bias, o_bias) = match version {
        Version::Qwen2 => (true, false),
        Version::Qwen3 => {
            let b = cfg.bool("attention_bias")?.unwrap_or(false);
            (b, b)
        }
    };
    let (rope, factor) = RopeParams::read(cfg, None, 10000.0)?.build(c.head_dim, c.max_position)?;
    let window = cfg.int("sliding_window")?;
    let sliding = match layer_types(cfg, c.layers)? {
        Some(types) => types,
        None if cfg.bool("use_sliding_window")?.unwrap_or(false) => {
            // Layers from max_window_layers on slide.
            let from = cfg.int("max_window_layers")?.unwrap_or(c.layers);
            (0..c.layers).map(|i| i >= from).collect()
        }
        None => vec![false; c.layers as usize],
    };
    let layers = sliding
        .into_iter()
        .map(|slides| LayerSpec {
            attn: AttentionSpec {
                n_heads: c.heads,
                n_kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                qk_norm: version == Version::Qwen3,
                window: if slides { window } else { None },
                rope: rope.clone(),
                scale: (c.head_dim as f32).powf(-0.5) * factor,
                qkv_bias,
                o_bias,
            },
            mlp: MlpKind::SwiGlu,
            mlp_bias: false,
            intermediate: c.intermediate,
            sandwich_norms: false,
        })
        .collect();
    Ok(ModelSpec {
        arch: match version {
            Version::Qwen2 => "qwen2",
            Version::Qwen3 => "qwen3",
        }
        .to_string(),
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
