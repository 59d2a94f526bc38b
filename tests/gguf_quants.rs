//! GGUF block types dequantized as llama.cpp defines them: value for value against gguf-py's
//! dequantize on reference blocks (tests/fixtures/gguf_quants, made by
//! scripts/make_gguf_quants.py).

mod common;

use lmx::model::gguf::quants::*;
use lmx::model::gguf::types::*;

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn every_block_type_matches_the_reference() {
    let dir = common::fixtures().join("gguf_quants");
    for (name, ty) in [
        ("Q4_0", Q4_0),
        ("Q4_1", Q4_1),
        ("Q5_0", Q5_0),
        ("Q5_1", Q5_1),
        ("Q8_0", Q8_0),
        ("Q4_K", Q4_K),
        ("Q5_K", Q5_K),
        ("Q6_K", Q6_K),
    ] {
        let raw = std::fs::read(dir.join(format!("{name}.raw"))).unwrap();
        let want = floats(&std::fs::read(dir.join(format!("{name}.f32"))).unwrap());
        let got = dequantize(ty, &raw).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // The reference computes in float32 too; allow for operation order.
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{name}[{i}]: {g} vs {w}");
        }
    }
}

#[test]
fn half_precision_converts_exactly() {
    // F16 tensors dequantize value for value (through the `half` crate).
    let f16_to_f32 = |h: u16| dequantize(F16, &h.to_le_bytes()).unwrap()[0];
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // the smallest subnormal
    assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
    assert!(f16_to_f32(0x7c00).is_infinite());
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn partial_blocks_and_unknown_types_are_errors() {
    assert!(dequantize(Q4_K, &[0u8; 143]).unwrap_err().message.contains("whole number"));
    assert!(dequantize(99, &[0u8; 4]).is_err());
    assert!(dequantize(Q8_0, &[]).unwrap().is_empty());
}
