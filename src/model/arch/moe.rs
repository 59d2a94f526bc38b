//! The sparse mixture-of-experts families: Qwen2-MoE (q/k/v biases, a gated shared expert),
//! Qwen3-MoE (q/k norms, MoE on every `decoder_sparse_step`-th layer but `mlp_only_layers`)
//! and Mixtral (every layer MoE, renormalised top-k, optional window on every layer). Their
//! attention is Qwen2's, Qwen3's and Mistral's; only the feed-forward block differs.

use super::{check_activation, layer_types, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::{
    ExpertAct, FusedGateUp, ModelSpec, MoeSpec, QkNorm, Routing, SharedExpertSpec,
};
use crate::model::config::Config;
use crate::{Error, Result};

/// The largest expert count a config may give (released models have up to a few hundred).
pub const MAX_EXPERTS: i32 = 1 << 12;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen2Moe,
    Qwen3Moe,
    Mixtral,
}

fn missing(cfg: &Config, key: &str) -> Error {
    Error::format(format!("{}: {key}: missing", cfg.path.display()))
}

/// The layer indices listed under `key` (each a layer of the model).
fn layer_list(cfg: &Config, key: &str, layers: i32) -> Result<Vec<i32>> {
    let Some(v) = cfg.get(key) else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or_else(|| {
        Error::format(format!("{}: {key}: expected a list of layer indices", cfg.path.display()))
    })?;
    list.iter()
        .map(|e| match e.as_i64() {
            Some(i) if (0..layers as i64).contains(&i) => Ok(i as i32),
            _ => Err(Error::format(format!(
                "{}: {key}: {e} is not a layer index (the model has {layers} layers)",
                cfg.path.display()
            ))),
        })
        .collect()
}

/// The experts per sparse layer and the experts each token uses, (0, 0) for a dense model
/// (the largest where layers differ).
pub fn experts(spec: &ModelSpec) -> (i32, i32) {
    spec.layers.iter().filter_map(|l| l.moe.as_ref()).map(|m| (m.experts, m.top_k)).max().unwrap_or((0, 0))
}

pub fn spec(cfg: &Config, family: Family) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let experts_key = if family == Family::Mixtral { "num_local_experts" } else { "num_experts" };
    let experts = super::bounded(cfg, experts_key, MAX_EXPERTS)?.ok_or_else(|| missing(cfg, experts_key))?;
    let top_k = super::bounded(cfg, "num_experts_per_tok", MAX_EXPERTS)?
        .ok_or_else(|| missing(cfg, "num_experts_per_tok"))?;
    if top_k > experts {
        return Err(Error::format(format!(
            "{}: num_experts_per_tok {top_k} is more than {experts_key} {experts}",
            cfg.path.display()
        )));
    }
    let intermediate = match family {
        // Mixtral's experts are intermediate_size wide; it has no dense MLP.
        Family::Mixtral => c.intermediate,
        _ => super::bounded(cfg, "moe_intermediate_size", super::MAX_INTERMEDIATE)?
            .ok_or_else(|| missing(cfg, "moe_intermediate_size"))?,
    };
    let routing = Routing::SoftmaxTopK {
        renormalize: family == Family::Mixtral || cfg.bool("norm_topk_prob")?.unwrap_or(false),
    };
    let shared = match family {
        Family::Qwen2Moe => Some(SharedExpertSpec {
            intermediate: super::bounded(cfg, "shared_expert_intermediate_size", super::MAX_INTERMEDIATE)?
                .ok_or_else(|| missing(cfg, "shared_expert_intermediate_size"))?,
            module: "shared_expert",
            gate: Some("shared_expert_gate"),
        }),
        _ => None,
    };
    let moe = MoeSpec {
        experts,
        top_k,
        intermediate,
        routing,
        shared,
        modules: if family == Family::Mixtral { &["block_sparse_moe", "mlp"] } else { &["mlp"] },
        expert_names: if family == Family::Mixtral {
            ["w1", "w3", "w2"]
        } else {
            ["gate_proj", "up_proj", "down_proj"]
        },
        router: "gate",
        stacked: "switch_mlp",
        fused_layout: FusedGateUp::OutInHalves,
        bias: false,
        act: ExpertAct::Mlp,
    };
    // Which layers are sparse: every `decoder_sparse_step`-th (counting from 1) that
    // `mlp_only_layers` does not name.
    let sparse: Vec<bool> = match family {
        Family::Mixtral => vec![true; c.layers as usize],
        _ => {
            let step = super::bounded(cfg, "decoder_sparse_step", super::MAX_LAYERS)?.unwrap_or(1);
            let dense_only = layer_list(cfg, "mlp_only_layers", c.layers)?;
            (0..c.layers).map(|i| (i + 1) % step == 0 && !dense_only.contains(&i)).collect()
        }
    };
    let window = super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?;
    let sliding = match layer_types(cfg, c.layers)? {
        Some(t) => t,
        None => match family {
            Family::Mixtral => vec![window.is_some(); c.layers as usize],
            _ if !cfg.bool("use_sliding_window")?.unwrap_or(false) => vec![false; c.layers as usize],
            // Qwen3-MoE slides on every layer; Qwen2-MoE on the odd-numbered (from 1) ones
            // below max_window_layers.
            Family::Qwen3Moe => vec![true; c.layers as usize],
            Family::Qwen2Moe => {
                let below = cfg.int("max_window_layers")?.unwrap_or(28);
                (0..c.layers).map(|i| (i + 1) % 2 == 1 && i < below).collect()
            }
        },
    };
    let (arch, qk_norm, qkv_bias, o_bias) = match family {
        Family::Qwen2Moe => ("qwen2_moe", None, cfg.bool("qkv_bias")?.unwrap_or(true), false),
        Family::Qwen3Moe => {
            let b = cfg.bool("attention_bias")?.unwrap_or(false);
            ("qwen3_moe", Some(QkNorm::PerHead), b, b)
        }
        Family::Mixtral => ("mixtral", None, false, false),
    };
    let mut spec = pre_norm_spec(
        cfg,
        &c,
        PreNorm { arch, qk_norm, qkv_bias, o_bias, mlp_bias: false, sliding, window, ..Default::default() },
    )?;
    for (layer, is_sparse) in spec.layers.iter_mut().zip(sparse) {
        if is_sparse {
            layer.moe = Some(moe.clone());
        }
    }
    Ok(spec)
}
