//! The one decoder-only transformer every architecture runs, assembled from a [`ModelSpec`].
//! Field names follow the checkpoint's tensor names.

use crate::mlx::{compile, ops, Array, Dtype};
use crate::model::arch::spec::{AttentionSpec, Latent, LayerSpec, MlpKind, ModelSpec, NormPlacement, QkNorm};
use crate::model::nn::cache::{Kv, KvCache, Packed};
use crate::model::nn::linear::{Embedding, Linear, Projections};
use crate::model::nn::lora::{LayerPairs, Lora, LoraApply, Target};
use crate::model::nn::moe::{self, Moe};
use crate::model::nn::quant::QuantParams;
use crate::model::weights::WeightStore;
use crate::{Error, Result};

#[derive(Clone)]
struct Attention {
    /// q_proj, k_proj and v_proj (or the checkpoint's fused qkv_proj, split by width).
    qkv: Projections,
    o_proj: Linear,
    q_norm: Option<Array>,
    k_norm: Option<Array>,
    /// The per-head sink logits [n_heads], where the spec has them.
    sinks: Option<Array>,
    spec: AttentionSpec,
}

/// One linear map per head over a shared input: `x [B, 1, S, in]` to `[B, H, S, out]`.
#[derive(Clone)]
pub(crate) enum HeadLinear {
    /// `w` is [H, in, out].
    Dense { w: Array },
    /// Packed per-head matrices as mlx-lm stores them; `transpose` as in `quantized_matmul`
    /// (true: the stored matrix is [H, out, in]; false: [H, in, out]).
    Quantized { w: Array, scales: Array, biases: Array, p: QuantParams, transpose: bool },
}

impl HeadLinear {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            HeadLinear::Dense { w } => ops::matmul(x, w),
            HeadLinear::Quantized { w, scales, biases, p, transpose } => ops::quantized_matmul(
                x,
                w,
                scales,
                Some(biases),
                *transpose,
                p.group_size,
                p.bits,
                QuantParams::MODE,
            ),
        }
    }
}

/// Where the queries come from.
#[derive(Clone)]
enum LatentQuery {
    Direct(Linear),
    LowRank { q_a_proj: Linear, q_a_layernorm: Array, q_b_proj: Linear },
}

/// Multi-head latent attention (DeepSeek). The cache holds, per position, the normed latent
/// `kv_lora_rank` wide (as keys) and the rotated key `qk_rope` wide (as values); every step
/// expands the cached latents into per-head keys and values through `kv_b_proj`'s two halves.
#[derive(Clone)]
struct LatentAttention {
    q: LatentQuery,
    kv_a_proj_with_mqa: Linear,
    kv_a_layernorm: Array,
    /// kv_b_proj's key half: latent -> k_nope per head.
    embed_k: HeadLinear,
    /// kv_b_proj's value half: latent -> v per head.
    embed_v: HeadLinear,
    o_proj: Linear,
    latent: Latent,
    spec: AttentionSpec,
}

/// The RMSNorm epsilon of DeepSeek's q_a_layernorm and kv_a_layernorm (transformers and
/// mlx-lm build them with the default, not the config's rms_norm_eps).
const LATENT_NORM_EPS: f32 = 1e-6;

// One per layer: the inline standard variant's size costs nothing worth a box per call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum SelfAttn {
    Standard(Attention),
    Latent(Box<LatentAttention>),
}

impl SelfAttn {
    fn spec(&self) -> &AttentionSpec {
        match self {
            SelfAttn::Standard(a) => &a.spec,
            SelfAttn::Latent(a) => &a.spec,
        }
    }

    fn forward(
        &self,
        x: &Array,
        cache: Option<&mut KvCache>,
        layer: usize,
        eps: f32,
        padded: Option<&Padded>,
        lora: Option<(LoraApply, &LayerPairs)>,
    ) -> Result<Array> {
        match self {
            SelfAttn::Standard(a) => a.forward(x, cache, layer, eps, padded, lora),
            SelfAttn::Latent(a) => a.forward(x, cache, layer, padded, lora),
        }
    }
}

#[derive(Clone)]
struct Mlp {
    /// gate_proj and up_proj (or the checkpoint's fused gate_up_proj, split in halves).
    gate_up: Projections,
    down_proj: Linear,
    kind: MlpKind,
}

/// A layer's feed-forward block, as its spec says: dense, or a mixture of experts.
#[derive(Clone)]
enum Ffn {
    Dense(Mlp),
    Moe(Box<Moe>),
}

impl Ffn {
    fn forward(&self, x: &Array, lora: Option<(LoraApply, &LayerPairs)>) -> Result<Array> {
        match self {
            Ffn::Dense(m) => m.forward(x, lora),
            // Adapters on a sparse layer's MLP are refused when the adapter is checked
            // (LoraWeights::check); one that got here anyway is an error, never ignored.
            Ffn::Moe(_) if lora.is_some_and(|(_, p)| p.any(&[Target::Gate, Target::Up, Target::Down])) => {
                Err(Error::unsupported("a LoRA adapter on a mixture-of-experts layer's MLP"))
            }
            Ffn::Moe(m) => m.forward(x),
        }
    }
}

#[derive(Clone)]
struct Block {
    self_attn: SelfAttn,
    mlp: Ffn,
    norms: NormPlacement,
    /// The norm before attention; None with post-norms.
    input_layernorm: Option<Array>,
    /// Pre-norm: the norm before the MLP. Sandwich and post-norm: the norm after attention.
    post_attention_layernorm: Array,
    pre_feedforward_layernorm: Option<Array>,
    post_feedforward_layernorm: Option<Array>,
}

/// A loaded decoder.
#[derive(Clone)]
pub struct Transformer {
    spec: ModelSpec,
    embed_tokens: Embedding,
    /// The embedding multiplier, already in the embedding dtype.
    embed_scale: Option<Array>,
    layers: Vec<Block>,
    norm: Array,
    /// None when the head is the embedding table.
    lm_head: Option<Linear>,
}

fn gelu_tanh(x: &Array) -> Result<Array> {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    let dt = x.dtype()?;
    let c = |v: f32| ops::astype(&Array::scalar_f32(v), dt);
    let x3 = ops::multiply(&ops::multiply(x, x)?, x)?;
    let inner = ops::add(x, &ops::multiply(&x3, &c(0.044715)?)?)?;
    let t = ops::tanh(&ops::multiply(&inner, &c((2.0 / std::f32::consts::PI).sqrt())?)?)?;
    let half_x = ops::multiply(x, &c(0.5)?)?;
    ops::multiply(&half_x, &ops::add(&t, &c(1.0)?)?)
}

fn silu(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::sigmoid(x)?)
}

/// `silu(gate) * up`, compiled into one kernel on a GPU.
pub(super) fn swiglu(a: &[Array]) -> Result<Vec<Array>> {
    Ok(vec![ops::multiply(&silu(&a[0])?, &a[1])?])
}

/// `gelu_tanh(gate) * up`, compiled into one kernel on a GPU.
pub(super) fn geglu_tanh(a: &[Array]) -> Result<Vec<Array>> {
    Ok(vec![ops::multiply(&gelu_tanh(&a[0])?, &a[1])?])
}

impl Mlp {
    fn forward(&self, x: &Array, lora: Option<(LoraApply, &LayerPairs)>) -> Result<Array> {
        let mut gu = self.gate_up.forward(x)?;
        if let Some((l, p)) = lora {
            for (y, t) in gu.iter_mut().zip([Target::Gate, Target::Up]) {
                *y = l.apply(y.clone(), x, p, t)?;
            }
        }
        let (g, u) = (&gu[0], &gu[1]);
        let f = match self.kind {
            MlpKind::SwiGlu => swiglu,
            MlpKind::GeGluTanh => geglu_tanh,
        };
        let h = compile::call(f, &[g, u])?.pop().ok_or_else(|| Error::internal("no activation output"))?;
        let y = self.down_proj.forward(&h)?;
        match lora {
            Some((l, p)) => l.apply(y, &h, p, Target::Down),
            None => Ok(y),
        }
    }
}

/// A [L, S] boolean mask for L new queries over S = prefix + L keys in temporal order, under
/// a sliding window: key j is visible to query i iff it is not in the future and fewer than
/// `window` positions back.
fn window_mask(prefix: i32, len: i32, window: i32) -> Result<Array> {
    let q = ops::reshape(&ops::arange(prefix as f64, (prefix + len) as f64, 1.0, Dtype::I32)?, &[len, 1])?;
    let k = ops::reshape(&ops::arange(0.0, (prefix + len) as f64, 1.0, Dtype::I32)?, &[1, prefix + len])?;
    let past = ops::less_equal(&k, &q)?;
    let near = ops::less(&q, &ops::add(&k, &Array::scalar_i32(window))?)?;
    ops::logical_and(&past, &near)
}

/// Left padding of a batch: row b's first `pad[b]` columns are padding.
pub struct RowPad {
    pub pad: Vec<i32>,
}

/// What every layer of one padded-batch forward pass shares, made once per pass: each row's
/// first rope position and its sequence length after the pass, and the masks (one per window
/// size among the layers).
struct Padded {
    starts: Array,
    ends: Vec<i32>,
    masks: Vec<(Option<i32>, Array)>,
}

impl Padded {
    fn new(rows: &RowPad, layers: &[Block], offset: i32, len: i32) -> Result<Padded> {
        // Each row's positions start after its padding.
        let starts: Vec<i32> = rows.pad.iter().map(|p| offset - p).collect();
        let ends: Vec<i32> = starts.iter().map(|s| s + len).collect();
        let starts = Array::from_slice(&starts, &[starts.len() as i32])?;
        let mut masks: Vec<(Option<i32>, Array)> = Vec::new();
        for b in layers {
            let w = b.self_attn.spec().window;
            if !masks.iter().any(|(x, _)| *x == w) {
                // A batch cache keeps every position: the keys are all offset + len columns.
                masks.push((w, batch_mask(&rows.pad, offset, len, offset + len, w)?));
            }
        }
        Ok(Padded { starts, ends, masks })
    }

    fn mask(&self, window: Option<i32>) -> Result<&Array> {
        self.masks
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, m)| m)
            .ok_or_else(|| Error::internal("no mask for a layer's window"))
    }
}

/// A [B, 1, L, S] boolean mask for a left-padded batch: causal, padding columns hidden, and
/// the sliding window applied where the layer has one. Queries are columns offset..offset+L.
fn batch_mask(pad: &[i32], offset: i32, len: i32, keys: i32, window: Option<i32>) -> Result<Array> {
    let b = pad.len() as i32;
    let q =
        ops::reshape(&ops::arange(offset as f64, (offset + len) as f64, 1.0, Dtype::I32)?, &[1, 1, len, 1])?;
    let k = ops::reshape(&ops::arange(0.0, keys as f64, 1.0, Dtype::I32)?, &[1, 1, 1, keys])?;
    let p = Array::from_slice(pad, &[b, 1, 1, 1])?;
    let mut m = ops::logical_and(&ops::less_equal(&k, &q)?, &ops::greater_equal(&k, &p)?)?;
    if let Some(w) = window {
        m = ops::logical_and(&m, &ops::less(&q, &ops::add(&k, &Array::scalar_i32(w))?)?)?;
    }
    Ok(m)
}

/// The most negative finite value of a float dtype (hides a score from the softmax).
fn lowest(dt: Dtype) -> Result<Array> {
    let v = match dt {
        Dtype::F16 => -65504.0,
        Dtype::BF16 => -3.389_531_4e38,
        _ => f32::MIN,
    };
    ops::astype(&Array::scalar_f32(v), dt)
}

/// Attention over a quantized cache, as mlx-lm computes it: scores by a quantized matmul
/// against the packed keys, a float32-accumulated softmax, values by a quantized matmul.
/// q: [B, Hq, L, D]; keys and values packed [B, Hkv, S, ...]. `sinks` ([Hq]) join the
/// softmax as one more column that is dropped before the values are weighted.
#[allow(clippy::too_many_arguments)]
fn quantized_attention(
    q: &Array,
    keys: &Packed,
    values: &Packed,
    scale: f32,
    mask: ops::AttentionMask,
    sinks: Option<&Array>,
    bits: i32,
    group_size: i32,
) -> Result<Array> {
    let qs = q.shape();
    let (b, hq, l, d) = (qs[0], qs[1], qs[2], qs[3]);
    let kw = keys.w.shape();
    let (hkv, s) = (kw[1], kw[2]);
    let rep = hq / hkv;
    let dt = q.dtype()?;
    let q = ops::multiply(q, &ops::astype(&Array::scalar_f32(scale), dt)?)?;
    // Grouped queries: [B, Hkv, rep, L, D] against [B, Hkv, 1, S, ...].
    let q = ops::reshape(&q, &[b, hkv, rep, l, d])?;
    let grouped = |a: &Array| -> Result<Array> {
        let sh = a.shape();
        ops::reshape(a, &[sh[0], sh[1], 1, sh[2], sh[3]])
    };
    let (k, v) = (keys.map(grouped)?, values.map(grouped)?);
    let mut scores =
        ops::quantized_matmul(&q, &k.w, &k.scales, Some(&k.biases), true, group_size, bits, "affine")?;
    let causal;
    let m = match mask {
        ops::AttentionMask::None => None,
        ops::AttentionMask::Causal => {
            let qi = ops::reshape(&ops::arange((s - l) as f64, s as f64, 1.0, Dtype::I32)?, &[l, 1])?;
            let ki = ops::reshape(&ops::arange(0.0, s as f64, 1.0, Dtype::I32)?, &[1, s])?;
            causal = ops::less_equal(&ki, &qi)?;
            Some(&causal)
        }
        ops::AttentionMask::Array(a) => Some(a),
    };
    if let Some(m) = m {
        // A [B, 1, L, S] mask gains the repeat axis; [L, S] broadcasts as it is.
        let m = if m.ndim() == 4 {
            let ms = m.shape();
            ops::reshape(m, &[ms[0], ms[1], 1, ms[2], ms[3]])?
        } else {
            m.clone()
        };
        scores = ops::where_(&m, &scores, &lowest(scores.dtype()?)?)?;
    }
    let p = match sinks {
        None => ops::softmax(&scores, -1, true)?,
        Some(sk) => {
            let sd = scores.shape();
            let col = ops::reshape(&ops::astype(sk, scores.dtype()?)?, &[1, hkv, rep, 1, 1])?;
            let col = ops::broadcast_to(&col, &[sd[0], sd[1], sd[2], sd[3], 1])?;
            let p = ops::softmax(&ops::concatenate(&[&scores, &col], -1)?, -1, true)?;
            ops::slice_axis(&p, -1, 0, s)?
        }
    };
    let o = ops::quantized_matmul(&p, &v.w, &v.scales, Some(&v.biases), false, group_size, bits, "affine")?;
    ops::reshape(&o, &[b, hq, l, d])
}

/// The mask for L new queries: the batch's where rows are padded, none for one query, else
/// causal, or windowed where a sliding window hides keys. `slot` holds a mask made here.
fn attention_mask<'a>(
    padded: Option<&'a Padded>,
    window: Option<i32>,
    l: i32,
    window_prefix: Option<i32>,
    slot: &'a mut Option<Array>,
) -> Result<ops::AttentionMask<'a>> {
    Ok(if let Some(p) = padded {
        ops::AttentionMask::Array(p.mask(window)?)
    } else if l == 1 {
        ops::AttentionMask::None
    } else {
        match (window_prefix, window) {
            (Some(prefix), Some(w)) if prefix + l > w => {
                ops::AttentionMask::Array(slot.insert(window_mask(prefix, l, w)?))
            }
            _ => ops::AttentionMask::Causal,
        }
    })
}

impl LatentAttention {
    /// Rotates `x`'s rope dimensions ([B, H, L, qk_rope]) for its positions, and applies the
    /// rope's attention factor.
    fn rotate(&self, x: &Array, offset: i32, padded: Option<&Padded>) -> Result<Array> {
        let Some(r) = &self.spec.rope else { return Ok(x.clone()) };
        let t = self.latent.interleaved;
        let y = match padded {
            None => r.apply_with(x, offset, t)?,
            Some(p) => r.apply_rows_with(x, &p.starts, &p.ends, t)?,
        };
        if self.latent.rope_gain == 1.0 {
            return Ok(y);
        }
        ops::multiply(&y, &ops::astype(&Array::scalar_f32(self.latent.rope_gain), y.dtype()?)?)
    }

    fn forward(
        &self,
        x: &Array,
        cache: Option<&mut KvCache>,
        layer: usize,
        padded: Option<&Padded>,
        lora: Option<(LoraApply, &LayerPairs)>,
    ) -> Result<Array> {
        if lora.is_some_and(|(_, p)| p.any(&[Target::Q, Target::K, Target::V, Target::O])) {
            return Err(Error::unsupported("a LoRA adapter on multi-head latent attention"));
        }
        let (s, lt) = (&self.spec, &self.latent);
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let h = s.n_heads;
        let q = match &self.q {
            LatentQuery::Direct(p) => p.forward(x)?,
            LatentQuery::LowRank { q_a_proj, q_a_layernorm, q_b_proj } => q_b_proj
                .forward(&ops::rms_norm(&q_a_proj.forward(x)?, Some(q_a_layernorm), LATENT_NORM_EPS)?)?,
        };
        let qd = lt.qk_nope + lt.qk_rope;
        let q = ops::transpose(&ops::reshape(&q, &[b, l, h, qd])?, &[0, 2, 1, 3])?;
        let q_nope = ops::slice_axis(&q, -1, 0, lt.qk_nope)?;
        let q_pe = ops::slice_axis(&q, -1, lt.qk_nope, qd)?;
        let ckv = self.kv_a_proj_with_mqa.forward(x)?;
        let kv = lt.kv_lora_rank;
        let latent =
            ops::rms_norm(&ops::slice_axis(&ckv, -1, 0, kv)?, Some(&self.kv_a_layernorm), LATENT_NORM_EPS)?;
        // One shared "head": [B, L, D] and [B, 1, L, D] hold the same values in the same order.
        let latent = ops::reshape(&latent, &[b, 1, l, kv])?;
        let k_pe = ops::reshape(&ops::slice_axis(&ckv, -1, kv, kv + lt.qk_rope)?, &[b, 1, l, lt.qk_rope])?;
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let q_pe = self.rotate(&q_pe, offset, padded)?;
        let k_pe = self.rotate(&k_pe, offset, padded)?;
        let (latents, k_pes, window_prefix) = match cache {
            Some(c) => {
                let att = c.update(layer, &latent, &k_pe)?;
                match att.kv {
                    Kv::Dense { keys, values } => (keys, values, att.window_prefix),
                    Kv::Quantized { .. } => {
                        // KvQuant::check refuses latent attention before a cache is made.
                        return Err(Error::unsupported(
                            "a quantized KV cache with multi-head latent attention",
                        ));
                    }
                }
            }
            None => (latent, k_pe, Some(0)),
        };
        let total = latents.dim(2)?;
        let k_nope = self.embed_k.forward(&latents)?;
        let values = self.embed_v.forward(&latents)?;
        let k_pe = ops::broadcast_to(&k_pes, &[b, h, total, lt.qk_rope])?;
        let keys = ops::concatenate(&[&k_nope, &k_pe], -1)?;
        let queries = ops::concatenate(&[&q_nope, &q_pe], -1)?;
        let mut mask_arr = None;
        let mask = attention_mask(padded, s.window, l, window_prefix, &mut mask_arr)?;
        let o = ops::scaled_dot_product_attention(&queries, &keys, &values, s.scale, mask, None)?;
        let o = ops::reshape(&ops::transpose(&o, &[0, 2, 1, 3])?, &[b, l, h * lt.v_head_dim])?;
        self.o_proj.forward(&o)
    }
}

impl Attention {
    /// Without a cache (training), attention covers `x`'s own positions only, from 0.
    fn forward(
        &self,
        x: &Array,
        cache: Option<&mut KvCache>,
        layer: usize,
        eps: f32,
        padded: Option<&Padded>,
        lora: Option<(LoraApply, &LayerPairs)>,
    ) -> Result<Array> {
        let s = &self.spec;
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let heads = [s.n_heads, s.n_kv_heads, s.n_kv_heads];
        let norm = |y: &Array, w: &Option<Array>| -> Result<Array> {
            match w {
                Some(w) => ops::rms_norm(y, Some(w), eps),
                None => Ok(y.clone()),
            }
        };
        let full_width = s.qk_norm == Some(QkNorm::FullWidth);
        let lora = lora.filter(|(_, p)| p.any(&[Target::Q, Target::K, Target::V]));
        let qkv = if lora.is_none() && !full_width {
            self.qkv.forward_heads(x, &heads, s.head_dim)?
        } else {
            // Each projection whole: adapters add to it, a full-width norm normalizes it,
            // and only then is it split into heads.
            let outs = self.qkv.forward(x)?;
            let mut split = Vec::with_capacity(3);
            for (i, ((y, t), n)) in
                outs.into_iter().zip([Target::Q, Target::K, Target::V]).zip(heads).enumerate()
            {
                let y = match lora {
                    Some((lo, p)) => lo.apply(y, x, p, t)?,
                    None => y,
                };
                let y = match (full_width, i) {
                    (true, 0) => norm(&y, &self.q_norm)?,
                    (true, 1) => norm(&y, &self.k_norm)?,
                    _ => y,
                };
                split.push(ops::transpose(&ops::reshape(&y, &[b, l, n, s.head_dim])?, &[0, 2, 1, 3])?);
            }
            split
        };
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let (q, k) = if s.qk_norm == Some(QkNorm::PerHead) {
            (norm(&qkv[0], &self.q_norm)?, norm(&qkv[1], &self.k_norm)?)
        } else {
            (qkv[0].clone(), qkv[1].clone())
        };
        let (q, k) = match (&s.rope, padded) {
            (None, _) => (q, k),
            (Some(r), None) => (r.apply(&q, offset)?, r.apply(&k, offset)?),
            (Some(r), Some(p)) => {
                (r.apply_rows(&q, &p.starts, &p.ends)?, r.apply_rows(&k, &p.starts, &p.ends)?)
            }
        };
        let v = qkv[2].clone();
        let (kv, window_prefix) = match cache {
            Some(c) => {
                let att = c.update(layer, &k, &v)?;
                (att.kv, att.window_prefix)
            }
            None => (Kv::Dense { keys: k, values: v }, Some(0)),
        };
        let mut mask_arr = None;
        let mask = attention_mask(padded, s.window, l, window_prefix, &mut mask_arr)?;
        let o = match &kv {
            Kv::Dense { keys, values } => {
                ops::scaled_dot_product_attention(&q, keys, values, s.scale, mask, self.sinks.as_ref())?
            }
            Kv::Quantized { keys, values, bits, group_size } => {
                quantized_attention(&q, keys, values, s.scale, mask, self.sinks.as_ref(), *bits, *group_size)?
            }
        };
        let o = ops::reshape(&ops::transpose(&o, &[0, 2, 1, 3])?, &[b, l, s.n_heads * s.head_dim])?;
        let y = self.o_proj.forward(&o)?;
        match lora {
            Some((lo, p)) => lo.apply(y, &o, p, Target::O),
            None => Ok(y),
        }
    }
}

impl Block {
    /// Attention and MLP with their residuals; `i` is the block's layer index.
    fn forward(
        &self,
        i: usize,
        x: &Array,
        cache: Option<&mut KvCache>,
        eps: f32,
        padded: Option<&Padded>,
        lora: Option<(LoraApply, &LayerPairs)>,
    ) -> Result<Array> {
        let norm = |y: &Array, w: Option<&Array>| -> Result<Array> {
            match w {
                Some(w) => ops::rms_norm(y, Some(w), eps),
                None => Ok(y.clone()),
            }
        };
        let r =
            self.self_attn.forward(&norm(x, self.input_layernorm.as_ref())?, cache, i, eps, padded, lora)?;
        match self.norms {
            NormPlacement::Pre => {
                let hmid = ops::add(x, &r)?;
                let m = self.mlp.forward(&norm(&hmid, Some(&self.post_attention_layernorm))?, lora)?;
                ops::add(&hmid, &m)
            }
            NormPlacement::Sandwich | NormPlacement::Post => {
                let hmid = ops::add(x, &norm(&r, Some(&self.post_attention_layernorm))?)?;
                let m = self.mlp.forward(&norm(&hmid, self.pre_feedforward_layernorm.as_ref())?, lora)?;
                ops::add(&hmid, &norm(&m, self.post_feedforward_layernorm.as_ref())?)
            }
        }
    }
}

impl Transformer {
    /// Builds the decoder from `store`. `prefix` is where the decoder's tensors live
    /// ("model." or "language_model.model."), `head` the output head's module name.
    pub fn build(spec: ModelSpec, store: &mut WeightStore, prefix: &str, head: &str) -> Result<Transformer> {
        let h = spec.hidden;
        let style = spec.norm_style;
        let embed_tokens = store.embedding(&format!("{prefix}embed_tokens"), spec.vocab, h)?;
        let embed_scale = match spec.embed_scale {
            // Rounded through the embedding dtype, as the reference implementation does.
            Some(sc) => {
                let a = ops::astype(&Array::scalar_f32(sc as f32), embed_tokens.dtype()?)?;
                a.eval()?;
                Some(a)
            }
            None => None,
        };
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, ls) in spec.layers.iter().enumerate() {
            layers.push(Self::block(store, ls, &format!("{prefix}layers.{i}."), h, &spec)?);
        }
        let norm = store.norm(&format!("{prefix}norm.weight"), h, style)?;
        let lm_head =
            if spec.tie_embeddings { None } else { Some(store.linear(head, h, spec.vocab, false)?) };
        Ok(Transformer { spec, embed_tokens, embed_scale, layers, norm, lm_head })
    }

    fn block(store: &mut WeightStore, ls: &LayerSpec, p: &str, h: i32, spec: &ModelSpec) -> Result<Block> {
        let a = &ls.attn;
        let style = spec.norm_style;
        let (qd, kvd) = (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim);
        // Norm widths: one head, or the whole projection.
        let (qn, kn) = match a.qk_norm {
            Some(QkNorm::PerHead) => (a.head_dim, a.head_dim),
            Some(QkNorm::FullWidth) => (qd, kvd),
            None => (0, 0),
        };
        let qk_norm = |name: &str, width: i32, store: &mut WeightStore| -> Result<Option<Array>> {
            a.qk_norm.map(|_| store.norm(&format!("{p}self_attn.{name}.weight"), width, style)).transpose()
        };
        let self_attn = match &a.latent {
            Some(lt) => SelfAttn::Latent(Box::new(Self::latent_attention(store, a, lt, p, h, style)?)),
            None => SelfAttn::Standard(Attention {
                qkv: store.projections_or_fused(
                    &format!("{p}self_attn.qkv_proj"),
                    &["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}self_attn.{n}")),
                    h,
                    &[qd, kvd, kvd],
                    a.qkv_bias,
                )?,
                o_proj: store.linear(&format!("{p}self_attn.o_proj"), qd, h, a.o_bias)?,
                q_norm: qk_norm("q_norm", qn, store)?,
                k_norm: qk_norm("k_norm", kn, store)?,
                sinks: a
                    .sinks
                    .then(|| store.float(&format!("{p}self_attn.sinks"), &[a.n_heads]))
                    .transpose()?,
                spec: a.clone(),
            }),
        };
        let mlp = match &ls.moe {
            Some(m) => Ffn::Moe(Box::new(moe::load(store, p, m, h, ls.mlp)?)),
            None => Ffn::Dense(Mlp {
                gate_up: store.projections_or_fused(
                    &format!("{p}mlp.gate_up_proj"),
                    &["gate_proj", "up_proj"].map(|n| format!("{p}mlp.{n}")),
                    h,
                    &[ls.intermediate, ls.intermediate],
                    ls.mlp_bias,
                )?,
                down_proj: store.linear(&format!("{p}mlp.down_proj"), ls.intermediate, h, ls.mlp_bias)?,
                kind: ls.mlp,
            }),
        };
        let norm_if = |on: bool, name: &str, store: &mut WeightStore| -> Result<Option<Array>> {
            on.then(|| store.norm(&format!("{p}{name}.weight"), h, style)).transpose()
        };
        let placement = ls.norms;
        Ok(Block {
            self_attn,
            mlp,
            norms: placement,
            input_layernorm: norm_if(placement != NormPlacement::Post, "input_layernorm", store)?,
            post_attention_layernorm: store.norm(&format!("{p}post_attention_layernorm.weight"), h, style)?,
            pre_feedforward_layernorm: norm_if(
                placement == NormPlacement::Sandwich,
                "pre_feedforward_layernorm",
                store,
            )?,
            post_feedforward_layernorm: norm_if(
                placement != NormPlacement::Pre,
                "post_feedforward_layernorm",
                store,
            )?,
        })
    }

    /// Latent attention's weights: transformers' layout (`q_proj` or `q_a_proj`/`q_b_proj`,
    /// `kv_b_proj` [H * (qk_nope + v), kv_lora_rank], dense or quantized) or mlx-lm's, where
    /// `kv_b_proj` is stored split per head as `embed_q` [H, kv_lora_rank, qk_nope] and
    /// `unembed_out` [H, v, kv_lora_rank].
    fn latent_attention(
        store: &mut WeightStore,
        a: &AttentionSpec,
        lt: &Latent,
        p: &str,
        h: i32,
        style: crate::model::arch::spec::NormStyle,
    ) -> Result<LatentAttention> {
        let n = a.n_heads;
        let qd = lt.qk_nope + lt.qk_rope;
        let m = |x: &str| format!("{p}self_attn.{x}");
        let q = match lt.q_lora_rank {
            None => LatentQuery::Direct(store.linear(&m("q_proj"), h, n * qd, false)?),
            Some(r) => LatentQuery::LowRank {
                q_a_proj: store.linear(&m("q_a_proj"), h, r, a.qkv_bias)?,
                q_a_layernorm: store.norm(&m("q_a_layernorm.weight"), r, style)?,
                q_b_proj: store.linear(&m("q_b_proj"), r, n * qd, false)?,
            },
        };
        let kv = lt.kv_lora_rank;
        let (embed_k, embed_v) = if store.contains(&m("embed_q.weight")) {
            let k = store.head_linear(&m("embed_q"), n, kv, lt.qk_nope, false)?;
            let v = store.head_linear(&m("unembed_out"), n, lt.v_head_dim, kv, true)?;
            (k, v)
        } else {
            let rows = n * (lt.qk_nope + lt.v_head_dim);
            let w = store.dense_or_dequantized(&m("kv_b_proj"), rows, kv)?;
            let w = ops::reshape(&w, &[n, lt.qk_nope + lt.v_head_dim, kv])?;
            let wk = ops::contiguous(&ops::transpose(&ops::slice_axis(&w, 1, 0, lt.qk_nope)?, &[0, 2, 1])?)?;
            let wv = ops::contiguous(&ops::transpose(
                &ops::slice_axis(&w, 1, lt.qk_nope, lt.qk_nope + lt.v_head_dim)?,
                &[0, 2, 1],
            )?)?;
            crate::mlx::eval(&[&wk, &wv])?;
            (HeadLinear::Dense { w: wk }, HeadLinear::Dense { w: wv })
        };
        Ok(LatentAttention {
            q,
            kv_a_proj_with_mqa: store.linear(&m("kv_a_proj_with_mqa"), h, kv + lt.qk_rope, a.qkv_bias)?,
            kv_a_layernorm: store.norm(&m("kv_a_layernorm.weight"), kv, style)?,
            embed_k,
            embed_v,
            o_proj: store.linear(&m("o_proj"), n * lt.v_head_dim, h, a.o_bias)?,
            latent: *lt,
            spec: a.clone(),
        })
    }

    /// Logits [B, L, vocab] for `tokens` ([B, L] int32) following what `cache` holds; adds the
    /// new keys and values to the cache and advances its offset by L.
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        let h = self.hidden(tokens, cache, None)?;
        self.logits(&h)
    }

    /// Logits [B, vocab] of the last position only (the head runs on one position per row,
    /// not on all L); otherwise as [`forward`](Self::forward) or, with `rows`,
    /// [`forward_padded`](Self::forward_padded).
    pub fn forward_last(&self, tokens: &Array, cache: &mut KvCache, rows: Option<&RowPad>) -> Result<Array> {
        if let Some(r) = rows {
            if r.pad.len() as i32 != tokens.dim(0)? {
                return Err(Error::invalid(format!(
                    "{} padding entries for {} rows",
                    r.pad.len(),
                    tokens.dim(0)?
                )));
            }
        }
        let h = self.hidden(tokens, cache, rows)?;
        let l = h.dim(1)?;
        let b = h.dim(0)?;
        let logits = self.logits(&ops::slice_axis(&h, 1, l - 1, l)?)?;
        ops::reshape(&logits, &[b, -1])
    }

    /// The final hidden states [B, L, hidden] (after the last norm).
    pub fn hidden(&self, tokens: &Array, cache: &mut KvCache, rows: Option<&RowPad>) -> Result<Array> {
        self.hidden_with(tokens, Some(cache), rows, None)
    }

    /// Logits [B, vocab] of the last position with adapter `lora` applied (see
    /// [`forward_last`](Self::forward_last)).
    pub fn forward_last_with(
        &self,
        tokens: &Array,
        cache: &mut KvCache,
        lora: Option<&Lora>,
    ) -> Result<Array> {
        let h = self.hidden_with(tokens, Some(cache), None, lora)?;
        let (b, l) = (h.dim(0)?, h.dim(1)?);
        let logits = self.logits(&ops::slice_axis(&h, 1, l - 1, l)?)?;
        ops::reshape(&logits, &[b, -1])
    }

    /// Logits [B, L, vocab] of whole sequences (no cache: every position attends to its own
    /// sequence from 0), with `lora` applied; with `checkpoint`, each layer's activations are
    /// recomputed in the backward pass instead of kept. What training differentiates.
    pub fn forward_train(&self, tokens: &Array, lora: Option<&Lora>, checkpoint: bool) -> Result<Array> {
        if !checkpoint {
            let h = self.hidden_with(tokens, None, None, lora)?;
            return self.logits(&h);
        }
        let eps = self.spec.norm_eps;
        let mut x = self.embed(tokens)?;
        for (i, b) in self.layers.iter().enumerate() {
            // The layer as a function of its input and its adapter arrays, so the recomputation
            // sees the same values the forward pass did. It owns what it uses of the adapter: MLX
            // calls it again during the backward pass.
            let owned: Option<(LoraApply, LayerPairs)> =
                lora.and_then(|l| l.layer(i).map(|p| (l.at(i), p.clone())));
            let arrays: Vec<Array> = owned
                .as_ref()
                .map(|(_, p)| {
                    Target::ALL
                        .iter()
                        .filter_map(|&t| p.get(t))
                        .flat_map(|(a, b)| [a.clone(), b.clone()])
                        .collect()
                })
                .unwrap_or_default();
            // MLX keeps the function in the graph past this call: it owns its block (a
            // clone shares the weights' buffers).
            let block = b.clone();
            let f = crate::mlx::autodiff::Checkpointed::new(move |inp: &[Array]| {
                let adapted = match &owned {
                    Some((l, p)) => Some((*l, p.with_arrays(&inp[1..])?)),
                    None => None,
                };
                let pl = adapted.as_ref().map(|(l, p)| (*l, p));
                Ok(vec![block.forward(i, &inp[0], None, eps, None, pl)?])
            })?;
            let mut inputs = vec![x];
            inputs.extend(arrays);
            x = f.call(&inputs)?.pop().ok_or_else(|| Error::internal("a layer gave no output"))?;
        }
        self.logits(&ops::rms_norm(&x, Some(&self.norm), eps)?)
    }

    fn embed(&self, tokens: &Array) -> Result<Array> {
        if tokens.ndim() != 2 {
            return Err(Error::invalid(format!("tokens must be [batch, length], got {:?}", tokens.shape())));
        }
        let x = self.embed_tokens.lookup(tokens)?;
        match &self.embed_scale {
            Some(sc) => ops::multiply(&x, sc),
            None => Ok(x),
        }
    }

    /// The final hidden states, with a cache or without one (see
    /// [`forward_train`](Self::forward_train)) and an adapter.
    pub fn hidden_with(
        &self,
        tokens: &Array,
        mut cache: Option<&mut KvCache>,
        rows: Option<&RowPad>,
        lora: Option<&Lora>,
    ) -> Result<Array> {
        let mut x = self.embed(tokens)?;
        let l = tokens.dim(1)?;
        let eps = self.spec.norm_eps;
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let padded = rows.map(|r| Padded::new(r, &self.layers, offset, l)).transpose()?;
        for (i, b) in self.layers.iter().enumerate() {
            let pairs = lora.and_then(|lo| lo.layer(i).map(|p| (lo.at(i), p)));
            x = b.forward(i, &x, cache.as_deref_mut(), eps, padded.as_ref(), pairs)?;
        }
        if let Some(c) = cache {
            c.advance(l)?;
        }
        ops::rms_norm(&x, Some(&self.norm), eps)
    }

    /// Logits from final hidden states.
    pub fn logits(&self, h: &Array) -> Result<Array> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(h)?,
            None => self.embed_tokens.as_linear(h)?,
        };
        match self.spec.final_logit_softcap {
            Some(cap) => {
                let c = ops::astype(&Array::scalar_f32(cap), logits.dtype()?)?;
                ops::multiply(&ops::tanh(&ops::divide(&logits, &c)?)?, &c)
            }
            None => Ok(logits),
        }
    }

    /// A copy of this transformer with adapter `w` at `scale` added into the weights of the
    /// projections it covers (quantized ones dequantized, updated and quantized again with
    /// their bits and group size): the adapted model at the base model's speed. Everything
    /// else is shared with this one (MLX arrays are immutable).
    pub fn fused(&self, w: &crate::model::nn::lora::LoraWeights, scale: f32) -> Result<Transformer> {
        w.check(&self.spec)?;
        let mut out = self.clone();
        for (i, b) in out.layers.iter_mut().enumerate() {
            let Some(p) = w.layer(i) else { continue };
            let delta = |t: Target| -> Result<Option<Array>> {
                match p.get(t) {
                    // [in, out]
                    Some((a, bb)) => {
                        Ok(Some(ops::multiply(&ops::matmul(a, bb)?, &Array::scalar_f32(scale))?))
                    }
                    None => Ok(None),
                }
            };
            match &mut b.self_attn {
                SelfAttn::Standard(a) => {
                    a.qkv = a.qkv.plus(&[delta(Target::Q)?, delta(Target::K)?, delta(Target::V)?])?;
                    a.o_proj = a.o_proj.plus(delta(Target::O)?.as_ref())?;
                }
                SelfAttn::Latent(_) if p.any(&[Target::Q, Target::K, Target::V, Target::O]) => {
                    return Err(Error::unsupported("a LoRA adapter on multi-head latent attention"));
                }
                SelfAttn::Latent(_) => {}
            }
            if let Ffn::Dense(mlp) = &mut b.mlp {
                mlp.gate_up = mlp.gate_up.plus(&[delta(Target::Gate)?, delta(Target::Up)?])?;
                mlp.down_proj = mlp.down_proj.plus(delta(Target::Down)?.as_ref())?;
            }
        }
        Ok(out)
    }

    /// Quantization of the model's linear layers (bits, group size) where it has any.
    pub fn quantization(&self) -> Option<(i32, i32)> {
        let q = self
            .layers
            .first()
            .and_then(|b| match &b.self_attn {
                SelfAttn::Standard(a) => a.qkv.quant(),
                SelfAttn::Latent(a) => a.o_proj.quant(),
            })
            .or_else(|| self.embed_tokens.quant())?;
        Some((q.bits, q.group_size))
    }

    /// The spec the transformer was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn dtype(&self) -> Result<Dtype> {
        self.norm.dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlx::random;

    fn normal(shape: &[i32], seed: u64) -> Array {
        random::normal(shape, Dtype::F32, Some(&random::key(seed).unwrap())).unwrap()
    }

    fn max_abs_diff(a: &Array, b: &Array) -> f32 {
        let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Attention over quantized keys and values with sink logits equals MLX's fused attention
    /// over the same keys and values dequantized, with the same sinks: the sinks join the
    /// softmax there too (grouped heads matched to their sink), and leaving them out changes
    /// the result.
    #[test]
    fn quantized_attention_applies_the_sinks_as_the_fused_kernel_does() {
        let (b, hq, hkv, l, s, d) = (2, 4, 2, 3, 7, 32);
        let q = normal(&[b, hq, l, d], 1);
        let pack = |a: &Array| {
            let (w, scales, biases) = ops::quantize(a, 32, 8, "affine").unwrap();
            let dense = ops::dequantize(&w, &scales, Some(&biases), 32, 8, "affine", None).unwrap();
            (Packed { w, scales, biases }, dense)
        };
        let (kq, kd) = pack(&normal(&[b, hkv, s, d], 2));
        let (vq, vd) = pack(&normal(&[b, hkv, s, d], 3));
        let sinks = Array::from_slice(&[1.5f32, -0.5, 0.25, 2.0], &[hq]).unwrap();
        let scale = (d as f32).powf(-0.5);
        for mask in [0, 1] {
            let m = || if mask == 0 { ops::AttentionMask::None } else { ops::AttentionMask::Causal };
            let ours = quantized_attention(&q, &kq, &vq, scale, m(), Some(&sinks), 8, 32).unwrap();
            let fused = ops::scaled_dot_product_attention(&q, &kd, &vd, scale, m(), Some(&sinks)).unwrap();
            let d = max_abs_diff(&ours, &fused);
            assert!(
                d < 1e-5,
                "mask {mask}: quantized attention with sinks differs from the fused kernel by {d}"
            );
            let without = quantized_attention(&q, &kq, &vq, scale, m(), None, 8, 32).unwrap();
            assert!(max_abs_diff(&without, &fused) > 1e-2, "mask {mask}: the sinks change nothing");
        }
    }
}
