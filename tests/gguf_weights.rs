//! GGUF tensors converted to MLX's affine format: exact for the block types with one scale
//! and bias per 32 values, within half an 8-bit step for Q6_K; and the real files' tensors, rope
//! permutation undone, equal to what transformers made of them in the converted folders.

mod common;

use lmx::mlx::{ops, Dtype};
use lmx::model::gguf::quants::*;
use lmx::model::gguf::types::*;
use lmx::model::gguf::weights::{affine, unpermute_rows};
use lmx::model::gguf::TensorInfo;

/// The MLX dequantization of a converted tensor, as float32 values.
fn mlx_values(t: &TensorInfo, raw: &[u8]) -> (i32, Vec<f32>) {
    let (p, [w, s, b]) = affine(t, raw).unwrap();
    let v = ops::dequantize(&w, &s, Some(&b), p.group_size, p.bits, "affine", None).unwrap();
    (p.bits, ops::astype(&v, Dtype::F32).unwrap().to_f32_vec().unwrap())
}

#[test]
fn every_block_type_converts_to_mlx_affine() {
    let dir = common::fixtures().join("gguf_quants");
    for (name, ty, want_bits) in [
        ("Q4_0", Q4_0, 4),
        ("Q4_1", Q4_1, 4),
        ("Q5_0", Q5_0, 8),
        ("Q5_1", Q5_1, 8),
        ("Q8_0", Q8_0, 8),
        ("Q4_K", Q4_K, 4),
        ("Q5_K", Q5_K, 8),
        ("Q6_K", Q6_K, 8),
    ] {
        let raw = std::fs::read(dir.join(format!("{name}.raw"))).unwrap();
        let want = dequantize(ty, &raw).unwrap();
        // The reference blocks as a matrix of rows of 256 values.
        let cols = 256u64;
        let rows = want.len() as u64 / cols;
        let t = TensorInfo {
            name: name.into(),
            dims: vec![cols, rows],
            ggml_type: ty,
            offset: 0,
            bytes: raw.len() as u64,
        };
        let (bits, got) = mlx_values(&t, &raw);
        assert_eq!(bits, want_bits, "{name}");
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, (gv, wv)) in got.chunks(32).zip(want.chunks(32)).enumerate() {
            let range = wv.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
                - wv.iter().fold(f32::INFINITY, |a, &b| a.min(b));
            // Exact types: float32 rounding of scale * q + bias only. Q6_K: half an 8-bit step.
            let step = if ty == Q6_K { range / 255.0 * 0.5 } else { 0.0 };
            for (i, (a, b)) in gv.iter().zip(wv).enumerate() {
                // Plus float32 rounding of scale * q + bias.
                let tol = step + 1e-6 * range.max(b.abs()).max(1e-3);
                assert!((a - b).abs() <= tol, "{name} group {g} value {i}: {a} vs {b} (tolerance {tol})");
            }
        }
    }
}

#[test]
fn float_and_unknown_types_are_refused_as_quantized() {
    let t = TensorInfo { name: "x".into(), dims: vec![32, 1], ggml_type: F32, offset: 0, bytes: 128 };
    assert!(affine(&t, &[0u8; 128]).unwrap_err().message.contains("not a quantized type"));
    let t = TensorInfo { name: "x".into(), dims: vec![32, 1], ggml_type: 20, offset: 0, bytes: 32 };
    let e = affine(&t, &[0u8; 32]).unwrap_err();
    assert!(e.message.contains("type 20 is not supported"), "{}", e.message);
}

#[test]
fn rope_rows_come_back_in_checkpoint_order() {
    let order = unpermute_rows(16, 2).unwrap();
    assert_eq!(&order[..8], &[0, 2, 4, 6, 1, 3, 5, 7]);
    assert_eq!(&order[8..], &[8, 10, 12, 14, 9, 11, 13, 15]);
}

/// Every tensor of the real SmolLM2 (Q4_1, llama's rope permutation) and Gemma 3 (Q4_K_M:
/// Q4_K, Q6_K, Q5_0, Q8_0 and stored `1 + w` norms) files, converted, equals the folder that
/// transformers converted from the same file (which keeps bfloat16 or float16 copies).
#[test]
fn the_real_gguf_files_convert_like_their_conversions() {
    use lmx::model::gguf::read_header;
    use lmx::model::gguf::weights::convert;
    for (file, folder, arch, heads, kv) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", "llama", 9, 3),
        ("gemma-3-270m-q4_k_m.gguf", "gemma3-270m", "gemma3", 4, 1),
    ] {
        let Some(dir) = common::folder(folder) else { continue };
        let path = common::cache_dir().join("gguf").join(file);
        let h = read_header(&path).unwrap();
        let conv = convert(&path, &h, arch, heads, kv).unwrap();
        let theirs = lmx::mlx::io::load_safetensors(&dir.join("model.safetensors")).unwrap().tensors;
        let mut checked = 0;
        for (name, want) in &theirs {
            let got = if let Some(module) =
                name.strip_suffix(".weight").filter(|m| conv.tensors.contains_key(&format!("{m}.scales")))
            {
                let p = conv.quant.as_ref().unwrap().for_module(module).unwrap();
                let t = |k: &str| &conv.tensors[&format!("{module}.{k}")];
                ops::dequantize(
                    t("weight"),
                    t("scales"),
                    Some(t("biases")),
                    p.group_size,
                    p.bits,
                    "affine",
                    None,
                )
                .unwrap()
            } else {
                conv.tensors.get(name).unwrap_or_else(|| panic!("{file}: no {name}")).clone()
            };
            assert_eq!(got.shape(), want.shape(), "{file} {name}");
            let got = ops::astype(&got, Dtype::F32).unwrap().to_f32_vec().unwrap();
            let want = ops::astype(want, Dtype::F32).unwrap().to_f32_vec().unwrap();
            let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
            let worst =
                got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale.max(1e-6);
            // bfloat16 copies in the folder: 2^-8 of the largest value; Q6_K re-quantized to 8
            // bits adds at most half an 8-bit step of a group's range.
            assert!(worst < 1e-2, "{file} {name}: worst difference {worst:.2e} of the largest value");
            checked += 1;
        }
        assert_eq!(checked, theirs.len());
        eprintln!("{file}: {checked} tensors equal their conversion; {:?}", conv.conversions);
    }
}
