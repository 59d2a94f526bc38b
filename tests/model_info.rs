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
                None,
                &Default::default(),
                m.tokenizer().bos_text(),
                m.tokenizer().eos_text(),
            )
            .unwrap();
        assert!(text.contains("hi"), "{case}: {text}");
    }
}

fn c_path(p: &std::path::Path) -> std::ffi::CString {
    std::ffi::CString::new(p.to_str().unwrap()).unwrap()
}

fn desc() -> lmx::ffi::model::lmx_model_desc {
    // SAFETY: integers, floats and char arrays: all zero is a valid value.
    let mut d: lmx::ffi::model::lmx_model_desc = unsafe { std::mem::zeroed() };
    d.struct_size = std::mem::size_of_val(&d);
    d
}

fn name(field: &[std::ffi::c_char]) -> String {
    // SAFETY: the library writes NUL-terminated strings into the fields.
    unsafe { std::ffi::CStr::from_ptr(field.as_ptr()) }.to_string_lossy().into_owned()
}

/// lmx_model_inspect reads what lmx_model_load reports, from config.json alone.
#[test]
fn info_reports_experts_and_active_parameters_of_moe_models() {
    // qwen3_moe: layers 1 and 5 of 6 route each token to 2 of 8 experts (width 32, hidden 64);
    // the other four layers are dense.
    let m = Model::load(&fixtures().join("qwen3_moe"), &LoadParams::default()).unwrap();
    let i = m.info();
    assert_eq!((i.architecture.as_str(), i.model_type.as_str()), ("qwen3_moe", "qwen3_moe"));
    assert_eq!((i.num_experts, i.experts_per_token), (8, 2));
    let per_expert = 3 * 32 * 64u64;
    assert_eq!(i.param_count - i.active_param_count, 2 * (8 - 2) * per_expert);
    // The quantized twin counts the same logical parameters.
    let q = Model::load(&fixtures().join("qwen3_moe_q4"), &LoadParams::default()).unwrap();
    assert_eq!(
        (q.info().param_count, q.info().active_param_count, q.info().num_experts),
        (i.param_count, i.active_param_count, 8)
    );
    // The three expert layouts hold the same parameters.
    let fused = Model::load(&fixtures().join("qwen3_moe_fused"), &LoadParams::default()).unwrap();
    assert_eq!(fused.info().param_count, i.param_count);
    // qwen2_moe: a shared expert (width 96, plus its [1, 64] gate) runs on every token.
    let s = Model::load(&fixtures().join("qwen2_moe"), &LoadParams::default()).unwrap();
    let shared = 3 * 96 * 64 + 64;
    let router = 8 * 64;
    let attn = 64 * 64 + 64 + 2 * (64 * 32 + 32) + 64 * 64;
    let v = s.info().vocab_size as u64;
    assert_eq!(
        s.info().param_count,
        2 * v * 64 + 2 * (attn + router + 8 * per_expert + shared + 2 * 64) + 64
    );
    assert_eq!(s.info().param_count - s.info().active_param_count, 2 * 6 * per_expert);
    // The C description says the same.
    let path = c_path(&fixtures().join("qwen3_moe"));
    let mut m = std::ptr::null_mut();
    assert_eq!(
        lmx::ffi::model::lmx_model_load(path.as_ptr(), std::ptr::null(), &mut m),
        lmx::ffi::lmx_status::LMX_OK
    );
    let mut d = desc();
    assert_eq!(lmx::ffi::model::lmx_model_info(m, &mut d), lmx::ffi::lmx_status::LMX_OK);
    lmx::ffi::model::lmx_model_free(m);
    assert_eq!(
        (d.num_experts, d.experts_per_token, d.param_count, d.active_param_count),
        (8, 2, i.param_count, i.active_param_count)
    );
    // A dense model: no experts, every parameter active.
    let d = Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap();
    assert_eq!((d.info().num_experts, d.info().experts_per_token), (0, 0));
    assert_eq!(d.info().active_param_count, d.info().param_count);
}

#[test]
fn inspect_agrees_with_load_for_every_fixture() {
    use lmx::ffi::inspect::lmx_model_inspect;
    use lmx::ffi::lmx_status;
    use lmx::ffi::model::{lmx_model_free, lmx_model_info, lmx_model_load};
    for case in cases() {
        let path = c_path(&fixtures().join(&case));
        let mut got = desc();
        assert_eq!(lmx_model_inspect(path.as_ptr(), &mut got), lmx_status::LMX_OK, "{case}");
        let mut m = std::ptr::null_mut();
        assert_eq!(lmx_model_load(path.as_ptr(), std::ptr::null(), &mut m), lmx_status::LMX_OK);
        let mut want = desc();
        assert_eq!(lmx_model_info(m, &mut want), lmx_status::LMX_OK);
        lmx_model_free(m);
        let sizes = |d: &lmx::ffi::model::lmx_model_desc| {
            (
                d.num_layers,
                d.hidden_size,
                d.num_heads,
                d.num_kv_heads,
                d.head_dim,
                d.vocab_size,
                d.context_length,
            )
        };
        assert_eq!(sizes(&got), sizes(&want), "{case}");
        assert_eq!(
            (got.quant_bits, got.quant_group_size),
            (want.quant_bits, want.quant_group_size),
            "{case}"
        );
        assert_eq!(
            (got.num_experts, got.experts_per_token),
            (want.num_experts, want.experts_per_token),
            "{case}"
        );
        for (g, w) in [
            (&got.architecture[..], &want.architecture[..]),
            (&got.model_type, &want.model_type),
            (&got.format, &want.format),
        ] {
            assert_eq!(name(g), name(w), "{case}");
        }
        // Nothing that needs the weights or the tokenizer.
        assert_eq!(
            (got.param_count, got.weight_bytes, name(&got.dtype), name(&got.tokenizer)),
            (0, 0, String::new(), String::new())
        );
    }
}

#[test]
fn inspect_refuses_what_load_refuses() {
    use lmx::ffi::inspect::lmx_model_inspect;
    use lmx::ffi::lmx_status::*;
    let t = TempDir::new("inspect");
    let mut d = desc();
    let cases = [
        (t.0.join("missing"), LMX_STATUS_NOT_FOUND),
        (t.0.clone(), LMX_STATUS_NOT_FOUND), // a folder without config.json
        (fixtures().join("qwen3").join("tokenizer.json"), LMX_STATUS_INVALID_ARGUMENT),
    ];
    for (p, want) in cases {
        assert_eq!(lmx_model_inspect(c_path(&p).as_ptr(), &mut d), want, "{}", p.display());
    }
    std::fs::write(t.0.join("bad.gguf"), b"GGUF\x03\x00\x00\x00").unwrap();
    assert_eq!(lmx_model_inspect(c_path(&t.0.join("bad.gguf")).as_ptr(), &mut d), LMX_STATUS_FORMAT);
    let q = c_path(&fixtures().join("qwen3"));
    assert_eq!(lmx_model_inspect(q.as_ptr(), std::ptr::null_mut()), LMX_STATUS_INVALID_ARGUMENT);
    assert_eq!(lmx_model_inspect(std::ptr::null(), &mut d), LMX_STATUS_INVALID_ARGUMENT);
    d.struct_size = 3;
    assert_eq!(lmx_model_inspect(q.as_ptr(), &mut d), LMX_STATUS_INVALID_ARGUMENT);
}
