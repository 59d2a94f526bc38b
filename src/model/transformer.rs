//! The one decoder-only transformer every architecture runs, assembled from a [`ModelSpec`].
//! Field names follow the checkpoint's tensor names.

use super::cache::KvCache;
use super::spec::{AttentionSpec, LayerSpec, MlpKind, ModelSpec};
use super::weights::{Embedding, Linear, Projections, WeightStore};
use crate::mlx::{compile, ops, Array, Dtype};
use crate::{Error, Result};

struct Attention {
    /// q_proj, k_proj and v_proj.
    qkv: Projections,
    o_proj: Linear,
    q_norm: Option<Array>,
    k_norm: Option<Array>,
    spec: AttentionSpec,
}

struct Mlp {
    /// gate_proj and up_proj.
    gate_up: Projections,
    down_proj: Linear,
    kind: MlpKind,
}

struct Block {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: Array,
    /// Llama: the norm before the MLP. Gemma: the norm after attention.
    post_attention_layernorm: Array,
    pre_feedforward_layernorm: Option<Array>,
    post_feedforward_layernorm: Option<Array>,
}

/// A loaded decoder.
pub struct Transformer {
    pub spec: ModelSpec,
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
fn swiglu(a: &[Array]) -> Result<Vec<Array>> {
    Ok(vec![ops::multiply(&silu(&a[0])?, &a[1])?])
}

/// `gelu_tanh(gate) * up`, compiled into one kernel on a GPU.
fn geglu_tanh(a: &[Array]) -> Result<Vec<Array>> {
    Ok(vec![ops::multiply(&gelu_tanh(&a[0])?, &a[1])?])
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let gu = self.gate_up.forward(x)?;
        let (g, u) = (&gu[0], &gu[1]);
        let f = match self.kind {
            MlpKind::SwiGlu => swiglu,
            MlpKind::GeGluTanh => geglu_tanh,
        };
        let h = compile::call(f, &[g, u])?.pop().ok_or_else(|| Error::internal("no activation output"))?;
        self.down_proj.forward(&h)
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
/// first rope position, and the masks (one per window size among the layers).
struct Padded {
    starts: Array,
    masks: Vec<(Option<i32>, Array)>,
}

impl Padded {
    fn new(rows: &RowPad, layers: &[Block], offset: i32, len: i32) -> Result<Padded> {
        // Each row's positions start after its padding.
        let starts: Vec<i32> = rows.pad.iter().map(|p| offset - p).collect();
        let starts = Array::from_slice(&starts, &[starts.len() as i32])?;
        let mut masks: Vec<(Option<i32>, Array)> = Vec::new();
        for b in layers {
            let w = b.self_attn.spec.window;
            if !masks.iter().any(|(x, _)| *x == w) {
                // A batch cache keeps every position: the keys are all offset + len columns.
                masks.push((w, batch_mask(&rows.pad, offset, len, offset + len, w)?));
            }
        }
        Ok(Padded { starts, masks })
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

impl Attention {
    fn forward(
        &self,
        x: &Array,
        cache: &mut KvCache,
        layer: usize,
        eps: f32,
        padded: Option<&Padded>,
    ) -> Result<Array> {
        let s = &self.spec;
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        let qkv = self.qkv.forward_heads(x, &[s.n_heads, s.n_kv_heads, s.n_kv_heads], s.head_dim)?;
        let norm = |y: &Array, w: &Option<Array>| -> Result<Array> {
            match w {
                Some(w) => ops::rms_norm(y, Some(w), eps),
                None => Ok(y.clone()),
            }
        };
        let offset = cache.offset();
        let q = norm(&qkv[0], &self.q_norm)?;
        let k = norm(&qkv[1], &self.k_norm)?;
        let (q, k) = match padded {
            None => (s.rope.apply(&q, offset)?, s.rope.apply(&k, offset)?),
            Some(p) => (s.rope.apply_rows(&q, &p.starts)?, s.rope.apply_rows(&k, &p.starts)?),
        };
        let v = qkv[2].clone();
        let att = cache.update(layer, &k, &v)?;
        let mask_arr;
        let mask = if let Some(p) = padded {
            ops::AttentionMask::Array(p.mask(s.window)?)
        } else if l == 1 {
            ops::AttentionMask::None
        } else {
            match (att.window_prefix, s.window) {
                (Some(prefix), Some(w)) if prefix + l > w => {
                    mask_arr = window_mask(prefix, l, w)?;
                    ops::AttentionMask::Array(&mask_arr)
                }
                _ => ops::AttentionMask::Causal,
            }
        };
        let o = ops::scaled_dot_product_attention(&q, &att.keys, &att.values, s.scale, mask)?;
        let o = ops::reshape(&ops::transpose(&o, &[0, 2, 1, 3])?, &[b, l, s.n_heads * s.head_dim])?;
        self.o_proj.forward(&o)
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
        let self_attn = Attention {
            qkv: store.projections(
                &["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}self_attn.{n}")),
                h,
                &[qd, kvd, kvd],
                a.qkv_bias,
            )?,
            o_proj: store.linear(&format!("{p}self_attn.o_proj"), qd, h, a.o_bias)?,
            q_norm: a
                .qk_norm
                .then(|| store.norm(&format!("{p}self_attn.q_norm.weight"), a.head_dim, style))
                .transpose()?,
            k_norm: a
                .qk_norm
                .then(|| store.norm(&format!("{p}self_attn.k_norm.weight"), a.head_dim, style))
                .transpose()?,
            spec: a.clone(),
        };
        let mlp = Mlp {
            gate_up: store.projections(
                &["gate_proj", "up_proj"].map(|n| format!("{p}mlp.{n}")),
                h,
                &[ls.intermediate, ls.intermediate],
                ls.mlp_bias,
            )?,
            down_proj: store.linear(&format!("{p}mlp.down_proj"), ls.intermediate, h, ls.mlp_bias)?,
            kind: ls.mlp,
        };
        let sandwich = |name: &str, store: &mut WeightStore| -> Result<Option<Array>> {
            ls.sandwich_norms.then(|| store.norm(&format!("{p}{name}.weight"), h, style)).transpose()
        };
        Ok(Block {
            self_attn,
            mlp,
            input_layernorm: store.norm(&format!("{p}input_layernorm.weight"), h, style)?,
            post_attention_layernorm: store.norm(&format!("{p}post_attention_layernorm.weight"), h, style)?,
            pre_feedforward_layernorm: sandwich("pre_feedforward_layernorm", store)?,
            post_feedforward_layernorm: sandwich("post_feedforward_layernorm", store)?,
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
        if tokens.ndim() != 2 {
            return Err(Error::invalid(format!("tokens must be [batch, length], got {:?}", tokens.shape())));
        }
        let l = tokens.dim(1)?;
        let eps = self.spec.norm_eps;
        let mut x = self.embed_tokens.lookup(tokens)?;
        if let Some(sc) = &self.embed_scale {
            x = ops::multiply(&x, sc)?;
        }
        let padded = rows.map(|r| Padded::new(r, &self.layers, cache.offset(), l)).transpose()?;
        for (i, b) in self.layers.iter().enumerate() {
            let r = b.self_attn.forward(
                &ops::rms_norm(&x, Some(&b.input_layernorm), eps)?,
                cache,
                i,
                eps,
                padded.as_ref(),
            )?;
            match (&b.pre_feedforward_layernorm, &b.post_feedforward_layernorm) {
                (Some(pre), Some(post)) => {
                    let hmid = ops::add(&x, &ops::rms_norm(&r, Some(&b.post_attention_layernorm), eps)?)?;
                    let m = b.mlp.forward(&ops::rms_norm(&hmid, Some(pre), eps)?)?;
                    x = ops::add(&hmid, &ops::rms_norm(&m, Some(post), eps)?)?;
                }
                _ => {
                    let hmid = ops::add(&x, &r)?;
                    let m = b.mlp.forward(&ops::rms_norm(&hmid, Some(&b.post_attention_layernorm), eps)?)?;
                    x = ops::add(&hmid, &m)?;
                }
            }
        }
        cache.advance(l);
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

    /// Quantization of the model's linear layers (bits, group size) where it has any.
    pub fn quantization(&self) -> Option<(i32, i32)> {
        let q = self
            .layers
            .first()
            .and_then(|b| b.self_attn.qkv.quant())
            .or_else(|| self.embed_tokens.quant())?;
        Some((q.bits, q.group_size))
    }

    pub fn dtype(&self) -> Result<Dtype> {
        self.norm.dtype()
    }
}
