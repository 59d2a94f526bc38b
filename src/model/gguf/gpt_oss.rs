//! GPT-OSS GGUF files (architecture `gpt-oss`), as llama.cpp's converter writes them: the
//! metadata becomes the `gpt_oss` config the folder path reads, the expert tensors are
//! checked against it here (an error names the GGUF key or tensor).
//!
//! The converter splits the checkpoint's interleaved `gate_up_proj` into `ffn_gate_exps` and
//! `ffn_up_exps` (with their biases), stores the router as `ffn_gate_inp` with a bias and the
//! sinks as `attn_sinks`. Expert weights are MXFP4 (ggml type 39) when the checkpoint's are,
//! else float or whatever `--outtype` made of them.
//!
//! What llama.cpp fixes instead of storing is taken as it does: sliding-window layers every
//! other layer from the first (`attention.sliding_window_pattern` 2, unless the file gives a
//! pattern) and SwiGLU clamped at 7 with alpha 1.702. One choice differs: ggml's YaRN rounds
//! the correction range out to whole dimensions, while every GPT-OSS checkpoint says
//! `truncate: false` (OpenAI's reference and transformers do not round); the file is run as
//! its checkpoint is, so its logits are transformers'.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::{Header, TensorInfo, Value};
use crate::model::arch::moe::MAX_EXPERTS;
use crate::{Error, Result};

const ARCH: &str = "gpt-oss";

fn expect(tensors: &HashMap<&str, &TensorInfo>, name: &str, want: &[u64], what: &str) -> Result<()> {
    let t = tensors.get(name).ok_or_else(|| Error::format(format!("tensor {name}: missing")))?;
    if t.dims != want {
        return Err(Error::format(format!(
            "tensor {name}: dimensions {:?}, expected {want:?} ({what})",
            t.dims
        )));
    }
    Ok(())
}

/// Adds GPT-OSS's keys to `c`, the config made from the common metadata.
pub(super) fn add_config(h: &Header, c: &mut Map<String, Json>) -> Result<()> {
    let get = |k: &str| c.get(k).and_then(Json::as_u64).ok_or_else(|| Error::internal(format!("no {k}")));
    let (hidden, layers) = (get("hidden_size")?, get("num_hidden_layers")?);
    let experts = h.req_u64(ARCH, "expert_count")?;
    let top_k = h.req_u64(ARCH, "expert_used_count")?;
    if experts == 0 || experts > MAX_EXPERTS as u64 || top_k == 0 || top_k > experts {
        return Err(Error::format(format!(
            "metadata {ARCH}.expert_count {experts} / expert_used_count {top_k}: need 1 <= used <= count <= {MAX_EXPERTS}"
        )));
    }
    let width = h.req_u64(ARCH, "expert_feed_forward_length")?;
    let tensors: HashMap<&str, &TensorInfo> = h.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    for l in 0..layers {
        let t = |n: &str| format!("blk.{l}.{n}");
        expect(&tensors, &t("ffn_gate_inp.weight"), &[hidden, experts], "embedding_length, expert_count")?;
        expect(&tensors, &t("ffn_gate_inp.bias"), &[experts], "expert_count")?;
        for p in ["gate", "up"] {
            let what = "embedding_length, expert_feed_forward_length, expert_count";
            expect(&tensors, &t(&format!("ffn_{p}_exps.weight")), &[hidden, width, experts], what)?;
            expect(
                &tensors,
                &t(&format!("ffn_{p}_exps.bias")),
                &[width, experts],
                "expert width, expert_count",
            )?;
        }
        let what = "expert_feed_forward_length, embedding_length, expert_count";
        expect(&tensors, &t("ffn_down_exps.weight"), &[width, hidden, experts], what)?;
        expect(&tensors, &t("ffn_down_exps.bias"), &[hidden, experts], "embedding_length, expert_count")?;
        let heads = get("num_attention_heads")?;
        expect(&tensors, &t("attn_sinks.weight"), &[heads], "attention.head_count")?;
    }

    // Which layers slide: an array of booleans, or a period n (layer i slides when
    // i % n < n - 1); llama.cpp's default period for GPT-OSS is 2.
    let key = format!("{ARCH}.attention.sliding_window_pattern");
    let sliding: Vec<bool> = match h.get(&key) {
        Some(Value::Array(a)) => {
            if a.len() as u64 != layers {
                return Err(Error::format(format!(
                    "metadata {key}: {} entries for {layers} layers",
                    a.len()
                )));
            }
            a.iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(*b),
                    v => Err(Error::format(format!("metadata {key}: {v:?} is not a boolean"))),
                })
                .collect::<Result<_>>()?
        }
        Some(v) => {
            let n = v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::format(format!("metadata {key}: {v:?} is not a period")))?;
            (0..layers).map(|i| i % n < n - 1).collect()
        }
        None => (0..layers).map(|i| i % 2 == 0).collect(),
    };
    let window = h.req_u64(ARCH, "attention.sliding_window")?;
    let base = h.arch_f64(ARCH, "rope.freq_base")?;
    if let Some(swa) = h.arch_f64(ARCH, "rope.freq_base_swa")? {
        if Some(swa) != base {
            return Err(Error::unsupported(format!(
                "metadata {ARCH}.rope.freq_base_swa {swa}: a separate rope base for sliding layers is not supported"
            )));
        }
    }
    let types: Vec<&str> =
        sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect();

    c.insert("model_type".into(), "gpt_oss".into());
    c.insert("num_local_experts".into(), experts.into());
    c.insert("num_experts_per_tok".into(), top_k.into());
    c.insert("intermediate_size".into(), width.into());
    c.insert("sliding_window".into(), window.into());
    c.insert("layer_types".into(), types.into());
    c.insert("attention_bias".into(), tensors.contains_key("blk.0.attn_q.bias").into());
    c.insert("swiglu_alpha".into(), 1.702.into());
    c.insert("swiglu_limit".into(), 7.0.into());

    let ty = h.get(&format!("{ARCH}.rope.scaling.type")).and_then(Value::as_str).unwrap_or("none");
    let rope = match ty {
        // transformers' GPT-OSS default would be YaRN; a file that says none means none.
        "none" => serde_json::json!({"rope_type": "default"}),
        "yarn" => {
            let req = |k: &str| -> Result<f64> {
                h.arch_f64(ARCH, k)?.ok_or_else(|| Error::format(format!("metadata {ARCH}.{k}: missing")))
            };
            let mut rs = Map::new();
            rs.insert("rope_type".into(), "yarn".into());
            rs.insert("factor".into(), req("rope.scaling.factor")?.into());
            rs.insert(
                "original_max_position_embeddings".into(),
                h.req_u64(ARCH, "rope.scaling.original_context_length")?.into(),
            );
            rs.insert(
                "beta_fast".into(),
                h.arch_f64(ARCH, "rope.scaling.yarn_beta_fast")?.unwrap_or(32.0).into(),
            );
            rs.insert(
                "beta_slow".into(),
                h.arch_f64(ARCH, "rope.scaling.yarn_beta_slow")?.unwrap_or(1.0).into(),
            );
            rs.insert("truncate".into(), false.into()); // see the module doc
            Json::Object(rs)
        }
        other => {
            return Err(Error::unsupported(format!(
                "metadata {ARCH}.rope.scaling.type {other:?} is not supported (none, yarn)"
            )))
        }
    };
    c.insert("rope_scaling".into(), rope);
    Ok(())
}
