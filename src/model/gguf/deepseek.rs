//! DeepSeek-V2 and DeepSeek-V3 GGUF files (architecture `deepseek2`), as llama.cpp's
//! converter writes them: the metadata becomes the `deepseek_v2` / `deepseek_v3` config the
//! folder path reads, and every attention and expert tensor is checked here against it, so a
//! damaged file is an error naming the GGUF key or tensor.
//!
//! The converter stores multi-head latent attention as llama.cpp runs it: `kv_b_proj` split
//! per head into `attn_k_b` (ggml [qk_nope, kv_lora_rank, heads], the key half transposed) and
//! `attn_v_b` ([kv_lora_rank, v, heads]), which are mlx-lm's `embed_q` and `unembed_out`
//! (older files keep `attn_kv_b` whole). `attention.key_length` / `value_length` describe
//! the compressed cache (kv_lora_rank + rope, kv_lora_rank); the per-head widths are in
//! `key_length_mla` / `value_length_mla` (older files: `key_length` / `value_length`). Rows
//! are not permuted: ggml's normal rope rotates adjacent pairs as DeepSeek's interleaved rope
//! does.
//!
//! What llama.cpp fixes instead of storing is taken as it does: softmax gating unless
//! `expert_gating_func` says sigmoid, no renormalisation unless `expert_weights_norm`, and
//! YaRN's `mscale` equal to `mscale_all_dim` (llama.cpp keeps `0.1 * mscale_all_dim` in
//! `rope.scaling.yarn_log_multiplier` and assumes `mscale` agrees, as in DeepSeek's own
//! checkpoints), so the rope itself is not rescaled and the softmax scale gains
//! `mscale(factor, mscale_all_dim)²`. One choice differs: llama.cpp ranks expert groups by
//! the sum of their two best scores for every gating; a softmax-gated file is read as
//! DeepSeek-V2's `group_limited_greedy`, which ranks by the best score, as transformers does.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::{Header, TensorInfo, Value};
use crate::model::arch::moe::MAX_EXPERTS;
use crate::model::arch::MAX_LAYERS;
use crate::{Error, Result};

const ARCH: &str = "deepseek2";

/// llama.cpp's `expert_gating_func` values.
const GATING_SOFTMAX: u64 = 1;
const GATING_SIGMOID: u64 = 2;

fn dims_of<'a>(tensors: &HashMap<&str, &'a TensorInfo>, name: &str) -> Result<&'a [u64]> {
    tensors
        .get(name)
        .map(|t| t.dims.as_slice())
        .ok_or_else(|| Error::format(format!("tensor {name}: missing")))
}

fn expect(tensors: &HashMap<&str, &TensorInfo>, name: &str, want: &[u64], what: &str) -> Result<()> {
    let got = dims_of(tensors, name)?;
    if got != want {
        return Err(Error::format(format!("tensor {name}: dimensions {got:?}, expected {want:?} ({what})")));
    }
    Ok(())
}

/// The Hugging Face `model_type` of a deepseek2 file: `deepseek_v3` for sigmoid gating,
/// `deepseek_v2` for softmax (llama.cpp's default when the key is absent).
pub(super) fn model_type(h: &Header) -> Result<&'static str> {
    match h.arch_u64(ARCH, "expert_gating_func")? {
        None | Some(GATING_SOFTMAX) => Ok("deepseek_v2"),
        Some(GATING_SIGMOID) => Ok("deepseek_v3"),
        Some(other) => Err(Error::unsupported(format!(
            "metadata {ARCH}.expert_gating_func {other} is not supported (1 softmax, 2 sigmoid)"
        ))),
    }
}

/// Adds DeepSeek's keys to `c`, the config made from the common metadata (`hidden_size`,
/// `num_hidden_layers`, `num_attention_heads` already in it).
pub(super) fn add_config(h: &Header, model_type: &str, c: &mut Map<String, Json>) -> Result<()> {
    let get = |k: &str| c.get(k).and_then(Json::as_u64).ok_or_else(|| Error::internal(format!("no {k}")));
    let (hidden, layers, heads) =
        (get("hidden_size")?, get("num_hidden_layers")?, get("num_attention_heads")?);
    if layers > MAX_LAYERS as u64 {
        return Err(Error::format(format!(
            "metadata {ARCH}.block_count {layers} is more than liblmx allows ({MAX_LAYERS})"
        )));
    }
    let kv_lora = h.req_u64(ARCH, "attention.kv_lora_rank")?;
    let q_lora = h.arch_u64(ARCH, "attention.q_lora_rank")?.filter(|&r| r > 0);
    let rope = h.req_u64(ARCH, "rope.dimension_count")?;
    // Newer files describe the compressed cache in key_length and the heads in *_mla.
    let (key, value) = match h.arch_u64(ARCH, "attention.key_length_mla")? {
        Some(k) => (k, h.req_u64(ARCH, "attention.value_length_mla")?),
        None => (h.req_u64(ARCH, "attention.key_length")?, h.req_u64(ARCH, "attention.value_length")?),
    };
    if rope == 0 || rope % 2 != 0 || key <= rope {
        return Err(Error::format(format!(
            "metadata {ARCH}.rope.dimension_count {rope}: must be even and below the key width {key}"
        )));
    }
    let nope = key - rope;

    let tensors: HashMap<&str, &TensorInfo> = h.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let has = |name: &str| tensors.contains_key(name);
    let first_dense = h.arch_u64(ARCH, "leading_dense_block_count")?.unwrap_or(0).min(layers);
    let experts = h.arch_u64(ARCH, "expert_count")?.unwrap_or(0);
    let top_k = h.arch_u64(ARCH, "expert_used_count")?.unwrap_or(0);
    let expert_width = h.arch_u64(ARCH, "expert_feed_forward_length")?;
    let shared = h.arch_u64(ARCH, "expert_shared_count")?.unwrap_or(0);
    let sparse = first_dense < layers;
    if sparse {
        if experts == 0 || experts > MAX_EXPERTS as u64 {
            return Err(Error::format(format!(
                "metadata {ARCH}.expert_count: {experts} is not in 1..={MAX_EXPERTS}"
            )));
        }
        if top_k == 0 || top_k > experts {
            return Err(Error::format(format!(
                "metadata {ARCH}.expert_used_count: {top_k} is not in 1..={experts} ({ARCH}.expert_count)"
            )));
        }
    }
    let expert_width = match expert_width {
        Some(w) => w,
        None if sparse => {
            return Err(Error::format(format!("metadata {ARCH}.expert_feed_forward_length: missing")))
        }
        None => 0,
    };

    for l in 0..layers {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        match q_lora {
            Some(r) => {
                expect(&tensors, &t("attn_q_a"), &[hidden, r], "embedding_length, attention.q_lora_rank")?;
                expect(&tensors, &t("attn_q_a_norm"), &[r], "attention.q_lora_rank")?;
                expect(
                    &tensors,
                    &t("attn_q_b"),
                    &[r, heads * key],
                    "attention.q_lora_rank, heads * key width",
                )?;
            }
            None => {
                expect(&tensors, &t("attn_q"), &[hidden, heads * key], "embedding_length, heads * key width")?
            }
        }
        expect(
            &tensors,
            &t("attn_kv_a_mqa"),
            &[hidden, kv_lora + rope],
            "embedding_length, attention.kv_lora_rank + rope.dimension_count",
        )?;
        expect(&tensors, &t("attn_kv_a_norm"), &[kv_lora], "attention.kv_lora_rank")?;
        if has(&t("attn_kv_b")) {
            expect(
                &tensors,
                &t("attn_kv_b"),
                &[kv_lora, heads * (nope + value)],
                "attention.kv_lora_rank, heads * (key width - rope + value width)",
            )?;
        } else {
            expect(
                &tensors,
                &t("attn_k_b"),
                &[nope, kv_lora, heads],
                "key width - rope, attention.kv_lora_rank, heads",
            )?;
            expect(
                &tensors,
                &t("attn_v_b"),
                &[kv_lora, value, heads],
                "attention.kv_lora_rank, value width, heads",
            )?;
        }
        expect(
            &tensors,
            &t("attn_output"),
            &[heads * value, hidden],
            "heads * value width, embedding_length",
        )?;
        if l < first_dense {
            continue;
        }
        expect(&tensors, &t("ffn_gate_inp"), &[hidden, experts], "embedding_length, expert_count")?;
        for p in ["gate", "up"] {
            expect(
                &tensors,
                &t(&format!("ffn_{p}_exps")),
                &[hidden, expert_width, experts],
                "embedding_length, expert_feed_forward_length, expert_count",
            )?;
        }
        expect(
            &tensors,
            &t("ffn_down_exps"),
            &[expert_width, hidden, experts],
            "expert_feed_forward_length, embedding_length, expert_count",
        )?;
        if shared > 0 {
            let s = shared * expert_width;
            for p in ["gate", "up"] {
                expect(
                    &tensors,
                    &t(&format!("ffn_{p}_shexp")),
                    &[hidden, s],
                    "embedding_length, expert_shared_count * expert_feed_forward_length",
                )?;
            }
            expect(
                &tensors,
                &t("ffn_down_shexp"),
                &[s, hidden],
                "expert_shared_count * expert_feed_forward_length, embedding_length",
            )?;
        }
        let bias = format!("blk.{l}.exp_probs_b.bias");
        if model_type == "deepseek_v3" {
            expect(&tensors, &bias, &[experts], "expert_count: sigmoid gating's correction bias")?;
        } else if has(&bias) {
            return Err(Error::unsupported(format!(
                "tensor {bias}: a correction bias with softmax gating is not supported"
            )));
        }
    }

    let norm = match h.get(&format!("{ARCH}.expert_weights_norm")) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::format(format!("metadata {ARCH}.expert_weights_norm: {v:?} is not a boolean")))
        }
    };
    if norm && model_type == "deepseek_v2" {
        return Err(Error::unsupported(format!(
            "metadata {ARCH}.expert_weights_norm true with softmax gating is not supported"
        )));
    }
    let groups = h.arch_u64(ARCH, "expert_group_count")?.unwrap_or(0);
    let keep = h.arch_u64(ARCH, "expert_group_used_count")?.unwrap_or(0);
    let grouped = groups > 1;

    c.insert("model_type".into(), model_type.into());
    // MLA caches one latent; the folder config's key/value head counts are the query's.
    c.insert("num_key_value_heads".into(), heads.into());
    c.insert("head_dim".into(), key.into());
    c.insert("kv_lora_rank".into(), kv_lora.into());
    c.insert("q_lora_rank".into(), q_lora.map_or(Json::Null, Json::from));
    c.insert("qk_rope_head_dim".into(), rope.into());
    c.insert("qk_nope_head_dim".into(), nope.into());
    c.insert("v_head_dim".into(), value.into());
    c.insert("first_k_dense_replace".into(), first_dense.into());
    c.insert("attention_bias".into(), false.into());
    if model_type == "deepseek_v3" {
        c.insert("rope_interleave".into(), true.into());
    }
    if sparse {
        c.insert("n_routed_experts".into(), experts.into());
        c.insert("num_experts_per_tok".into(), top_k.into());
        c.insert("moe_intermediate_size".into(), expert_width.into());
        c.insert("n_shared_experts".into(), shared.into());
        c.insert("moe_layer_freq".into(), 1.into());
        c.insert("norm_topk_prob".into(), norm.into());
        if let Some(s) = h.arch_f64(ARCH, "expert_weights_scale")? {
            c.insert("routed_scaling_factor".into(), s.into());
        }
        let method = match (model_type, grouped) {
            ("deepseek_v3", _) => "noaux_tc",
            (_, true) => "group_limited_greedy",
            (_, false) => "greedy",
        };
        c.insert("topk_method".into(), method.into());
        if grouped || model_type == "deepseek_v3" {
            c.insert("n_group".into(), groups.max(1).into());
            c.insert("topk_group".into(), keep.max(1).into());
        }
    }
    if let Some(rs) = rope_scaling(h)? {
        c.insert("rope_scaling".into(), rs);
    }
    Ok(())
}

/// The config's `rope_scaling` from `rope.scaling.*` (None when the rope is not scaled).
fn rope_scaling(h: &Header) -> Result<Option<Json>> {
    let ty = h.get(&format!("{ARCH}.rope.scaling.type")).and_then(Value::as_str).unwrap_or("none");
    match ty {
        "none" => return Ok(None),
        "yarn" => {}
        other => {
            return Err(Error::unsupported(format!(
                "metadata {ARCH}.rope.scaling.type {other:?} is not supported (none, yarn)"
            )))
        }
    }
    let req = |k: &str| -> Result<f64> {
        h.arch_f64(ARCH, k)?.ok_or_else(|| Error::format(format!("metadata {ARCH}.{k}: missing")))
    };
    let factor = req("rope.scaling.factor")?;
    let original = h.req_u64(ARCH, "rope.scaling.original_context_length")?;
    // llama.cpp stores 0.1 * mscale_all_dim and takes mscale to be the same; without the key it
    // scales the rope and the softmax by a different rule, which liblmx does not follow.
    let all = req("rope.scaling.yarn_log_multiplier")? / 0.1;
    let mut rs = Map::new();
    rs.insert("type".into(), "yarn".into());
    rs.insert("factor".into(), factor.into());
    rs.insert("original_max_position_embeddings".into(), original.into());
    rs.insert("mscale".into(), all.into());
    rs.insert("mscale_all_dim".into(), all.into());
    for (gguf, hf) in
        [("rope.scaling.yarn_beta_fast", "beta_fast"), ("rope.scaling.yarn_beta_slow", "beta_slow")]
    {
        if let Some(v) = h.arch_f64(ARCH, gguf)? {
            rs.insert(hf.into(), v.into());
        }
    }
    Ok(Some(Json::Object(rs)))
}
