//! Phi-3 (and Phi-3.5, Phi-4-mini): Llama's block with q/k/v and gate/up stored fused
//! (`qkv_proj`, `gate_up_proj`, loaded as they are), optionally a partial rotary dimension,
//! and LongRoPE scaling.
//!
//! LongRoPE as transformers 5 runs it: short factors while the sequence fits
//! `original_max_position_embeddings`, long factors for a sequence longer than that, and the
//! attention factor (the config's, else sqrt(1 + ln(factor) / ln(original)), factor being
//! max_position_embeddings / original) on the rotated dimensions. Beyond the original length
//! transformers recomputes the whole cache with the long factors; liblmx keeps the keys it
//! rotated with the short ones and rotates the new positions with the long ones (see
//! [`crate::model::nn::rope::Rope::LongRope`]). mlx-lm 0.32.2 differs from both: it uses the
//! long factors at every length, and ignores a configured attention factor.

use super::{check_activation, layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::ModelSpec;
use crate::model::config::Config;
use crate::model::nn::rope::RopeParams;
use crate::{Error, Result};

pub fn spec(cfg: &Config) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-5)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let params = RopeParams::read(cfg, None, 10000.0)?;
    let dims = rotary_dims(cfg, &params, c.head_dim)?;
    let ty = match &params.scaling {
        Some(sc) => sc.str("rope_type")?.or(sc.str("type")?).unwrap_or("default"),
        None => "default",
    };
    // Phi3Config maps "su" and "yarn" to longrope.
    let rope = if matches!(ty, "longrope" | "su" | "yarn") {
        // The top-level value (4096 when absent) wins over one in the rope block, as
        // Phi3Config has it.
        let orig =
            super::bounded(cfg, "original_max_position_embeddings", super::MAX_POSITIONS)?.unwrap_or(4096);
        params.longrope(dims, c.head_dim, orig, Some(c.max_position.unwrap_or(4096)))?
    } else {
        params.build(dims, c.max_position)?
    };
    let window = super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?;
    let sliding = match layer_types(cfg, c.layers)? {
        Some(types) => types,
        // A window, when set, applies to every layer.
        None => vec![window.is_some(); c.layers as usize],
    };
    let bias = cfg.bool("attention_bias")?.unwrap_or(false);
    pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch: "phi3",
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: cfg.bool("mlp_bias")?.unwrap_or(false),
            sliding,
            window,
            rope: Some(rope),
            ..Default::default()
        },
    )
}

/// The rotated dimensions: head_dim times `partial_rotary_factor` (top level or in the rope
/// block), rounded down as transformers does; even and at least 2.
fn rotary_dims(cfg: &Config, params: &RopeParams, head_dim: i32) -> Result<i32> {
    let key = "partial_rotary_factor";
    let factor = match cfg.positive(key)? {
        Some(f) => Some(f),
        None => params.scaling.as_ref().map(|sc| sc.positive(key)).transpose()?.flatten(),
    };
    let Some(f) = factor else { return Ok(head_dim) };
    let dims = (head_dim as f64 * f).floor() as i64;
    if f > 1.0 || dims < 2 || dims % 2 != 0 {
        return Err(Error::format(format!(
            "{}: {key}: {f} gives {dims} rotated dimensions of head_dim {head_dim} (must be even, 2..=head_dim)",
            cfg.path.display()
        )));
    }
    Ok(dims as i32)
}

#[cfg(test)]
mod tests {
    use crate::model::config::Config;
    use crate::model::nn::rope::Rope;

    fn spec(extra: &str) -> crate::Result<crate::model::arch::spec::ModelSpec> {
        let text = format!(
            r#"{{"model_type": "phi3", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100,
                "max_position_embeddings": 1024{extra}}}"#
        );
        super::spec(&Config::from_text(std::path::Path::new("config.json"), &text)?)
    }

    const FACTORS: &str = r#""short_factor": [1, 1, 1, 1, 1, 1, 1, 1],
                             "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]"#;

    fn original(s: &crate::model::arch::spec::ModelSpec) -> i32 {
        match s.layers[0].attn.rope.as_ref() {
            Some(Rope::LongRope(lr)) => lr.original_max,
            other => panic!("not LongRoPE: {other:?}"),
        }
    }

    #[test]
    fn su_is_longrope_and_the_top_level_original_length_wins() {
        let s = spec(&format!(
            r#", "original_max_position_embeddings": 256,
               "rope_scaling": {{"type": "su", {FACTORS}, "original_max_position_embeddings": 64}}"#
        ))
        .unwrap();
        assert_eq!(original(&s), 256);
        // Every dimension rotates: the attention factor for 1024 / 256 goes on the scores,
        // squared: 1 + ln 4 / ln 256 = 1.25.
        let want = 0.25 * 1.25;
        assert!((s.layers[0].attn.scale - want).abs() < 1e-6, "{}", s.layers[0].attn.scale);
        // Phi3Config's default original length when the top level has none.
        let s = spec(&format!(r#", "rope_scaling": {{"type": "longrope", {FACTORS}}}"#)).unwrap();
        assert_eq!(original(&s), 4096);
    }
}
