//! One adapter per architecture family: `config.json` in, [`ModelSpec`] out. Adding an
//! architecture means adding a file here and a line to [`spec_for`].

mod deepseek;
mod gemma3;
mod gpt_oss;
mod llama;
pub mod moe;
mod olmo2;
mod phi3;
mod qwen;
mod smollm3;
pub mod spec;

use crate::model::arch::spec::{ModelSpec, NormPlacement, QkNorm};
use crate::model::config::Config;
use crate::model::nn::rope::Rope;
use crate::{Error, Result};

/// The `model_type` values liblmx loads.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3",
    "gemma3_text",
    "phi3",
    "smollm3",
    "olmo2",
    "qwen2_moe",
    "qwen3_moe",
    "mixtral",
    "gpt_oss",
    "deepseek_v2",
    "deepseek_v3",
    "kimi_k2",
];

/// Builds the spec for a checkpoint's config.
pub fn spec_for(cfg: &Config) -> Result<ModelSpec> {
    let model_type = cfg
        .str("model_type")?
        .ok_or_else(|| Error::format(format!("{}: model_type: missing", cfg.path.display())))?;
    match model_type {
        "llama" | "mistral" => llama::spec(cfg, model_type),
        "qwen2" => qwen::spec(cfg, qwen::Version::Qwen2),
        "qwen3" => qwen::spec(cfg, qwen::Version::Qwen3),
        "phi3" => phi3::spec(cfg),
        "smollm3" => smollm3::spec(cfg),
        "olmo2" => olmo2::spec(cfg),
        "qwen2_moe" => moe::spec(cfg, moe::Family::Qwen2Moe),
        "qwen3_moe" => moe::spec(cfg, moe::Family::Qwen3Moe),
        "mixtral" => moe::spec(cfg, moe::Family::Mixtral),
        "gpt_oss" => gpt_oss::spec(cfg),
        "deepseek_v2" => deepseek::spec(cfg, deepseek::Version::V2),
        // Kimi K2 is DeepSeek-V3's architecture under another name (transformers 5.23 has no
        // class of its own for it; mlx-lm maps it onto deepseek_v3).
        "deepseek_v3" | "kimi_k2" => deepseek::spec(cfg, deepseek::Version::V3),
        "gemma3_text" => gemma3::spec(cfg),
        // The multimodal checkpoint: the language model's config is nested.
        "gemma3" => match cfg.object("text_config")? {
            Some(text) => gemma3::spec(&text),
            None => gemma3::spec(cfg),
        },
        other => Err(Error::unsupported(format!(
            "model_type {other:?} is not supported (supported: {})",
            SUPPORTED.join(", ")
        ))),
    }
}

/// The sizes every decoder config carries.
pub(crate) struct Common {
    pub hidden: i32,
    pub layers: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    pub intermediate: i32,
    pub vocab: i32,
    pub norm_eps: f32,
    pub max_position: Option<i32>,
}

/// The largest sizes a config may give. Far beyond any released model; they bound what is
/// sized from a config before a tensor is read (per-layer specs, rope tables), so an absurd
/// number is an error naming the field, not an allocation that kills the process.
pub const MAX_LAYERS: i32 = 1024;
pub const MAX_HIDDEN: i32 = 1 << 16;
pub const MAX_HEADS: i32 = 1024;
pub const MAX_HEAD_DIM: i32 = 4096;
pub const MAX_INTERMEDIATE: i32 = 1 << 20;
pub const MAX_VOCAB: i32 = 1 << 24;
pub const MAX_POSITIONS: i32 = 1 << 28;

/// `key` as an integer in 1..=max (`None` when absent).
pub(crate) fn bounded(cfg: &Config, key: &str, max: i32) -> Result<Option<i32>> {
    match cfg.int(key)? {
        Some(v) if v > max => Err(Error::format(format!(
            "{}: {key}: {v} is larger than liblmx allows ({max})",
            cfg.path.display()
        ))),
        v => Ok(v),
    }
}

fn req_bounded(cfg: &Config, key: &str, max: i32) -> Result<i32> {
    bounded(cfg, key, max)?.ok_or_else(|| Error::format(format!("{}: {key}: missing", cfg.path.display())))
}

impl Common {
    pub fn read(cfg: &Config, default_eps: f64) -> Result<Common> {
        let hidden = req_bounded(cfg, "hidden_size", MAX_HIDDEN)?;
        let heads = req_bounded(cfg, "num_attention_heads", MAX_HEADS)?;
        let kv_heads = bounded(cfg, "num_key_value_heads", MAX_HEADS)?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(Error::format(format!(
                "{}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}",
                cfg.path.display()
            )));
        }
        let head_dim = match bounded(cfg, "head_dim", MAX_HEAD_DIM)? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(Error::format(format!(
                    "{}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} and head_dim is missing",
                    cfg.path.display()
                )))
            }
        };
        if head_dim % 2 != 0 || head_dim > MAX_HEAD_DIM {
            return Err(Error::format(format!(
                "{}: head_dim {head_dim} must be even and at most {MAX_HEAD_DIM}",
                cfg.path.display()
            )));
        }
        let norm_eps = cfg.f64("rms_norm_eps")?.unwrap_or(default_eps);
        if !(norm_eps.is_finite() && norm_eps >= 0.0) {
            return Err(Error::format(format!(
                "{}: rms_norm_eps: {norm_eps} must be a finite number >= 0",
                cfg.path.display()
            )));
        }
        Ok(Common {
            hidden,
            layers: req_bounded(cfg, "num_hidden_layers", MAX_LAYERS)?,
            heads,
            kv_heads,
            head_dim,
            intermediate: req_bounded(cfg, "intermediate_size", MAX_INTERMEDIATE)?,
            vocab: req_bounded(cfg, "vocab_size", MAX_VOCAB)?,
            norm_eps: norm_eps as f32,
            max_position: bounded(cfg, "max_position_embeddings", MAX_POSITIONS)?,
        })
    }
}

/// Checks the activation names a family supports.
pub(crate) fn check_activation(cfg: &Config, key: &str, allowed: &[&str]) -> Result<()> {
    if let Some(act) = cfg.str(key)? {
        if !allowed.contains(&act) {
            return Err(Error::unsupported(format!(
                "{}: {key} {act:?} is not supported (supported: {})",
                cfg.path.display(),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Which layers use a sliding window, from `layer_types` when the config has it.
pub(crate) fn layer_types(cfg: &Config, layers: i32) -> Result<Option<Vec<bool>>> {
    let Some(v) = cfg.get("layer_types") else { return Ok(None) };
    let list = v
        .as_array()
        .ok_or_else(|| Error::format(format!("{}: layer_types: expected a list", cfg.path.display())))?;
    if list.len() != layers as usize {
        return Err(Error::format(format!(
            "{}: layer_types has {} entries for {layers} layers",
            cfg.path.display(),
            list.len()
        )));
    }
    list.iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            Some(other) => Err(Error::unsupported(format!(
                "{}: layer type {other:?} is not supported (supported: full_attention, sliding_attention)",
                cfg.path.display()
            ))),
            None => Err(Error::format(format!("{}: layer_types: {t} is not a string", cfg.path.display()))),
        })
        .collect::<Result<Vec<bool>>>()
        .map(Some)
}

/// The choices that tell the SwiGLU families (Llama, Mistral, Qwen, Phi-3, SmolLM3, OLMo 2)
/// apart.
#[derive(Default)]
pub(crate) struct PreNorm {
    pub arch: &'static str,
    pub qk_norm: Option<QkNorm>,
    pub norms: NormPlacement,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per layer: whether it slides a window of `window` tokens.
    pub sliding: Vec<bool>,
    pub window: Option<i32>,
    /// The rope and its factor on attention scores; None: the config's plain `rope_theta` /
    /// `rope_scaling` over every head dimension.
    pub rope: Option<(Rope, f32)>,
    /// Per layer: whether it has no positional encoding (NoPE); empty: every layer rotates.
    pub nope: Vec<bool>,
    /// `tie_word_embeddings` when the config does not say (the family's default).
    pub tie_default: bool,
}

/// A spec for a decoder with SwiGLU MLPs, `x * w` RMSNorms and one rope (where a layer has
/// one).
pub(crate) fn pre_norm_spec(cfg: &Config, c: &Common, f: PreNorm) -> Result<ModelSpec> {
    let (rope, factor) = match f.rope {
        Some(r) => r,
        None => {
            crate::model::nn::rope::RopeParams::read(cfg, None, 10000.0)?.build(c.head_dim, c.max_position)?
        }
    };
    let layers = f
        .sliding
        .iter()
        .enumerate()
        .map(|(i, &slides)| {
            let nope = f.nope.get(i).copied().unwrap_or(false);
            crate::model::arch::spec::LayerSpec {
                attn: crate::model::arch::spec::AttentionSpec {
                    n_heads: c.heads,
                    n_kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    qk_norm: f.qk_norm,
                    window: if slides { f.window } else { None },
                    rope: (!nope).then(|| rope.clone()),
                    // A rope's score factor (YaRN, LongRoPE) belongs to rotated layers only.
                    scale: (c.head_dim as f32).powf(-0.5) * if nope { 1.0 } else { factor },
                    qkv_bias: f.qkv_bias,
                    o_bias: f.o_bias,
                    sinks: false,
                    latent: None,
                },
                mlp: crate::model::arch::spec::MlpKind::SwiGlu,
                mlp_bias: f.mlp_bias,
                intermediate: c.intermediate,
                norms: f.norms,
                moe: None,
            }
        })
        .collect();
    Ok(ModelSpec {
        arch: f.arch.to_string(),
        hidden: c.hidden,
        vocab: c.vocab,
        norm_eps: c.norm_eps,
        norm_style: crate::model::arch::spec::NormStyle::Weight,
        embed_scale: None,
        tie_embeddings: cfg.bool("tie_word_embeddings")?.unwrap_or(f.tie_default),
        final_logit_softcap: None,
        max_position: c.max_position,
        layers,
    })
}

#[cfg(test)]
mod tests {
    /// The README's list of supported `model_type`s is this module's, in its order.
    #[test]
    fn the_readme_lists_the_supported_model_types() {
        let readme = include_str!("../../../README.md");
        let line = readme
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("Supported `model_type`s: "))
            .expect("README has the list");
        let listed: Vec<&str> =
            line.split(';').next().unwrap_or("").split(", ").map(|s| s.trim_matches('`')).collect();
        assert_eq!(listed, super::SUPPORTED);
    }
}
