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
    assert!(e.message.contains("model_type \"mamba\" is not supported (supported: llama, mistral, qwen2, qwen3, gemma3, gemma3_text)"), "{e}");
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
