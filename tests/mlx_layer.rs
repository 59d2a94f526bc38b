//! The safe MLX layer: ops against hand-computed values, and every failure as an `Err` with
//! MLX's message (never an exit or a panic).

use std::path::PathBuf;

use lmx::mlx::{io, ops, random, Array, Dtype};
use lmx::ErrorKind;

fn arr(data: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(data, shape).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

/// A path `name` in a temporary folder that lives for the whole test process (the tests
/// here write a file and read it back within one test).
fn tmp(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("lmx-mlx-layer-").tempdir().unwrap()).path().join(name)
}

#[test]
fn array_roundtrip_shape_and_dtype() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(a.shape(), vec![2, 3]);
    assert_eq!(a.ndim(), 2);
    assert_eq!(a.size(), 6);
    assert_eq!(a.nbytes(), 24);
    assert_eq!(a.dtype().unwrap(), Dtype::F32);
    assert_eq!(a.dim(-1).unwrap(), 3);
    assert!(a.dim(2).is_err());
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = a.clone();
    drop(a);
    assert_eq!(b.to_vec::<f32>().unwrap()[5], 6.0);
    let i = Array::from_slice(&[7i32, -8], &[2]).unwrap();
    assert_eq!(i.to_vec::<i32>().unwrap(), vec![7, -8]);
    assert_eq!(Array::scalar_f32(2.5).item::<f32>().unwrap(), 2.5);
    assert_eq!(Array::scalar_i32(-3).item::<i32>().unwrap(), -3);
}

#[test]
fn from_slice_rejects_a_wrong_shape() {
    let e = Array::from_slice(&[1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("holds 4 elements, data has 3"), "{e}");
    assert!(Array::from_slice(&[1.0f32], &[-1]).is_err());
}

#[test]
fn reading_with_the_wrong_type_is_an_error() {
    let a = arr(&[1.0], &[1]);
    let e = a.to_vec::<i32>().unwrap_err();
    assert!(e.message.contains("cannot read a float32 array as int32"), "{e}");
}

#[test]
fn arithmetic_and_matmul_match_hand_computed_values() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = arr(&[5.0, 6.0, 7.0, 8.0], &[2, 2]);
    assert_eq!(ops::add(&a, &b).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 8.0, 10.0, 12.0]);
    assert_eq!(ops::subtract(&b, &a).unwrap().to_vec::<f32>().unwrap(), vec![4.0; 4]);
    assert_eq!(ops::multiply(&a, &b).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 12.0, 21.0, 32.0]);
    // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
    assert_eq!(ops::matmul(&a, &b).unwrap().to_vec::<f32>().unwrap(), vec![19.0, 22.0, 43.0, 50.0]);
    // Broadcasting a scalar.
    let two = Array::scalar_f32(2.0);
    assert_eq!(ops::divide(&a, &two).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 1.0, 1.5, 2.0]);
    close(
        &ops::sqrt(&b).unwrap().to_vec::<f32>().unwrap(),
        &[5f32.sqrt(), 6f32.sqrt(), 7f32.sqrt(), 8f32.sqrt()],
        1e-6,
    );
    close(
        &ops::exp(&arr(&[0.0, 1.0], &[2])).unwrap().to_vec::<f32>().unwrap(),
        &[1.0, std::f32::consts::E],
        1e-6,
    );
}

#[test]
fn shapes_views_and_reductions() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    // A transpose is a strided view; reading it must follow the logical order.
    let t = ops::transpose(&a, &[1, 0]).unwrap();
    assert_eq!(t.shape(), vec![3, 2]);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(
        ops::reshape(&a, &[3, 2]).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(ops::sum(&a, &[1], false).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    assert_eq!(ops::mean(&a, &[0], false).unwrap().to_vec::<f32>().unwrap(), vec![2.5, 3.5, 4.5]);
    assert_eq!(ops::max(&a, &[1], true).unwrap().shape(), vec![2, 1]);
    assert_eq!(ops::argmax(&a, 1, false).unwrap().to_vec::<u32>().unwrap(), vec![2, 2]);
    let s = ops::slice_axis(&a, 1, 1, 3).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 5.0, 6.0]);
    let c = ops::concatenate(&[&a, &a], 0).unwrap();
    assert_eq!(c.shape(), vec![4, 3]);
    let idx = Array::from_slice(&[1i32, 0], &[2]).unwrap();
    assert_eq!(ops::take(&a, &idx, 0).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 5.0, 6.0, 1.0, 2.0, 3.0]);
    let sm = ops::softmax(&arr(&[0.0, 0.0], &[2]), -1, true).unwrap();
    assert_eq!(sm.to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
    let upd = ops::slice_update(
        &ops::zeros(&[2, 2], Dtype::F32).unwrap(),
        &arr(&[9.0, 9.0], &[1, 2]),
        &[1, 0],
        &[2, 2],
        &[1, 1],
    )
    .unwrap();
    assert_eq!(upd.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 9.0, 9.0]);
}

#[test]
fn dtype_conversion_and_bf16_bits() {
    let a = arr(&[1.0, -2.0, 0.5], &[3]);
    let h = ops::astype(&a, Dtype::BF16).unwrap();
    assert_eq!(h.dtype().unwrap(), Dtype::BF16);
    // bf16 has no host accessor on x86-64; read it through the uint16 view or as f32.
    assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, -2.0, 0.5]);
    let bits = ops::view(&h, Dtype::U16).unwrap().to_vec::<u16>().unwrap();
    assert_eq!(bits, vec![0x3f80, 0xc000, 0x3f00]);
}

#[test]
fn fast_kernels_match_hand_computed_values() {
    // rms_norm([3, 4]) = [3, 4] / sqrt((9 + 16) / 2)
    let x = arr(&[3.0, 4.0], &[1, 2]);
    let w = arr(&[1.0, 2.0], &[2]);
    let r = 12.5f32.sqrt();
    close(&ops::rms_norm(&x, Some(&w), 0.0).unwrap().to_vec::<f32>().unwrap(), &[3.0 / r, 8.0 / r], 1e-5);
    // RoPE at position 0 is the identity; at position 1 it rotates the pair by 1 radian.
    let v = arr(&[1.0, 0.0], &[1, 1, 1, 2]);
    close(
        &ops::rope(&v, 2, false, Some(10000.0), 1.0, 0, None).unwrap().to_vec::<f32>().unwrap(),
        &[1.0, 0.0],
        1e-6,
    );
    close(
        &ops::rope(&v, 2, false, Some(10000.0), 1.0, 1, None).unwrap().to_vec::<f32>().unwrap(),
        &[1f32.cos(), 1f32.sin()],
        1e-6,
    );
    // Attention over one key returns its value whatever the scores.
    let q = arr(&[1.0, 2.0], &[1, 1, 1, 2]);
    let k = arr(&[3.0, 4.0], &[1, 1, 1, 2]);
    let val = arr(&[5.0, 6.0], &[1, 1, 1, 2]);
    let o = ops::scaled_dot_product_attention(&q, &k, &val, 0.5, ops::AttentionMask::Causal, None).unwrap();
    close(&o.to_vec::<f32>().unwrap(), &[5.0, 6.0], 1e-6);
}

#[test]
fn quantize_roundtrip_and_quantized_matmul() {
    let w = random::normal(&[64, 128], Dtype::F32, Some(&random::key(7).unwrap())).unwrap();
    let (q, s, b) = ops::quantize(&w, 64, 8, "affine").unwrap();
    assert_eq!(q.shape(), vec![64, 32]);
    assert_eq!(s.shape(), vec![64, 2]);
    let d = ops::dequantize(&q, &s, Some(&b), 64, 8, "affine", None).unwrap();
    let err = ops::max(&ops::abs(&ops::subtract(&d, &w).unwrap()).unwrap(), &[0, 1], false).unwrap();
    assert!(err.item::<f32>().unwrap() < 0.05);
    let x = random::normal(&[2, 128], Dtype::F32, Some(&random::key(8).unwrap())).unwrap();
    let y = ops::quantized_matmul(&x, &q, &s, Some(&b), true, 64, 8, "affine").unwrap();
    let y_ref = ops::matmul(&x, &ops::transpose(&d, &[1, 0]).unwrap()).unwrap();
    close(&y.to_vec::<f32>().unwrap(), &y_ref.to_vec::<f32>().unwrap(), 1e-3);
}

#[test]
fn seeded_random_is_reproducible() {
    let a = random::normal(&[4], Dtype::F32, Some(&random::key(42).unwrap())).unwrap();
    let b = random::normal(&[4], Dtype::F32, Some(&random::key(42).unwrap())).unwrap();
    let c = random::normal(&[4], Dtype::F32, Some(&random::key(43).unwrap())).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_ne!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
}

#[test]
fn an_mlx_error_is_a_result_with_mlx_message_and_the_process_survives() {
    let a = arr(&[1.0; 6], &[2, 3]);
    let e = ops::matmul(&a, &a).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Mlx);
    assert!(e.message.starts_with("matmul: [matmul]"), "{e}");
    assert!(e.message.contains("(2,3)"), "{e}");
    assert!(!e.message.contains(".cpp:"), "the mlx-c source location is dropped: {e}");
    // Bad axes and shapes too.
    assert!(ops::reshape(&a, &[4, 2]).unwrap_err().message.contains("reshape"));
    assert!(ops::sum(&a, &[5], false).is_err());
    // An invalid dtype combination.
    let q = ops::quantize(&arr(&[1.0; 8], &[1, 8]), 64, 4, "affine");
    assert!(q.is_err());
    // MLX still works afterwards, on this thread and others.
    assert_eq!(ops::add(&a, &a).unwrap().to_vec::<f32>().unwrap(), vec![2.0; 6]);
    std::thread::spawn(|| {
        let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        assert!(ops::matmul(&x, &Array::from_slice(&[1.0f32; 3], &[3]).unwrap()).is_err());
        assert_eq!(ops::sum(&x, &[0], false).unwrap().item::<f32>().unwrap(), 3.0);
    })
    .join()
    .unwrap();
}

#[test]
fn safetensors_save_and_load() {
    let path = tmp("roundtrip.safetensors");
    let a = arr(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = ops::astype(&arr(&[0.5, 0.25], &[2]), Dtype::BF16).unwrap();
    io::save_safetensors(&path, &[("a", &a), ("b.weight", &b)], &[("format", "mlx")]).unwrap();
    let header = io::read_header(&path).unwrap();
    assert_eq!(header.tensors["a"].shape, vec![2, 2]);
    assert_eq!(header.tensors["b.weight"].dtype, Dtype::BF16);
    assert_eq!(header.metadata.get("format").map(String::as_str), Some("mlx"));
    let loaded = io::load_safetensors(&path).unwrap();
    assert_eq!(loaded.tensors["a"].to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(loaded.tensors["b.weight"].to_f32_vec().unwrap(), vec![0.5, 0.25]);
}

#[test]
fn a_missing_file_is_not_found_and_names_the_path() {
    let e = io::load_safetensors(&tmp("nope.safetensors")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("nope.safetensors"), "{e}");
}

fn write_raw(name: &str, header: &str, data: &[u8]) -> PathBuf {
    let path = tmp(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn corrupt_safetensors_files_give_format_errors_naming_file_and_tensor() {
    // Not JSON.
    let p = write_raw("garbage.safetensors", "{not json", &[]);
    let e = io::load_safetensors(&p).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.message.contains("garbage.safetensors") && e.message.contains("corrupt safetensors header"),
        "{e}"
    );

    // A header length beyond the end of the file.
    let p = tmp("short.safetensors");
    std::fs::write(&p, 1_000_000u64.to_le_bytes()).unwrap();
    let e = io::load_safetensors(&p).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("header length 1000000"), "{e}");

    // Too short to hold a header at all.
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(io::load_safetensors(&p).unwrap_err().kind, ErrorKind::Format);

    // Truncated data: the tensor needs 16 bytes, the file has 8.
    let h = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let p = write_raw("truncated.safetensors", h, &[0u8; 8]);
    let e = io::load_safetensors(&p).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.message.contains("truncated.safetensors") && e.message.contains("tensor w"), "{e}");

    // Offsets that disagree with the shape.
    let h = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
    let p = write_raw("badshape.safetensors", h, &[0u8; 12]);
    assert_eq!(io::load_safetensors(&p).unwrap_err().kind, ErrorKind::Format);

    // An unsupported dtype names the tensor.
    let h = r#"{"w8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#;
    let p = write_raw("fp8.safetensors", h, &[0u8; 4]);
    let e = io::load_safetensors(&p).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("fp8.safetensors") && e.message.contains("tensor w8"), "{e}");
}
