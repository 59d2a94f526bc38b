//! GPT-OSS: attention with q/k/v/o biases and a learned sink logit per head, sliding-window
//! (`sliding_window`) and full layers as `layer_types` says (alternating from a sliding one
//! when it is absent), YaRN rope, and a mixture of experts on every layer whose router keeps
//! the top k logits (with a bias) and softmaxes over them, and whose experts (with biases)
//! apply a clamped SwiGLU.

use super::{layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::moe::MAX_EXPERTS;
use crate::model::arch::spec::{ExpertAct, FusedGateUp, ModelSpec, MoeSpec, Routing};
use crate::model::config::Config;
use crate::model::nn::rope::RopeParams;
use crate::{Error, Result};

/// transformers' rope when a config names none: YaRN stretching a 4096-position model 32
/// times, its correction range not rounded.
const DEFAULT_ROPE: &str = r#"{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
    "truncate": false, "original_max_position_embeddings": 4096}"#;

/// `key` as a finite number > 0 that f32 holds, `default` when absent.
fn factor(cfg: &Config, key: &str, default: f64) -> Result<f32> {
    let v = cfg.positive(key)?.unwrap_or(default);
    if v > f32::MAX as f64 {
        return Err(Error::format(format!(
            "{}: {key}: {v:e} is larger than liblmx allows ({:e})",
            cfg.path.display(),
            f32::MAX
        )));
    }
    Ok(v as f32)
}

pub fn spec(cfg: &Config) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-5)?;
    super::check_activation(cfg, "hidden_act", &["silu"])?;
    let missing = |key: &str| Error::format(format!("{}: {key}: missing", cfg.path.display()));
    let experts =
        super::bounded(cfg, "num_local_experts", MAX_EXPERTS)?.ok_or_else(|| missing("num_local_experts"))?;
    let top_k = super::bounded(cfg, "num_experts_per_tok", MAX_EXPERTS)?
        .ok_or_else(|| missing("num_experts_per_tok"))?;
    if top_k > experts {
        return Err(Error::format(format!(
            "{}: num_experts_per_tok {top_k} is more than num_local_experts {experts}",
            cfg.path.display()
        )));
    }
    let act = ExpertAct::ClampedSwiGlu {
        alpha: factor(cfg, "swiglu_alpha", 1.702)?,
        limit: factor(cfg, "swiglu_limit", 7.0)?,
    };
    // transformers' default when the key is absent; null leaves the sliding layers global.
    let window = match cfg.obj.contains_key("sliding_window") {
        true => super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?,
        false => Some(128),
    };
    let sliding = match layer_types(cfg, c.layers)? {
        Some(t) => t,
        None => (0..c.layers).map(|i| i % 2 == 0).collect(),
    };
    let mut params = RopeParams::read(cfg, None, 150000.0)?;
    if params.scaling.is_none() && !cfg.has("rope_parameters") && !cfg.has("rope_scaling") {
        let v: serde_json::Value = serde_json::from_str(DEFAULT_ROPE)
            .map_err(|e| Error::internal(format!("the default GPT-OSS rope: {e}")))?;
        params.scaling = Config::from_value(&cfg.path, &v);
    }
    let rope = params.build(c.head_dim, c.max_position)?;
    let bias = cfg.bool("attention_bias")?.unwrap_or(true);
    let moe = MoeSpec {
        experts,
        top_k,
        intermediate: c.intermediate,
        routing: Routing::TopKSoftmax,
        shared: None,
        modules: &["mlp"],
        expert_names: ["gate_proj", "up_proj", "down_proj"],
        router: "router",
        stacked: "experts",
        fused_layout: FusedGateUp::InOutInterleaved,
        bias: true,
        act,
    };
    let mut spec = pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch: "gpt_oss",
            qkv_bias: bias,
            o_bias: bias,
            sliding,
            window,
            rope: Some(rope),
            ..Default::default()
        },
    )?;
    for layer in &mut spec.layers {
        layer.attn.sinks = true;
        layer.moe = Some(moe.clone());
    }
    Ok(spec)
}
