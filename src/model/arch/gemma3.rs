//! Gemma 3 (text): (1+w) RMSNorms in a sandwich around attention and the MLP, GeGLU with the
//! tanh GELU, q/k norms, scores scaled by query_pre_attn_scalar^-1/2, embeddings scaled by
//! sqrt(hidden), and local sliding-window layers (their own rope base) between global ones.

use super::{check_activation, layer_types, Common};
use crate::model::arch::spec::{
    AttentionSpec, LayerSpec, MlpKind, ModelSpec, NormPlacement, NormStyle, QkNorm,
};
use crate::model::config::Config;
use crate::model::nn::rope::RopeParams;
use crate::{Error, Result};

pub fn spec(cfg: &Config) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_activation", &["gelu_pytorch_tanh", "gelu_tanh"])?;
    if cfg.f64("attn_logit_softcapping")?.is_some() {
        return Err(Error::unsupported(format!(
            "{}: attn_logit_softcapping is not supported",
            cfg.path.display()
        )));
    }
    let window = super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?.unwrap_or(4096);
    let sliding = match layer_types(cfg, c.layers)? {
        Some(t) => t,
        None => {
            let pattern = cfg.int("sliding_window_pattern")?.unwrap_or(6);
            (0..c.layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    let attention_bias = cfg.bool("attention_bias")?.unwrap_or(false);
    let scalar = cfg.f64("query_pre_attn_scalar")?.unwrap_or(c.head_dim as f64);
    let (global_rope, gfactor) =
        RopeParams::read(cfg, Some("full_attention"), 1_000_000.0)?.build(c.head_dim, c.max_position)?;
    // Local layers rotate with their own base and no scaling.
    let local = match cfg
        .object("rope_parameters")?
        .and_then(|p| p.obj.contains_key("sliding_attention").then_some(p))
    {
        Some(_) => RopeParams::read(cfg, Some("sliding_attention"), 10_000.0)?,
        None => RopeParams { base: cfg.f64("rope_local_base_freq")?.unwrap_or(10_000.0), scaling: None },
    };
    let (local_rope, lfactor) = local.build(c.head_dim, c.max_position)?;
    let layers = sliding
        .into_iter()
        .map(|slides| {
            let (rope, factor) =
                if slides { (local_rope.clone(), lfactor) } else { (global_rope.clone(), gfactor) };
            LayerSpec {
                attn: AttentionSpec {
                    n_heads: c.heads,
                    n_kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    qk_norm: Some(QkNorm::PerHead),
                    window: slides.then_some(window),
                    rope: Some(rope),
                    scale: (scalar as f32).powf(-0.5) * factor,
                    qkv_bias: attention_bias,
                    o_bias: attention_bias,
                    sinks: false,
                    latent: None,
                },
                mlp: MlpKind::GeGluTanh,
                mlp_bias: false,
                intermediate: c.intermediate,
                norms: NormPlacement::Sandwich,
                moe: None,
            }
        })
        .collect();
    Ok(ModelSpec {
        arch: "gemma3".to_string(),
        hidden: c.hidden,
        vocab: c.vocab,
        norm_eps: c.norm_eps,
        norm_style: NormStyle::OnePlusWeight,
        embed_scale: Some((c.hidden as f64).sqrt()),
        tie_embeddings: cfg.bool("tie_word_embeddings")?.unwrap_or(true),
        final_logit_softcap: cfg.f64("final_logit_softcapping")?.map(|v| v as f32),
        max_position: c.max_position,
        layers,
    })
}
