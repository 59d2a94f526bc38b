//! Qwen2 (biases on q, k, v) and Qwen3 (per-head q/k RMSNorm before rope, optional biases).

use super::{check_activation, layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::{ModelSpec, QkNorm};
use crate::model::config::Config;
use crate::Result;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Qwen2,
    Qwen3,
}

pub fn spec(cfg: &Config, version: Version) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let (arch, qkv_bias, o_bias) = match version {
        Version::Qwen2 => ("qwen2", true, false),
        Version::Qwen3 => {
            let b = cfg.bool("attention_bias")?.unwrap_or(false);
            ("qwen3", b, b)
        }
    };
    let sliding = match layer_types(cfg, c.layers)? {
        Some(types) => types,
        None if cfg.bool("use_sliding_window")?.unwrap_or(false) => {
            // Layers from max_window_layers on slide.
            let from = cfg.int("max_window_layers")?.unwrap_or(c.layers);
            (0..c.layers).map(|i| i >= from).collect()
        }
        None => vec![false; c.layers as usize],
    };
    pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch,
            qk_norm: (version == Version::Qwen3).then_some(QkNorm::PerHead),
            qkv_bias,
            o_bias,
            mlp_bias: false,
            sliding,
            window: super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?,
            ..Default::default()
        },
    )
}
