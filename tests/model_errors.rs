//! Bad checkpoints: each gives a clear error naming the file and the tensor, never a crash.

mod common;

use common::*;
use lmx::mlx::{io, ops, Array, Dtype};
use lmx::model::{LoadParams, Model};
use lmx::ErrorKind;

fn load_err(dir: &std::path::Path) -> lmx::Error {
    match Model::load(dir, &LoadParams::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

/// Rewrites model.safetensors of `dir` through `edit`.
fn edit_weights(dir: &std::path::Path, edit: impl FnOnce(&mut Vec<(String, Array)>)) {
    let path = dir.join("model.safetensors");
    let loaded = io::load_safetensors(&path).unwrap();
    let mut v: Vec<(String, Array)> = loaded.tensors.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut v);
    let refs: Vec<(&str, &Array)> = v.iter().map(|(n, a)| (n.as_str(), a)).collect();
    io::save_safetensors(&path, &refs, &[("format", "pt")]).unwrap();
}

#[test]
fn a_missing_tensor_is_named_with_the_files_searched() {
    let t = copy_fixture("qwen3", "missing");
    edit_weights(&t.0, |v| v.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight"));
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("missing tensor model.layers.1.mlp.up_proj.weight"), "{e}");
    assert!(e.message.contains("model.safetensors"), "{e}");
}

#[test]
fn an_unexpected_shape_names_file_tensor_and_both_shapes() {
    let t = copy_fixture("qwen3", "shape");
    edit_weights(&t.0, |v| {
        for (n, a) in v.iter_mut() {
            if n == "model.layers.0.self_attn.q_proj.weight" {
                *a = ops::zeros(&[64, 32], Dtype::F32).unwrap();
            }
        }
    });
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("model.safetensors: tensor model.layers.0.self_attn.q_proj.weight: shape [64, 32], expected [128, 64]"), "{e}");
}

#[test]
fn an_unsupported_dtype_names_file_and_tensor() {
    let t = copy_fixture("qwen3", "dtype");
    edit_weights(&t.0, |v| {
        for (n, a) in v.iter_mut() {
            if n == "model.norm.weight" {
                *a = ops::astype(a, Dtype::I32).unwrap();
            }
        }
    });
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("model.safetensors: tensor model.norm.weight: dtype int32"), "{e}");
}

#[test]
fn a_truncated_file_names_file_and_tensor() {
    let t = copy_fixture("qwen3", "trunc");
    let p = t.0.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("model.safetensors") && e.message.contains("truncated: tensor "), "{e}");
}

#[test]
fn a_corrupt_header_names_the_file() {
    let t = copy_fixture("qwen3", "corrupt");
    let p = t.0.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    for b in &mut bytes[8..40] {
        *b = b'#';
    }
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("model.safetensors: corrupt safetensors header"), "{e}");
}

#[test]
fn a_missing_shard_is_not_found() {
    let t = copy_fixture("llama_tied", "shard");
    std::fs::remove_file(t.0.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("model-00002-of-00002.safetensors")
            && e.message.contains("model.safetensors.index.json"),
        "{e}"
    );
}

#[test]
fn an_unknown_model_type_lists_the_supported_ones() {
    let t = copy_fixture("qwen3", "arch");
    let cfg = std::fs::read_to_string(t.0.join("config.json")).unwrap().replace("\"qwen3\"", "\"mamba\"");
    std::fs::write(t.0.join("config.json"), cfg).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    // The message lists lmx::model::arch::SUPPORTED, the one list of what loads.
    let listed = lmx::model::arch::SUPPORTED.join(", ");
    assert!(
        e.message.contains(&format!("model_type \"mamba\" is not supported (supported: {listed})")),
        "{e}"
    );
}

#[test]
fn missing_files_and_folders_are_not_found() {
    let e = load_err(std::path::Path::new("/nonexistent/model"));
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("/nonexistent/model"));

    let t = copy_fixture("qwen3", "nocfg");
    std::fs::remove_file(t.0.join("config.json")).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("config.json"), "{e}");

    let t = copy_fixture("qwen3", "notok");
    std::fs::remove_file(t.0.join("tokenizer.json")).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("tokenizer.json"), "{e}");
}

#[test]
fn a_quantized_layer_without_a_quantization_block_is_an_error() {
    let t = copy_fixture("qwen3_q4", "noquant");
    let p = t.0.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let o = cfg.as_object_mut().unwrap();
    o.remove("quantization");
    o.remove("quantization_config");
    std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.message.contains(".scales: the layer is quantized but config.json has no quantization block"),
        "{e}"
    );
}

#[test]
fn an_invalid_config_names_the_key() {
    let t = copy_fixture("qwen3", "badcfg");
    let p = t.0.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["num_attention_heads"] = serde_json::json!(3);
    std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("num_attention_heads 3 is not a multiple of num_key_value_heads"), "{e}");

    std::fs::write(&p, "{\"model_type\": ").unwrap();
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("config.json: invalid JSON"), "{e}");
}

/// phi3's fused tensors split into the layout most checkpoints use (q/k/v and gate/up apart).
fn unfuse(v: &mut Vec<(String, Array)>, q: i32, kv: i32, inter: i32) {
    let mut out = Vec::new();
    for (n, a) in v.drain(..) {
        let mut split = |names: &[&str], widths: &[i32], from: &str| {
            let mut at = 0;
            for (name, w) in names.iter().zip(widths) {
                out.push((n.replace(from, name), ops::slice_axis(&a, 0, at, at + w).unwrap()));
                at += w;
            }
        };
        if n.ends_with("self_attn.qkv_proj.weight") {
            split(&["q_proj", "k_proj", "v_proj"], &[q, kv, kv], "qkv_proj");
        } else if n.ends_with("mlp.gate_up_proj.weight") {
            split(&["gate_proj", "up_proj"], &[inter, inter], "gate_up_proj");
        } else {
            out.push((n, a));
        }
    }
    *v = out;
}

fn prompt_logits(m: &Model, case: &str) -> Vec<f32> {
    let r = json(&fixtures().join(case).join("reference.json"));
    let p: Vec<i32> = ids(&r["prompt_ids"]).iter().map(|&i| i as i32).collect();
    let t = Array::from_slice(&p, &[1, p.len() as i32]).unwrap();
    let mut cache = lmx::model::KvCache::new(m.spec());
    m.transformer().forward(&t, &mut cache).unwrap().to_f32_vec().unwrap()
}

#[test]
fn phi3_loads_the_unfused_layout_as_the_same_model() {
    let fused = Model::load(&fixtures().join("phi3"), &LoadParams::default()).unwrap();
    let t = copy_fixture("phi3", "unfused");
    // 4 heads and 2 KV heads of 16; intermediate 128.
    edit_weights(&t.0, |v| unfuse(v, 64, 32, 128));
    let apart = Model::load(&t.0, &LoadParams::default()).unwrap();
    // The same matrices, concatenated at load: the same products.
    assert_eq!(prompt_logits(&apart, "phi3"), prompt_logits(&fused, "phi3"));
}

#[test]
fn a_layer_stored_both_fused_and_apart_is_refused() {
    let t = copy_fixture("phi3", "both");
    edit_weights(&t.0, |v| {
        let mut apart = v.clone();
        unfuse(&mut apart, 64, 32, 128);
        v.extend(apart.into_iter().filter(|(n, _)| n == "model.layers.1.self_attn.k_proj.weight"));
    });
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    for want in [
        "model.safetensors",
        "model.layers.1.self_attn.qkv_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "both fused and apart",
    ] {
        assert!(e.message.contains(want), "{e} (want {want:?})");
    }
}

/// `case`'s config.json with `edit` applied.
fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
}

#[test]
fn moe_config_errors_name_the_field() {
    let cases: [(&str, &str, serde_json::Value, &str); 10] = [
        (
            "qwen3_moe",
            "num_experts_per_tok",
            serde_json::json!(9),
            "num_experts_per_tok 9 is more than num_experts 8",
        ),
        (
            "mixtral",
            "num_experts_per_tok",
            serde_json::json!(5),
            "num_experts_per_tok 5 is more than num_local_experts 4",
        ),
        (
            "qwen3_moe",
            "num_experts",
            serde_json::json!(1 << 20),
            "num_experts: 1048576 is larger than liblmx allows",
        ),
        ("qwen3_moe", "mlp_only_layers", serde_json::json!([6]), "mlp_only_layers: 6 is not a layer index"),
        ("qwen3_moe", "moe_intermediate_size", serde_json::Value::Null, "moe_intermediate_size: missing"),
        (
            "qwen2_moe",
            "shared_expert_intermediate_size",
            serde_json::Value::Null,
            "shared_expert_intermediate_size: missing",
        ),
        (
            "gpt_oss",
            "num_experts_per_tok",
            serde_json::json!(9),
            "num_experts_per_tok 9 is more than num_local_experts 8",
        ),
        ("gpt_oss", "swiglu_limit", serde_json::json!(-1.0), "swiglu_limit: -1 must be a finite number > 0"),
        (
            "gpt_oss",
            "swiglu_alpha",
            serde_json::json!(1e300),
            "swiglu_alpha: 1e300 is larger than liblmx allows",
        ),
        (
            "gpt_oss",
            "layer_types",
            serde_json::json!(["full_attention"]),
            "layer_types has 1 entries for 4 layers",
        ),
    ];
    for (case, key, value, want) in cases {
        let t = copy_fixture(case, "moecfg");
        edit_config(&t.0, |c| {
            if value.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = value.clone();
            }
        });
        let e = load_err(&t.0);
        assert_eq!(e.kind, ErrorKind::Format, "{case} {key}: {e}");
        assert!(e.message.contains("config.json") && e.message.contains(want), "{case} {key}: {e}");
    }
}

#[test]
fn a_bad_expert_tensor_is_named_with_its_shape() {
    // One expert of one layer with the wrong width: the per-expert layout is checked tensor by
    // tensor before anything is stacked.
    let t = copy_fixture("qwen3_moe", "expert");
    edit_weights(&t.0, |v| {
        for (n, a) in v.iter_mut() {
            if n == "model.layers.5.mlp.experts.3.up_proj.weight" {
                *a = ops::zeros(&[16, 64], Dtype::F32).unwrap();
            }
        }
    });
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.message.contains("model.safetensors: tensor model.layers.5.mlp.experts.3.up_proj.weight: shape [16, 64], expected [32, 64]"),
        "{e}"
    );

    // A missing expert.
    let t = copy_fixture("mixtral", "expert");
    edit_weights(&t.0, |v| v.retain(|(n, _)| n != "model.layers.1.block_sparse_moe.experts.2.w2.weight"));
    let e = load_err(&t.0);
    assert!(e.message.contains("missing tensor model.layers.1.block_sparse_moe.experts.2.w2.weight"), "{e}");

    // A stacked tensor with too few experts (mlx-lm's layout).
    let t = copy_fixture("qwen2_moe_mlx", "expert");
    edit_weights(&t.0, |v| {
        for (n, a) in v.iter_mut() {
            if n == "model.layers.0.mlp.switch_mlp.down_proj.weight" {
                *a = ops::zeros(&[7, 64, 32], Dtype::F32).unwrap();
            }
        }
    });
    let e = load_err(&t.0);
    assert!(
        e.message.contains(
            "tensor model.layers.0.mlp.switch_mlp.down_proj.weight: shape [7, 64, 32], expected [8, 64, 32]"
        ),
        "{e}"
    );
}

#[test]
fn a_gpt_oss_expert_tensor_in_the_wrong_orientation_is_named() {
    // transformers' GPT-OSS stores gate_up_proj [E, hidden, 2I]; OpenAI's original [E, 2I,
    // hidden] orientation is refused by name, not read transposed.
    let t = copy_fixture("gpt_oss", "expert");
    edit_weights(&t.0, |v| {
        for (n, a) in v.iter_mut() {
            if n == "model.layers.2.mlp.experts.gate_up_proj" {
                *a = ops::zeros(&[8, 128, 64], Dtype::F32).unwrap();
            }
        }
    });
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.message.contains(
            "tensor model.layers.2.mlp.experts.gate_up_proj: shape [8, 128, 64], expected [8, 64, 128]"
        ),
        "{e}"
    );
    // A missing sink.
    let t = copy_fixture("gpt_oss", "expert");
    edit_weights(&t.0, |v| v.retain(|(n, _)| n != "model.layers.1.self_attn.sinks"));
    let e = load_err(&t.0);
    assert!(e.message.contains("missing tensor model.layers.1.self_attn.sinks"), "{e}");
    // MXFP4 is read for stacked experts only: a checkpoint claiming it for every layer is
    // refused at the first other layer, by name.
    let t = copy_fixture("gpt_oss_q4", "expert");
    edit_config(&t.0, |c| c["quantization"]["mode"] = serde_json::json!("mxfp4"));
    let e = load_err(&t.0);
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(
        e.message.contains("model.embed_tokens: quantization mode mxfp4 is read for stacked experts only"),
        "{e}"
    );
    // MXFP4 has 4 bits and groups of 32.
    let t = copy_fixture("gpt_oss_mxfp4", "expert");
    edit_config(&t.0, |c| {
        c["quantization"]["model.layers.0.mlp.experts.up_proj"]["group_size"] = serde_json::json!(64)
    });
    let e = load_err(&t.0);
    assert!(
        e.message.contains("quantization mode \"mxfp4\" has bits 4 and group_size 32, not 4 and 64"),
        "{e}"
    );
}

#[test]
fn adapters_on_expert_layers_are_refused_by_name() {
    use lmx::model::nn::lora::{LoraConfig, LoraWeights, Target};
    let m = Model::load(&fixtures().join("qwen3_moe"), &LoadParams::default()).unwrap();
    let key = lmx::mlx::random::key(0).unwrap();
    let config =
        |targets: Vec<Target>| LoraConfig { rank: 4, scale: 1.0, dropout: 0.0, num_layers: 6, targets };
    // Layer 1 is sparse: an adapter on its MLP is refused, naming it.
    let e = match LoraWeights::init(config(Target::ALL.to_vec()), m.spec(), &key) {
        Ok(_) => panic!("an adapter on expert layers was made"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.message.contains("model.layers.1.mlp.gate_proj") && e.message.contains("mixture of experts"),
        "{e}"
    );
    // Attention-only adapters are fine on every layer.
    let w = LoraWeights::init(config(vec![Target::Q, Target::V]), m.spec(), &key).unwrap();
    assert!(w.layer(1).unwrap().any(&[Target::Q]));
}

#[test]
fn deepseek_config_errors_name_the_field() {
    use serde_json::json;
    let cases: Vec<(&str, &str, serde_json::Value, &str, ErrorKind)> = vec![
        ("deepseek_v2", "kv_lora_rank", serde_json::Value::Null, "kv_lora_rank: missing", ErrorKind::Format),
        (
            "deepseek_v3",
            "qk_rope_head_dim",
            json!(15),
            "qk_rope_head_dim: 15 must be even",
            ErrorKind::Format,
        ),
        (
            "deepseek_v3",
            "qk_nope_head_dim",
            json!(1 << 20),
            "qk_nope_head_dim: 1048576 is larger than liblmx allows",
            ErrorKind::Format,
        ),
        (
            "deepseek_v3",
            "n_group",
            json!(3),
            "n_group: 3 does not divide n_routed_experts 8",
            ErrorKind::Format,
        ),
        ("deepseek_v3", "topk_group", json!(3), "topk_group: 3 is more than n_group 2", ErrorKind::Format),
        (
            "deepseek_v2",
            "num_experts_per_tok",
            json!(9),
            "num_experts_per_tok: 9 is more than n_routed_experts 8",
            ErrorKind::Format,
        ),
        (
            "deepseek_v2",
            "first_k_dense_replace",
            json!(-1),
            "first_k_dense_replace: -1 is not an integer in 0..=2",
            ErrorKind::Format,
        ),
        (
            "deepseek_v3",
            "n_shared_experts",
            json!(1 << 20),
            "n_shared_experts: 1048576 is not an integer in 0..=4096",
            ErrorKind::Format,
        ),
        (
            "deepseek_v2",
            "topk_method",
            json!("noaux_tc"),
            "topk_method \"noaux_tc\" is not supported (supported: greedy, group_limited_greedy)",
            ErrorKind::Unsupported,
        ),
        (
            "deepseek_v3",
            "scoring_func",
            json!("softmax"),
            "scoring_func \"softmax\" is not supported for this model_type (supported: sigmoid)",
            ErrorKind::Unsupported,
        ),
        (
            "deepseek_v3",
            "routed_scaling_factor",
            json!(-2.5),
            "routed_scaling_factor: -2.5 must be a finite number > 0",
            ErrorKind::Format,
        ),
        ("deepseek_v2", "mlp_bias", json!(true), "mlp_bias true is not supported", ErrorKind::Unsupported),
    ];
    for (case, key, value, want, kind) in cases {
        let t = copy_fixture(case, "dscfg");
        edit_config(&t.0, |c| {
            if value.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = value.clone();
            }
        });
        let e = load_err(&t.0);
        assert_eq!(e.kind, kind, "{case} {key}: {e}");
        assert!(e.message.contains("config.json") && e.message.contains(want), "{case} {key}: {e}");
    }
}

/// DeepSeek-V3's router needs its correction bias: a checkpoint without it is an error that
/// names the tensor.
#[test]
fn a_deepseek_v3_router_without_its_correction_bias_is_refused() {
    let t = copy_fixture("deepseek_v3", "dsbias");
    edit_weights(&t.0, |v| v.retain(|(k, _)| !k.ends_with("e_score_correction_bias")));
    let e = load_err(&t.0);
    assert!(e.message.contains("model.layers.1.mlp.gate.e_score_correction_bias"), "{e}");
}

#[test]
fn adapters_on_latent_attention_are_refused_by_name() {
    use lmx::model::nn::lora::{LoraConfig, LoraWeights, Target};
    let m = Model::load(&fixtures().join("deepseek_v3"), &LoadParams::default()).unwrap();
    let key = lmx::mlx::random::key(0).unwrap();
    let config = LoraConfig { rank: 4, scale: 1.0, dropout: 0.0, num_layers: 2, targets: vec![Target::Q] };
    let e = match LoraWeights::init(config, m.spec(), &key) {
        Ok(_) => panic!("an adapter on latent attention was made"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.message.contains("model.layers.0.self_attn.q_proj")
            && e.message.contains("\"deepseek_v3\" uses multi-head latent attention"),
        "{e}"
    );
}
