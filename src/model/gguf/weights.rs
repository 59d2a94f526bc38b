//! A GGUF file's tensors as the checkpoint tensors of the Hugging Face folder of the same
//! model: names mapped (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`;
//! stacked experts `blk.3.ffn_gate_exps.weight` -> `model.layers.3.mlp.switch_mlp.gate_proj.weight`
//! [experts, out, in], mlx-lm's layout, converted as one matrix of experts * out rows),
//! llama's rope permutation of q and k undone, Gemma's stored `1 + w` norms given back as `w`,
//! and quantized blocks turned into MLX's affine format (packed `.weight`, `.scales`,
//! `.biases`, groups of 32 along each row).
//!
//! Block types whose values are `scale * q + bias` with one scale and bias per 32 values
//! convert exactly: Q4_0, Q4_1 and Q4_K to 4 bits; Q5_0, Q5_1, Q5_K and Q8_0 to 8 bits (a 5-bit
//! code is an 8-bit code with the same scale). Q6_K has a scale per 16 values, which MLX's
//! groups of 32 cannot hold: it is re-quantized to 8 bits from its values (error at most half
//! an 8-bit step of the group's range, about an eighth of Q6_K's own step). Float tensors stay
//! float. Tensors are read and converted one at a time, so the load never holds more than one
//! float32 copy of a tensor beside what the model keeps.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::quants::dequantize;
use super::types::{self as q, Becomes};
use crate::mlx::{ops, Array};
use crate::model::gguf::{Header, TensorInfo};
use crate::model::nn::quant::{QuantConfig, QuantMode, QuantParams};
use crate::{Error, Result};

/// MLX group size of every converted tensor (the block size of GGUF's 32-value types and of
/// the K-quants' sub-blocks).
pub const GROUP: usize = 32;

/// What one ggml type became at load.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Conversion {
    /// ggml's name of the source type ("Q4_K", "F32", ...).
    pub source: String,
    /// How many tensors of the file have it.
    pub tensors: usize,
    /// What they became: "float" or "affine 4-bit, group 32".
    pub became: String,
    /// Whether the conversion keeps every value exactly.
    pub exact: bool,
}

/// The converted tensors, by Hugging Face name, with the quantization config that describes
/// them and a report per source type.
pub struct Converted {
    pub tensors: HashMap<String, Array>,
    pub quant: Option<QuantConfig>,
    pub conversions: Vec<Conversion>,
}

/// MLX bits a quantized ggml type becomes, and whether exactly; None for float types.
fn target(t: u32) -> Result<Option<(i32, bool)>> {
    Ok(match q::becomes(t)? {
        Becomes::Affine { bits, exact } => Some((bits, exact)),
        _ => None,
    })
}

/// The Hugging Face name of a GGUF tensor of architecture `arch`, or None for one the model
/// does not use.
fn hf_name(arch: &str, name: &str) -> Option<String> {
    let global = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if (module, suffix, arch) == ("exp_probs_b", "bias", "deepseek2") {
        return Some(format!("model.layers.{layer}.mlp.gate.e_score_correction_bias"));
    }
    if (module, suffix, arch) == ("attn_sinks", "weight", "gpt-oss") {
        return Some(format!("model.layers.{layer}.self_attn.sinks"));
    }
    let ours = match (module, arch) {
        // DeepSeek's latent attention; the split `kv_b_proj` halves are mlx-lm's per-head
        // `embed_q` [H, kv_lora_rank, qk_nope] and `unembed_out` [H, v, kv_lora_rank].
        ("attn_q_a", "deepseek2") => "self_attn.q_a_proj",
        ("attn_q_a_norm", "deepseek2") => "self_attn.q_a_layernorm",
        ("attn_q_b", "deepseek2") => "self_attn.q_b_proj",
        ("attn_kv_a_mqa", "deepseek2") => "self_attn.kv_a_proj_with_mqa",
        ("attn_kv_a_norm", "deepseek2") => "self_attn.kv_a_layernorm",
        ("attn_kv_b", "deepseek2") => "self_attn.kv_b_proj",
        ("attn_k_b", "deepseek2") => "self_attn.embed_q",
        ("attn_v_b", "deepseek2") => "self_attn.unembed_out",
        ("ffn_gate_shexp", "deepseek2") => "mlp.shared_experts.gate_proj",
        ("ffn_up_shexp", "deepseek2") => "mlp.shared_experts.up_proj",
        ("ffn_down_shexp", "deepseek2") => "mlp.shared_experts.down_proj",
        // GPT-OSS: the router with its bias, experts (and their biases) stacked as its
        // checkpoint's `experts`.
        ("ffn_gate_inp", "gpt-oss") => "mlp.router",
        ("ffn_gate_exps", "gpt-oss") => "mlp.experts.gate_proj",
        ("ffn_up_exps", "gpt-oss") => "mlp.experts.up_proj",
        ("ffn_down_exps", "gpt-oss") => "mlp.experts.down_proj",
        ("post_attention_norm", "gpt-oss") => "post_attention_layernorm",
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("attn_q_norm", _) => "self_attn.q_norm",
        ("attn_k_norm", _) => "self_attn.k_norm",
        ("ffn_gate", _) => "mlp.gate_proj",
        ("ffn_up", _) => "mlp.up_proj",
        ("ffn_down", _) => "mlp.down_proj",
        // Experts stacked [E, out, in] as mlx-lm's `switch_mlp` holds them; the router and a
        // shared expert as transformers names them (Mixtral's `block_sparse_moe` is read under
        // `mlp` as well).
        ("ffn_gate_inp", _) => "mlp.gate",
        ("ffn_gate_exps", _) => "mlp.switch_mlp.gate_proj",
        ("ffn_up_exps", _) => "mlp.switch_mlp.up_proj",
        ("ffn_down_exps", _) => "mlp.switch_mlp.down_proj",
        ("ffn_gate_shexp", _) => "mlp.shared_expert.gate_proj",
        ("ffn_up_shexp", _) => "mlp.shared_expert.up_proj",
        ("ffn_down_shexp", _) => "mlp.shared_expert.down_proj",
        ("ffn_gate_inp_shexp", _) => "mlp.shared_expert_gate",
        ("attn_norm", _) => "input_layernorm",
        ("ffn_norm", "gemma3") => "pre_feedforward_layernorm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("post_attention_norm", "gemma3") => "post_attention_layernorm",
        ("post_ffw_norm", "gemma3") => "post_feedforward_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{ours}.{suffix}"))
}

/// The row order that undoes llama.cpp's rope permutation of a q or k projection with
/// `heads` heads: GGUF interleaves each head's two rotary halves (row `2i + j` of a head holds
/// the checkpoint's row `j * half + i`), for ggml's interleaved rope. Entry `r` is the GGUF row
/// that becomes row `r`.
pub fn unpermute_rows(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || rows % heads != 0 || (rows / heads) % 2 != 0 {
        return Err(Error::format(format!(
            "a rope-permuted projection of {rows} rows does not split into {heads} heads of even size"
        )));
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                order.push(h * head_dim + 2 * i + j);
            }
        }
    }
    Ok(order)
}

/// `(q, scale, bias)` per 32-value group of one block of an exactly convertible type: value
/// `v = scale * q + bias`. `q` gets the block's codes; scales and biases one entry per group.
fn exact_codes(t: u32, b: &[u8], codes: &mut [u8], sb: &mut [(f32, f32)]) {
    let half = |at: usize| super::quants::half(b, at);
    match t {
        q::Q4_0 | q::Q4_1 => {
            let (d, m, qs) = if t == q::Q4_0 {
                (half(0), -8.0 * half(0), &b[2..18])
            } else {
                (half(0), half(2), &b[4..20])
            };
            for j in 0..16 {
                codes[j] = qs[j] & 0x0f;
                codes[j + 16] = qs[j] >> 4;
            }
            sb[0] = (d, m);
        }
        q::Q5_0 | q::Q5_1 => {
            let (d, m, at) = if t == q::Q5_0 { (half(0), -16.0 * half(0), 2) } else { (half(0), half(2), 4) };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                codes[j] = (qs[j] & 0x0f) | h0;
                codes[j + 16] = (qs[j] >> 4) | h1;
            }
            sb[0] = (d, m);
        }
        q::Q8_0 => {
            let d = half(0);
            for j in 0..32 {
                codes[j] = (b[2 + j] as i8 as i16 + 128) as u8;
            }
            sb[0] = (d, -128.0 * d);
        }
        q::Q4_K | q::Q5_K => {
            let (d, dmin) = (half(0), half(2));
            let scales = &b[4..16];
            let (qh, qs) = if t == q::Q4_K { (None, &b[16..144]) } else { (Some(&b[16..48]), &b[48..176]) };
            for n in 0..4 {
                for (k, j) in [2 * n, 2 * n + 1].into_iter().enumerate() {
                    let (sc, m) = super::quants::scale_min_k4(j, scales);
                    sb[j] = (d * sc as f32, -(dmin * m as f32));
                    let out = &mut codes[32 * j..32 * j + 32];
                    let src = &qs[32 * n..32 * n + 32];
                    for l in 0..32 {
                        let low = if k == 0 { src[l] & 0x0f } else { src[l] >> 4 };
                        let high = match qh {
                            Some(qh) if qh[l] & (1u8 << (2 * n + k)) != 0 => 16,
                            _ => 0,
                        };
                        out[l] = low + high;
                    }
                }
            }
        }
        _ => unreachable!("exact_codes is called for exact types only"),
    }
}

/// Appends `values` (each below `1 << bits`) to `out` as MLX packs them: a little-endian bit
/// stream in 32-bit words.
fn pack(values: &[u8], bits: u32, out: &mut Vec<u32>) {
    let mut acc: u64 = 0;
    let mut have = 0;
    for &v in values {
        acc |= (v as u64) << have;
        have += bits;
        if have >= 32 {
            out.push(acc as u32);
            acc >>= 32;
            have -= 32;
        }
    }
    debug_assert_eq!(have, 0, "rows are whole groups of 32 values");
}

/// Affine codes of 32 float values at 8 bits: scale and bias from the group's range, codes
/// rounded to the nearest step.
fn requantize8(vals: &[f32], codes: &mut [u8]) -> (f32, f32) {
    let (lo, hi) = vals.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let scale = (hi - lo) / 255.0;
    if scale <= 0.0 || !scale.is_finite() {
        codes.fill(0);
        return (0.0, lo);
    }
    for (c, &v) in codes.iter_mut().zip(vals) {
        *c = ((v - lo) / scale).round().clamp(0.0, 255.0) as u8;
    }
    (scale, lo)
}

/// One quantized [rows, cols] tensor as MLX affine arrays: packed weights `[rows, cols *
/// bits / 32]` u32, scales and biases `[rows, cols / 32]` float32, rows taken in `order`.
fn convert_quantized(t: &TensorInfo, raw: &[u8], bits: i32, order: &[usize]) -> Result<[Array; 3]> {
    let (per_block, block_bytes) = q::lookup(t.ggml_type)
        .map(|t| (t.block, t.bytes))
        .ok_or_else(|| Error::internal(format!("tensor {}: unknown ggml type", t.name)))?;
    let (cols, rows) = (t.dims[0] as usize, order.len());
    if cols % per_block as usize != 0 {
        return Err(Error::format(format!(
            "tensor {}: rows of {cols} values are not whole {per_block}-value blocks",
            t.name
        )));
    }
    let row_bytes = cols / per_block as usize * block_bytes as usize;
    let groups = cols / GROUP;
    let words = cols * bits as usize / 32;
    let mut w: Vec<u32> = Vec::with_capacity(rows * words);
    let mut scales = Vec::with_capacity(rows * groups);
    let mut biases = Vec::with_capacity(rows * groups);
    let mut codes = vec![0u8; cols];
    let per_block = per_block as usize;
    let mut sb = vec![(0f32, 0f32); per_block / GROUP];
    for &r in order {
        let row = &raw[r * row_bytes..(r + 1) * row_bytes];
        if t.ggml_type == q::Q6_K {
            let vals = dequantize(t.ggml_type, row)?;
            for (g, c) in vals.chunks_exact(GROUP).zip(codes.chunks_exact_mut(GROUP)) {
                let (s, b) = requantize8(g, c);
                scales.push(s);
                biases.push(b);
            }
        } else {
            for (blk, c) in row.chunks_exact(block_bytes as usize).zip(codes.chunks_exact_mut(per_block)) {
                exact_codes(t.ggml_type, blk, c, &mut sb);
                for &(s, b) in &sb {
                    scales.push(s);
                    biases.push(b);
                }
            }
        }
        pack(&codes, bits as u32, &mut w);
    }
    let (r, g, wd) = (rows as i32, groups as i32, words as i32);
    Ok([
        Array::from_slice(&w, &[r, wd])?,
        Array::from_slice(&scales, &[r, g])?,
        Array::from_slice(&biases, &[r, g])?,
    ])
}

/// MXFP4 blocks (ggml's: one E8M0 scale byte, then 16 bytes of E2M1 codes, value `j` in the
/// low nibble of byte `j` and value `j + 16` in its high nibble) as MLX's mxfp4 arrays: the
/// codes in order, eight to a little-endian u32 (value `k` in bits `4 * (k % 8)` of word
/// `k / 8`), and the scale bytes, one per 32 values. Both formats mean `fp4(q) * 2^(e - 127)`
/// (ggml writes it as doubled E2M1 values times `2^(e - 128)`), so nothing is recomputed.
pub fn mxfp4_repack(raw: &[u8]) -> Result<(Vec<u32>, Vec<u8>)> {
    const BLOCK: usize = 17;
    if !raw.len().is_multiple_of(BLOCK) {
        return Err(Error::format(format!("{} bytes are not whole MXFP4 blocks of {BLOCK}", raw.len())));
    }
    let blocks = raw.len() / BLOCK;
    let mut words = Vec::with_capacity(blocks * 4);
    let mut scales = Vec::with_capacity(blocks);
    let mut codes = [0u8; 32];
    for b in raw.chunks_exact(BLOCK) {
        scales.push(b[0]);
        for (j, &q) in b[1..].iter().enumerate() {
            codes[j] = q & 0x0f;
            codes[j + 16] = q >> 4;
        }
        pack(&codes, 4, &mut words);
    }
    Ok((words, scales))
}

/// Bytes the converted tensors of `h` will take (quantized ones with float32 scales and biases,
/// float ones as float32), to check against the memory limit before converting.
pub fn projected_bytes(h: &Header) -> u64 {
    h.tensors()
        .iter()
        .map(|t| {
            let n: u64 = t.dims.iter().product();
            if t.ggml_type == q::MXFP4 {
                return n / 2 + n / GROUP as u64;
            }
            match target(t.ggml_type) {
                Ok(Some((bits, _))) => n * bits as u64 / 8 + n / GROUP as u64 * 8,
                _ => n * 4,
            }
        })
        .sum()
}

/// A quantized [rows, cols] tensor `t` (its bytes `raw`) in MLX's affine format: its
/// quantization, the packed weights, the scales and the biases (float32).
pub fn affine(t: &TensorInfo, raw: &[u8]) -> Result<(QuantParams, [Array; 3])> {
    let (bits, _) = target(t.ggml_type)?.ok_or_else(|| {
        Error::invalid(format!("tensor {}: {} is not a quantized type", t.name, q::name(t.ggml_type)))
    })?;
    if t.dims.len() != 2 || raw.len() as u64 != t.bytes {
        return Err(Error::invalid(format!("tensor {}: expected a matrix of {} bytes", t.name, t.bytes)));
    }
    let order: Vec<usize> = (0..t.dims[1] as usize).collect();
    Ok((QuantParams::affine(GROUP as i32, bits), convert_quantized(t, raw, bits, &order)?))
}

/// Reads `t`'s bytes from the data section of `file`.
fn read_tensor(file: &File, path: &Path, h: &Header, t: &TensorInfo) -> Result<Vec<u8>> {
    let mut raw = vec![0u8; t.bytes as usize];
    file.read_exact_at(&mut raw, h.data_start() + t.offset)
        .map_err(|e| Error::format(format!("{}: tensor {}: {e}", path.display(), t.name)))?;
    Ok(raw)
}

/// Reads and converts every tensor of the GGUF file at `path` (its header `h`, architecture
/// `arch`). `heads` and `kv_heads` undo llama's rope permutation of q and k.
pub fn convert(path: &Path, h: &Header, arch: &str, heads: usize, kv_heads: usize) -> Result<Converted> {
    let (file, _) = crate::files::open_regular(path)?;
    let mut tensors = HashMap::new();
    let mut overrides = HashMap::new();
    let mut report: BTreeMap<u32, Conversion> = BTreeMap::new();
    let mut bits_seen: Option<i32> = None;
    let mut any_mxfp4 = false;
    for t in h.tensors() {
        let Some(name) = hf_name(arch, &t.name) else {
            return Err(Error::unsupported(format!(
                "{}: tensor {}: not a tensor liblmx knows for architecture {arch}",
                path.display(),
                t.name
            )));
        };
        let conv =
            target(t.ggml_type).map_err(|e| e.context(format!("{}: tensor {}", path.display(), t.name)))?;
        let mx = t.ggml_type == q::MXFP4;
        let entry = report.entry(t.ggml_type).or_insert_with(|| Conversion {
            source: q::name(t.ggml_type),
            tensors: 0,
            became: match conv {
                _ if mx => format!("mxfp4, group {GROUP}"),
                None => "float".into(),
                Some((bits, _)) => format!("affine {bits}-bit, group {GROUP}"),
            },
            exact: conv.is_none_or(|(_, exact)| exact),
        });
        entry.tensors += 1;
        let mut shape: Vec<i32> = t.dims.iter().rev().map(|&d| d as i32).collect();
        if mx {
            // MLX runs mxfp4 in the gathered expert matmul only (as the folder path reads it).
            if shape.len() != 3 || !t.name.ends_with("_exps.weight") {
                return Err(Error::unsupported(format!(
                    "{}: tensor {}: MXFP4 is read for stacked expert weights only",
                    path.display(),
                    t.name
                )));
            }
            let raw = read_tensor(&file, path, h, t)?;
            let (w, sc) = mxfp4_repack(&raw)
                .map_err(|e| e.context(format!("{}: tensor {}", path.display(), t.name)))?;
            let (e, r, c) = (shape[0], shape[1], shape[2]);
            let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            tensors.insert(format!("{module}.scales"), Array::from_slice(&sc, &[e, r, c / GROUP as i32])?);
            tensors.insert(name, Array::from_slice(&w, &[e, r, c / 8])?);
            overrides.insert(
                module,
                Some(QuantParams { group_size: GROUP as i32, bits: 4, mode: QuantMode::Mxfp4 }),
            );
            any_mxfp4 = true;
            continue;
        }
        if shape.len() == 1 && t.name.ends_with("ffn_gate_inp_shexp.weight") {
            // llama.cpp's shared-expert gate is a vector; the checkpoint's a [1, hidden] layer.
            shape.insert(0, 1);
        }
        let raw = read_tensor(&file, path, h, t)?;
        let permute = arch == "llama"
            && (t.name.ends_with("attn_q.weight")
                || t.name.ends_with("attn_k.weight")
                || t.name.ends_with("attn_q.bias")
                || t.name.ends_with("attn_k.bias"));
        // Rows of the innermost dimension (stacked experts' matrices one after another); a
        // vector's values are its rows (a permuted bias).
        let rows =
            if t.dims.len() >= 2 { t.dims[1..].iter().product::<u64>() as usize } else { t.dims[0] as usize };
        let order: Vec<usize> = if permute {
            let n = if t.name.contains("attn_q") { heads } else { kv_heads };
            unpermute_rows(rows, n)
                .map_err(|e| e.context(format!("{}: tensor {}", path.display(), t.name)))?
        } else {
            (0..rows).collect()
        };
        match conv {
            Some((bits, _)) => {
                if !(2..=3).contains(&shape.len()) {
                    return Err(Error::unsupported(format!(
                        "{}: tensor {}: a quantized tensor of {} dimensions (liblmx reads quantized matrices and stacks of them only)",
                        path.display(),
                        t.name,
                        shape.len()
                    )));
                }
                let parts = convert_quantized(t, &raw, bits, &order)
                    .map_err(|e| e.context(format!("{}", path.display())))?;
                // A stack of matrices ([E, rows, cols]) was converted as E * rows rows.
                let [w, s, b] = if shape.len() == 3 {
                    let unstack =
                        |a: &Array| -> Result<Array> { ops::reshape(a, &[shape[0], shape[1], a.dim(1)?]) };
                    let [w, s, b] = &parts;
                    [unstack(w)?, unstack(s)?, unstack(b)?]
                } else {
                    parts
                };
                let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
                tensors.insert(format!("{module}.scales"), s);
                tensors.insert(format!("{module}.biases"), b);
                tensors.insert(name, w);
                overrides.insert(module, Some(QuantParams::affine(GROUP as i32, bits)));
                bits_seen.get_or_insert(bits);
            }
            None => {
                let mut vals = dequantize(t.ggml_type, &raw)?;
                if order.iter().enumerate().any(|(i, &r)| i != r) {
                    let width = vals.len() / rows;
                    let src = vals.clone();
                    for (i, &r) in order.iter().enumerate() {
                        vals[i * width..(i + 1) * width].copy_from_slice(&src[r * width..(r + 1) * width]);
                    }
                }
                if arch == "gemma3" && t.name.ends_with("norm.weight") {
                    // llama.cpp stores Gemma's RMSNorm factor 1 + w; the checkpoint holds w.
                    vals.iter_mut().for_each(|v| *v -= 1.0);
                }
                tensors.insert(name, Array::from_slice(&vals, &shape)?);
            }
        }
    }
    // Every quantized module has its override; the default only names the file's affine width.
    let quant = match (bits_seen, any_mxfp4) {
        (None, false) => None,
        (bits, _) => {
            Some(QuantConfig { default: QuantParams::affine(GROUP as i32, bits.unwrap_or(4)), overrides })
        }
    };
    Ok(Converted { tensors, quant, conversions: report.into_values().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp's permutation: row h*hd + 2i + j holds the checkpoint's row h*hd + j*half + i.
        let (heads, hd) = (3, 8);
        let permuted: Vec<usize> = (0..heads)
            .flat_map(|h| (0..hd / 2).flat_map(move |i| (0..2).map(move |j| h * hd + j * hd / 2 + i)))
            .collect();
        let order = unpermute_rows(heads * hd, heads).unwrap();
        let back: Vec<usize> = order.iter().map(|&r| permuted[r]).collect();
        assert_eq!(back, (0..heads * hd).collect::<Vec<_>>());
        assert!(unpermute_rows(10, 3).is_err());
        assert!(unpermute_rows(6, 2).is_err(), "odd head size");
    }

    /// Two MXFP4 blocks quantized by gguf-py (`gguf.quants.quantize(x, MXFP4)`, x[i] =
    /// ((37 i) % 23 - 11) * 0.37, times 0.01 in the second block) and gguf-py's dequantized
    /// values: the repacked arrays give the same through MLX's mxfp4 dequantization.
    #[test]
    fn mxfp4_repack_dequantizes_as_gguf_py_does() {
        let raw: [u8; 34] = [
            127, 78, 162, 108, 21, 217, 94, 147, 236, 37, 192, 93, 148, 235, 54, 193, 93, 120, 208, 110, 148,
            236, 70, 193, 110, 5, 235, 71, 194, 109, 21, 234, 95, 179,
        ];
        let want: [f32; 64] = [
            -4.0,
            1.0,
            -2.0,
            3.0,
            -0.5,
            -4.0,
            1.5,
            -2.0,
            3.0,
            0.0,
            -3.0,
            2.0,
            -1.5,
            4.0,
            0.5,
            -3.0,
            2.0,
            -1.0,
            4.0,
            0.5,
            -3.0,
            3.0,
            -0.5,
            -4.0,
            1.0,
            -2.0,
            3.0,
            -0.5,
            -4.0,
            1.5,
            -2.0,
            3.0,
            0.0,
            -0.03125,
            0.015625,
            -0.015625,
            0.03125,
            0.00390625,
            -0.03125,
            0.0234375,
            -0.01171875,
            0.046875,
            0.0078125,
            -0.0234375,
            0.0234375,
            -0.0078125,
            -0.046875,
            0.01171875,
            -0.0234375,
            0.03125,
            -0.00390625,
            -0.03125,
            0.015625,
            -0.015625,
            0.03125,
            0.0,
            -0.03125,
            0.015625,
            -0.015625,
            0.03125,
            0.00390625,
            -0.03125,
            0.0234375,
            -0.01171875,
        ];
        let (w, s) = mxfp4_repack(&raw).unwrap();
        assert_eq!(s, vec![127, 120]);
        // As one [1, 2, 32] expert stack and as two rows of one matrix.
        let w = Array::from_slice(&w, &[1, 2, 4]).unwrap();
        let s = Array::from_slice(&s, &[1, 2, 1]).unwrap();
        let d = ops::dequantize(&w, &s, None, 32, 4, "mxfp4", None).unwrap();
        let got = ops::astype(&d, crate::mlx::Dtype::F32).unwrap().to_f32_vec().unwrap();
        assert_eq!(got, want.to_vec());
        assert!(mxfp4_repack(&raw[..20]).is_err());
    }

    #[test]
    fn packing_is_a_little_endian_bit_stream() {
        let mut out = Vec::new();
        pack(&[1, 2, 3, 4, 5, 6, 7, 8], 4, &mut out);
        assert_eq!(out, vec![0x8765_4321]);
        let mut out = Vec::new();
        let vals: Vec<u8> = (0..32).collect();
        pack(&vals, 5, &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(out[0] & 0x1f, 0);
        assert_eq!((out[0] >> 5) & 0x1f, 1);
        assert_eq!(((out[0] >> 30) | (out[1] << 2)) & 0x1f, 6);
    }
}
