//! OLMo 2: RMSNorms after attention and after the MLP (none on a sublayer's input), and q/k
//! RMSNorms over the whole projection before it is split into heads.

use super::{check_activation, layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::{ModelSpec, NormPlacement, QkNorm};
use crate::model::config::Config;
use crate::Result;

pub fn spec(cfg: &Config) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-5)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let sliding = layer_types(cfg, c.layers)?.unwrap_or_else(|| vec![false; c.layers as usize]);
    let bias = cfg.bool("attention_bias")?.unwrap_or(false);
    pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch: "olmo2",
            qk_norm: Some(QkNorm::FullWidth),
            norms: NormPlacement::Post,
            qkv_bias: bias,
            o_bias: bias,
            sliding,
            window: super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?,
            ..Default::default()
        },
    )
}
