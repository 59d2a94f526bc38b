//! DeepSeek-V2 and DeepSeek-V3 (and Kimi K2, V3's layout): multi-head latent attention
//! ([`Latent`]) and a mixture of experts with DeepSeek's grouped routing
//! ([`Routing::Grouped`]) plus always-on shared experts, on every layer from
//! `first_k_dense_replace` on (every `moe_layer_freq`-th); the layers before it are dense.

use super::{
    bounded, check_activation, moe::MAX_EXPERTS, Common, MAX_HEAD_DIM, MAX_HIDDEN, MAX_INTERMEDIATE,
};
use crate::model::arch::spec::{
    AttentionSpec, ExpertAct, FusedGateUp, GroupScore, Latent, LayerSpec, MlpKind, ModelSpec, MoeSpec,
    NormPlacement, NormStyle, Routing, Scoring, SharedExpertSpec,
};
use crate::model::config::Config;
use crate::model::nn::rope::RopeParams;
use crate::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

fn bad(cfg: &Config, key: &str, why: impl std::fmt::Display) -> Error {
    Error::format(format!("{}: {key}: {why}", cfg.path.display()))
}

fn required(cfg: &Config, key: &str, max: i32) -> Result<i32> {
    bounded(cfg, key, max)?.ok_or_else(|| bad(cfg, key, "missing"))
}

/// An integer in 0..=max (`None` when absent or null): counts that may be zero.
fn count(cfg: &Config, key: &str, max: i32) -> Result<Option<i32>> {
    let Some(v) = cfg.get(key) else { return Ok(None) };
    match v.as_i64() {
        Some(n) if (0..=max as i64).contains(&n) => Ok(Some(n as i32)),
        _ => Err(bad(cfg, key, format!("{v} is not an integer in 0..={max}"))),
    }
}

/// DeepSeek's YaRN score correction: `0.1 * m * ln(factor) + 1` (1 for factor <= 1).
fn yarn_mscale(factor: f64, m: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

pub fn spec(cfg: &Config, version: Version) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    if cfg.bool("mlp_bias")?.unwrap_or(false) {
        return Err(Error::unsupported(format!("{}: mlp_bias true is not supported", cfg.path.display())));
    }
    let attention_bias = cfg.bool("attention_bias")?.unwrap_or(false);
    let q_lora_rank = bounded(cfg, "q_lora_rank", MAX_HIDDEN)?;
    let kv_lora_rank = required(cfg, "kv_lora_rank", MAX_HIDDEN)?;
    let qk_nope = required(cfg, "qk_nope_head_dim", MAX_HEAD_DIM)?;
    let qk_rope = required(cfg, "qk_rope_head_dim", MAX_HEAD_DIM)?;
    if qk_rope % 2 != 0 {
        return Err(bad(cfg, "qk_rope_head_dim", format!("{qk_rope} must be even")));
    }
    let v_head_dim = required(cfg, "v_head_dim", MAX_HEAD_DIM)?;
    // V2 rotates complex pairs (interleaved); V3 follows `rope_interleave`.
    let interleaved = match version {
        Version::V2 => true,
        Version::V3 => cfg.bool("rope_interleave")?.unwrap_or(true),
    };
    let params = RopeParams::read(cfg, None, 10000.0)?;
    let (rope, factor) = params.build(qk_rope, c.max_position)?;
    // The rope's attention factor scales q and k's rotated dimensions (`factor` is its
    // square); DeepSeek also multiplies the softmax scale by mscale(factor, mscale_all_dim)²
    // whenever the rope is scaled.
    let mut scale = ((qk_nope + qk_rope) as f64).powf(-0.5);
    if let Some(sc) = &params.scaling {
        let ty = sc.str("rope_type")?.or(sc.str("type")?).unwrap_or("default");
        let all = sc.f64("mscale_all_dim")?.unwrap_or(0.0);
        if !all.is_finite() {
            return Err(bad(sc, "mscale_all_dim", format!("{all} is not a finite number")));
        }
        if ty != "default" && all != 0.0 {
            let m = yarn_mscale(sc.req_positive("factor")?, all);
            scale *= m * m;
        }
    }
    let latent = Latent {
        q_lora_rank,
        kv_lora_rank,
        qk_nope,
        qk_rope,
        v_head_dim,
        interleaved,
        rope_gain: factor.sqrt(),
    };
    let attn = AttentionSpec {
        n_heads: c.heads,
        n_kv_heads: 1,
        head_dim: qk_nope + qk_rope,
        qk_norm: None,
        window: None,
        rope: Some(rope),
        scale: scale as f32,
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        latent: Some(latent),
        sinks: false,
    };
    let moe = moe_spec(cfg, version)?;
    let first_dense = count(cfg, "first_k_dense_replace", c.layers)?.unwrap_or(0);
    let freq = bounded(cfg, "moe_layer_freq", c.layers)?.unwrap_or(1);
    let layers = (0..c.layers)
        .map(|i| LayerSpec {
            attn: attn.clone(),
            mlp: MlpKind::SwiGlu,
            mlp_bias: false,
            intermediate: c.intermediate,
            moe: moe.clone().filter(|_| i >= first_dense && i % freq == 0),
            norms: NormPlacement::Pre,
        })
        .collect();
    Ok(ModelSpec {
        arch: cfg.str("model_type")?.unwrap_or("deepseek_v3").to_string(),
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

/// The sparse block, or None for a model without routed experts (every layer dense).
fn moe_spec(cfg: &Config, version: Version) -> Result<Option<MoeSpec>> {
    let Some(experts) = bounded(cfg, "n_routed_experts", MAX_EXPERTS)? else { return Ok(None) };
    let top_k = required(cfg, "num_experts_per_tok", MAX_EXPERTS)?;
    if top_k > experts {
        return Err(bad(
            cfg,
            "num_experts_per_tok",
            format!("{top_k} is more than n_routed_experts {experts}"),
        ));
    }
    let intermediate = required(cfg, "moe_intermediate_size", MAX_INTERMEDIATE)?;
    let shared = count(cfg, "n_shared_experts", MAX_EXPERTS)?.unwrap_or(0);
    if shared as i64 * intermediate as i64 > MAX_INTERMEDIATE as i64 {
        return Err(bad(
            cfg,
            "n_shared_experts",
            format!(
                "{shared} experts of width {intermediate} are wider than liblmx allows ({MAX_INTERMEDIATE})"
            ),
        ));
    }
    let scale = cfg.positive("routed_scaling_factor")?.unwrap_or(1.0) as f32;
    let (scoring, method_default) = match version {
        Version::V2 => (Scoring::Softmax, "greedy"),
        Version::V3 => (Scoring::Sigmoid, "noaux_tc"),
    };
    if let Some(f) = cfg.str("scoring_func")? {
        let want = if scoring == Scoring::Softmax { "softmax" } else { "sigmoid" };
        if f != want {
            return Err(Error::unsupported(format!(
                "{}: scoring_func {f:?} is not supported for this model_type (supported: {want})",
                cfg.path.display()
            )));
        }
    }
    let method = cfg.str("topk_method")?.unwrap_or(method_default);
    let grouped = match (version, method) {
        (Version::V2, "greedy") => false,
        (Version::V2, "group_limited_greedy") | (Version::V3, "noaux_tc") => true,
        (_, other) => {
            return Err(Error::unsupported(format!(
                "{}: topk_method {other:?} is not supported (supported: {})",
                cfg.path.display(),
                if version == Version::V2 { "greedy, group_limited_greedy" } else { "noaux_tc" }
            )))
        }
    };
    let (groups, keep_groups) = if grouped {
        let groups = bounded(cfg, "n_group", MAX_EXPERTS)?.unwrap_or(1);
        let keep = bounded(cfg, "topk_group", MAX_EXPERTS)?.unwrap_or(1);
        if experts % groups != 0 {
            return Err(bad(cfg, "n_group", format!("{groups} does not divide n_routed_experts {experts}")));
        }
        if keep > groups {
            return Err(bad(cfg, "topk_group", format!("{keep} is more than n_group {groups}")));
        }
        if keep * (experts / groups) < top_k {
            return Err(bad(
                cfg,
                "topk_group",
                format!(
                    "{keep} groups of {} experts hold fewer than num_experts_per_tok {top_k}",
                    experts / groups
                ),
            ));
        }
        if version == Version::V3 && groups > 1 && experts / groups < 2 {
            return Err(bad(cfg, "n_group", format!("{groups} groups leave fewer than 2 experts per group")));
        }
        (groups, keep)
    } else {
        (1, 1)
    };
    let routing = Routing::Grouped {
        scoring,
        correction_bias: version == Version::V3,
        groups,
        keep_groups,
        group_score: if version == Version::V3 { GroupScore::TopTwoSum } else { GroupScore::Max },
        // transformers' DeepSeek-V2 router never renormalises (whatever norm_topk_prob says).
        renormalize: version == Version::V3 && cfg.bool("norm_topk_prob")?.unwrap_or(true),
        scale,
    };
    Ok(Some(MoeSpec {
        experts,
        top_k,
        intermediate,
        routing,
        shared: (shared > 0).then(|| SharedExpertSpec {
            intermediate: shared * intermediate,
            module: "shared_experts",
            gate: None,
        }),
        modules: &["mlp"],
        expert_names: ["gate_proj", "up_proj", "down_proj"],
        router: "gate",
        stacked: "switch_mlp",
        fused_layout: FusedGateUp::OutInHalves,
        bias: false,
        act: ExpertAct::Mlp,
    }))
}
