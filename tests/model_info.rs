//! What `ModelInfo` reports for the fixtures.

mod common;

use common::*;
use lmx::model::{LoadParams, Model};

#[test]
fn info_describes_architecture_sizes_quantization_and_template() {
    let m = Model::load(&fixtures().join("llama_rope3_q4"), &LoadParams::default()).unwrap();
    let i = m.info();
    assert_eq!((i.architecture.as_str(), i.model_type.as_str()), ("llama", "llama"));
    assert_eq!((i.num_layers, i.hidden_size, i.num_heads, i.num_kv_heads, i.head_dim), (2, 64, 4, 2, 32));
    assert_eq!((i.quant_bits, i.quant_group_size), (4, 32));
    assert_eq!(i.dtype, "float32");
    assert_eq!(i.chat_template, "tokenizer_config.json");
    assert_eq!(i.context_length, 256);
    // Packed 4-bit weights with float32 scales and biases per group of 32, float32 norms,
    // embeddings included: far below the dense model's bytes.
    assert!(i.weight_bytes > 0);

    let dense = Model::load(&fixtures().join("llama_rope3"), &LoadParams::default()).unwrap();
    // The quantized model counts its logical parameters: the same as the dense one.
    assert_eq!(dense.info().param_count, i.param_count);
    assert_eq!(dense.info().quant_bits, 0);
    assert_eq!(dense.info().weight_bytes, 4 * dense.info().param_count);
    assert!(i.weight_bytes < dense.info().weight_bytes / 3);
    // Parameters: embeddings, head, per layer q/k/v/o (with biases), MLP (with biases), norms.
    let (h, v, hd, heads, kv, inter) = (64u64, dense.info().vocab_size as u64, 32u64, 4u64, 2u64, 128u64);
    let attn = h * heads * hd + heads * hd + 2 * (h * kv * hd + kv * hd) + heads * hd * h + h;
    let mlp = 2 * (h * inter + inter) + inter * h + h;
    assert_eq!(dense.info().param_count, 2 * v * h + 2 * (attn + mlp + 2 * h) + h);

    let p = LoadParams { context_length: Some(64), dtype: Some(lmx::mlx::Dtype::BF16), device: None };
    let bf = Model::load(&fixtures().join("qwen3"), &p).unwrap();
    assert_eq!(bf.info().context_length, 64);
    assert_eq!(bf.info().dtype, "bfloat16");
}

#[test]
fn a_model_without_a_template_gets_the_builtin_one_for_its_vocabulary() {
    for (case, builtin) in
        [("qwen3", "builtin:chatml"), ("gemma3", "builtin:gemma"), ("llama_tied", "builtin:llama3")]
    {
        let t = copy_fixture(case, "notpl");
        let p = t.0.join("tokenizer_config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        cfg.as_object_mut().unwrap().remove("chat_template");
        std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
        let m = Model::load(&t.0, &LoadParams::default()).unwrap();
        assert_eq!(m.info().chat_template, builtin, "{case}");
        let text = m
            .chat_template()
            .render(
                &[lmx::model::Message::new("user", "hi")],
                true,
                &Default::default(),
                m.tokenizer().bos_text(),
                m.tokenizer().eos_text(),
            )
            .unwrap();
        assert!(text.contains("hi"), "{case}: {text}");
    }
}
