//! The mixture-of-experts part of a GGUF file's configuration: Qwen2-MoE (`qwen2moe`),
//! Qwen3-MoE (`qwen3moe`) and Mixtral (architecture `llama` with `llama.expert_count` > 0), as
//! llama.cpp's converter writes them. Its keys become the ones their Hugging Face configs
//! use, so the folder path's MoE families build the model; every expert tensor's dimensions
//! are checked here against the metadata, so a damaged file is an error naming the GGUF tensor
//! or key rather than a shape mismatch under a name the file does not have.
//!
//! llama.cpp stores each layer's experts stacked: `blk.N.ffn_{gate,up}_exps.weight` with ggml
//! dimensions [hidden, expert width, experts], `ffn_down_exps` [expert width, hidden,
//! experts], the router `ffn_gate_inp` [hidden, experts]; Qwen2-MoE adds a shared expert
//! (`ffn_{gate,up,down}_shexp`) and its gate `ffn_gate_inp_shexp` [hidden].
//!
//! What llama.cpp fixes instead of storing is taken as it does: renormalised top-k weights
//! for Qwen3-MoE and Mixtral, not for Qwen2-MoE, unless the file says otherwise in
//! `<arch>.expert_weights_norm`; no sliding window for Mixtral unless the file gives
//! `llama.attention.sliding_window`.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::{Header, TensorInfo, Value};
use crate::model::arch::moe::MAX_EXPERTS;
use crate::model::arch::MAX_LAYERS;
use crate::{Error, Result};

/// The Hugging Face `model_type` of a GGUF file whose architecture is `arch` when it holds
/// experts, None for a dense one. A dense file with expert tensors is refused rather than
/// loaded without them.
pub(super) fn model_type(h: &Header, arch: &str) -> Result<Option<&'static str>> {
    let t = match arch {
        "qwen2moe" => Some("qwen2_moe"),
        "qwen3moe" => Some("qwen3_moe"),
        "llama" if h.arch_u64(arch, "expert_count")?.unwrap_or(0) > 0 => Some("mixtral"),
        _ => None,
    };
    // An architecture liblmx does not load is refused as such by the caller.
    if t.is_none() && super::SUPPORTED.contains(&arch) {
        if let Some(e) =
            h.tensors.iter().find(|t| t.name.contains("_exps.") || t.name.contains(".ffn_gate_inp"))
        {
            return Err(Error::format(format!(
                "tensor {}: experts in a {arch} file without {arch}.expert_count",
                e.name
            )));
        }
    }
    Ok(t)
}

/// Checks that tensor `name` of `tensors` has the ggml dimensions `want` (`what` says what
/// they are).
fn expect_dims(tensors: &HashMap<&str, &TensorInfo>, name: &str, want: &[u64], what: &str) -> Result<()> {
    let t = tensors.get(name).ok_or_else(|| Error::format(format!("tensor {name}: missing")))?;
    // Trailing dimensions of 1 are the same tensor to ggml: llama.cpp declares
    // `ffn_gate_inp_shexp` [hidden] and its converter writes [hidden, 1].
    let trimmed: Vec<u64> = {
        let mut d = t.dims.clone();
        while d.len() > want.len() && d.last() == Some(&1) {
            d.pop();
        }
        d
    };
    if trimmed != want {
        return Err(Error::format(format!(
            "tensor {name}: dimensions {:?}, expected {want:?} ({what})",
            t.dims
        )));
    }
    Ok(())
}

/// A per-file width that llama.cpp lets be a per-layer array: one value (an array whose
/// entries all agree counts as one).
fn width(h: &Header, arch: &str, key: &str) -> Result<Option<u64>> {
    let k = format!("{arch}.{key}");
    let Some(v) = h.get(&k) else { return Ok(None) };
    let values: Vec<&Value> = match v.as_array() {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    let mut out = None;
    for v in values {
        let n = v.as_u64().ok_or_else(|| Error::format(format!("metadata {k}: {v:?} is not a count")))?;
        // A zero entry is a dense layer's.
        if n == 0 {
            continue;
        }
        if out.is_some_and(|o| o != n) {
            return Err(Error::unsupported(format!(
                "metadata {k}: experts of different widths per layer are not supported"
            )));
        }
        out = Some(n);
    }
    Ok(out)
}

/// Adds the experts' keys to `c`, the config made from the dense part of the metadata
/// (`hidden_size`, `num_hidden_layers`, `intermediate_size` already in it).
pub(super) fn add_config(h: &Header, arch: &str, model_type: &str, c: &mut Map<String, Json>) -> Result<()> {
    let count = |key: &str| -> Result<u64> {
        let v = h.req_u64(arch, key)?;
        if v == 0 || v > MAX_EXPERTS as u64 {
            return Err(Error::format(format!("metadata {arch}.{key}: {v} is not in 1..={MAX_EXPERTS}")));
        }
        Ok(v)
    };
    let experts = count("expert_count")?;
    let top_k = count("expert_used_count")?;
    if top_k > experts {
        return Err(Error::format(format!(
            "metadata {arch}.expert_used_count {top_k} is more than {arch}.expert_count {experts}"
        )));
    }
    let get = |k: &str| c.get(k).and_then(Json::as_u64).ok_or_else(|| Error::internal(format!("no {k}")));
    let (hidden, layers, ff) = (get("hidden_size")?, get("num_hidden_layers")?, get("intermediate_size")?);
    let expert_width = match (width(h, arch, "expert_feed_forward_length")?, model_type) {
        (Some(w), _) => w,
        // Mixtral's experts are its feed-forward width; llama.cpp's Qwen default otherwise.
        (None, "mixtral") => ff,
        (None, _) => ff / top_k,
    };
    let norm = match h.get(&format!("{arch}.expert_weights_norm")) {
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::format(format!("metadata {arch}.expert_weights_norm: {v:?} is not a boolean")))
        }
        None => model_type != "qwen2_moe",
    };
    if model_type == "mixtral" && !norm {
        return Err(Error::unsupported(format!(
            "metadata {arch}.expert_weights_norm false: Mixtral's expert weights are always renormalised"
        )));
    }
    let shared = match model_type {
        "qwen2_moe" => {
            Some(h.arch_u64(arch, "expert_shared_feed_forward_length")?.filter(|&n| n > 0).unwrap_or(ff))
        }
        _ => None,
    };

    if layers > MAX_LAYERS as u64 {
        return Err(Error::format(format!(
            "metadata {arch}.block_count {layers} is more than liblmx allows ({MAX_LAYERS})"
        )));
    }
    // Which layers have experts, from their routers; each one's tensors checked.
    let tensors: HashMap<&str, &TensorInfo> = h.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let has = |name: &str| tensors.contains_key(name);
    let mut dense = Vec::new();
    for l in 0..layers {
        let router = format!("blk.{l}.ffn_gate_inp.weight");
        if !has(&router) {
            if model_type == "mixtral" {
                return Err(Error::format(format!(
                    "tensor {router}: missing ({arch}.expert_count {experts}: every layer of a Mixtral file has experts)"
                )));
            }
            dense.push(l);
            continue;
        }
        expect_dims(&tensors, &router, &[hidden, experts], "embedding_length, expert_count")?;
        for p in ["gate", "up"] {
            let name = format!("blk.{l}.ffn_{p}_exps.weight");
            expect_dims(
                &tensors,
                &name,
                &[hidden, expert_width, experts],
                "embedding_length, expert width, expert_count",
            )?;
        }
        let down = format!("blk.{l}.ffn_down_exps.weight");
        expect_dims(
            &tensors,
            &down,
            &[expert_width, hidden, experts],
            "expert width, embedding_length, expert_count",
        )?;
        if let Some(s) = shared {
            for p in ["gate", "up"] {
                let name = format!("blk.{l}.ffn_{p}_shexp.weight");
                expect_dims(&tensors, &name, &[hidden, s], "embedding_length, shared expert width")?;
            }
            let name = format!("blk.{l}.ffn_down_shexp.weight");
            expect_dims(&tensors, &name, &[s, hidden], "shared expert width, embedding_length")?;
            expect_dims(
                &tensors,
                &format!("blk.{l}.ffn_gate_inp_shexp.weight"),
                &[hidden],
                "embedding_length",
            )?;
        }
    }
    if dense.len() as u64 == layers {
        return Err(Error::format(format!(
            "metadata {arch}.expert_count is {experts} but no layer has a router (blk.N.ffn_gate_inp.weight)"
        )));
    }

    if model_type == "mixtral" {
        c.insert("num_local_experts".into(), experts.into());
        c.insert("intermediate_size".into(), expert_width.into());
        if let Some(w) = h.arch_u64(arch, "attention.sliding_window")?.filter(|&w| w > 0) {
            c.insert("sliding_window".into(), w.into());
        }
    } else {
        c.insert("num_experts".into(), experts.into());
        c.insert("moe_intermediate_size".into(), expert_width.into());
        c.insert("norm_topk_prob".into(), norm.into());
        c.insert("decoder_sparse_step".into(), 1.into());
        c.insert("mlp_only_layers".into(), dense.into());
    }
    if let Some(s) = shared {
        c.insert("shared_expert_intermediate_size".into(), s.into());
    }
    if model_type == "qwen2_moe" {
        c.insert("qkv_bias".into(), has("blk.0.attn_q.bias").into());
    }
    c.insert("num_experts_per_tok".into(), top_k.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn header(arch: &str, tensors: &[&str]) -> Header {
        let metadata = BTreeMap::from([("general.architecture".to_string(), Value::Str(arch.into()))]);
        let tensors = tensors
            .iter()
            .map(|n| TensorInfo {
                name: n.to_string(),
                dims: vec![32, 4],
                ggml_type: 0,
                offset: 0,
                bytes: 512,
            })
            .collect();
        Header { version: 3, metadata, tensors, data_start: 0 }
    }

    #[test]
    fn moe_files_of_refused_architectures_are_refused_as_such() {
        let e = header("dbrx", &["blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_exps.weight"])
            .config_json()
            .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported, "{e}");
        assert!(e.message.contains("GGUF architecture \"dbrx\" is not supported"), "{e}");
        let e = header("qwen3", &["blk.0.ffn_gate_exps.weight"]).config_json().unwrap_err();
        assert!(e.message.contains("tensor blk.0.ffn_gate_exps.weight: experts in a qwen3 file"), "{e}");
    }
}
