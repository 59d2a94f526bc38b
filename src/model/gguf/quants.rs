//! Dequantizing GGUF's block types to float32, as llama.cpp's reference code defines them:
//! F32, F16 and BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (blocks of 32 values), and the K-quants Q4_K, Q5_K and
//! Q6_K (super-blocks of 256 with packed sub-block scales). Checked value for value against
//! gguf-py's dequantize on reference blocks (tests/gguf_quants.rs).

use crate::{Error, Result};

/// The little-endian IEEE half-precision value at `b[at..at + 2]`.
pub fn half(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The ggml type numbers this module dequantizes.
use super::types::{BF16, F16, F32, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};

/// `data` (whole blocks of `ggml_type`) as float32 values.
pub fn dequantize(ggml_type: u32, data: &[u8]) -> Result<Vec<f32>> {
    let (per_block, block_bytes) = super::types::lookup(ggml_type)
        .map(|t| (t.block, t.bytes))
        .ok_or_else(|| Error::unsupported(format!("ggml type {ggml_type} is not supported")))?;
    let block: fn(&[u8], &mut [f32]) = match ggml_type {
        F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => |b, y| y[0] = half(b, 0),
        BF16 => |b, y| y[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q4_K => q4_k,
        Q5_K => q5_k,
        Q6_K => q6_k,
        t => return Err(Error::unsupported(format!("dequantizing ggml type {t} is not supported"))),
    };
    if data.len() as u64 % block_bytes != 0 {
        return Err(Error::format(format!(
            "{} bytes is not a whole number of {block_bytes}-byte blocks",
            data.len()
        )));
    }
    let blocks = data.len() / block_bytes as usize;
    let mut out = vec![0f32; blocks * per_block as usize];
    for (b, y) in data.chunks_exact(block_bytes as usize).zip(out.chunks_exact_mut(per_block as usize)) {
        block(b, y);
    }
    Ok(out)
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for j in 0..16 {
        y[j] = ((b[2 + j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for j in 0..16 {
        y[j] = (b[4 + j] & 0x0f) as f32 * d + m;
        y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
    }
}

/// The fifth bits of a Q5 block's 32 values, and each value's low nibble.
fn q5_values(qh: u32, qs: &[u8], j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    ((qs[j] & 0x0f) | h0, (qs[j] >> 4) | h1)
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, &b[6..], j);
        y[j] = (x0 as i32 - 16) as f32 * d;
        y[j + 16] = (x1 as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, &b[8..], j);
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// Scale and min of sub-block `j` (0..8) from a K-quant's 12 packed bytes (6 bits each).
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The (scale, min) pairs of the two 32-value sub-blocks of 64-value chunk `n` of a Q4_K or
/// Q5_K block `b`: the super-block's scale and min times the packed 6-bit ones.
fn k_chunk_scales(b: &[u8], n: usize) -> [(f32, f32); 2] {
    let (d, min) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    [2 * n, 2 * n + 1].map(|j| {
        let (sc, m) = scale_min_k4(j, scales);
        (d * sc as f32, min * m as f32)
    })
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let qs = &b[16..144];
    for (n, chunk) in y.chunks_exact_mut(64).enumerate() {
        let [(d1, m1), (d2, m2)] = k_chunk_scales(b, n);
        let q = &qs[32 * n..32 * n + 32];
        for l in 0..32 {
            chunk[l] = d1 * (q[l] & 0x0f) as f32 - m1;
            chunk[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (n, chunk) in y.chunks_exact_mut(64).enumerate() {
        let [(d1, m1), (d2, m2)] = k_chunk_scales(b, n);
        let (u1, u2) = (1u8 << (2 * n), 2u8 << (2 * n));
        let q = &qs[32 * n..32 * n + 32];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            chunk[l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
            chunk[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half(b, 208);
    for (n, chunk) in y.chunks_exact_mut(128).enumerate() {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            chunk[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            chunk[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            chunk[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            chunk[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
