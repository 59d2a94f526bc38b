//! Key/value caches.
//!
//! A global-attention layer keeps every position in a buffer that grows in steps of
//! [`STEP`] positions (one copy per step, never a concatenation per token). A sliding-window
//! layer keeps a ring of exactly `window` positions: once full, each new token overwrites the
//! oldest, so its memory is bounded whatever the sequence length. Keys are cached after rope,
//! so a ring's order does not matter to attention.
//!
//! With [`KvQuant`], global layers switch to MLX affine quantization (4 or 8 bits per value,
//! a scale and bias per group along the head dimension) once the sequence reaches the start
//! offset, as mlx-lm's `QuantizedKVCache` does: what is cached is quantized once, new tokens
//! are quantized as they arrive, and attention multiplies against the packed values. Ring
//! layers stay in float (they are small by construction; mlx-lm does not quantize them either).
//!
//! Cloning a cache (a session fork) shares every buffer: MLX arrays are immutable, and the
//! first write to a shared buffer copies it, so each side sees only its own tokens.

use crate::mlx::{ops, Array};
use crate::model::arch::spec::ModelSpec;
use crate::{Error, Result};

/// Growth step of a global layer's buffer, in positions.
pub const STEP: i32 = 256;

/// Positions a global layer's buffer holds beyond whole steps. MLX's CUDA backend (0.32)
/// sends one-token attention over a buffer of a multiple of 256 positions to cuDNN, whose
/// per-call host cost (about 17 us against about 4 us for its own vector kernel, measured on
/// an H200) shows in every decode step while decoding is bound by the host: with the extra
/// positions the vector kernel runs, and decode measured 7-16% faster on Qwen3 0.6B and 4B.
/// The vector kernel splits keys over 32 blocks past 1024 positions, so long contexts keep
/// the device busy too. Costs 8 positions of memory per layer.
const PAD: i32 = 8;

/// The capacity of a global layer's buffer holding `need` positions.
fn capacity(need: i32) -> i32 {
    (need + STEP - 1) / STEP * STEP + PAD
}

/// Quantization of the KV cache, chosen per session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuant {
    /// Bits per value: 4 or 8.
    pub bits: i32,
    /// Values per scale and bias along the head dimension: 32, 64 or 128 (must divide it).
    pub group_size: i32,
    /// Global layers are quantized once the sequence holds this many positions (0: from the
    /// first step on).
    pub start: i32,
}

impl KvQuant {
    /// Checks the parameters against MLX's quantization and the model's head dimensions.
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        if !matches!(self.bits, 4 | 8) {
            return Err(Error::invalid(format!("kv_bits {} is not supported (4 or 8)", self.bits)));
        }
        if !matches!(self.group_size, 32 | 64 | 128) {
            return Err(Error::invalid(format!(
                "kv_group_size {} is not supported (32, 64 or 128)",
                self.group_size
            )));
        }
        if self.start < 0 {
            return Err(Error::invalid(format!("kv_quant_start {} is negative", self.start)));
        }
        if spec.layers.iter().any(|l| l.attn.latent.is_some()) {
            return Err(Error::unsupported(format!(
                "a quantized KV cache for model_type {:?} (multi-head latent attention caches a compressed latent; its cache is not quantized)",
                spec.arch
            )));
        }
        for (i, l) in spec.layers.iter().enumerate() {
            let d = l.attn.head_dim;
            if l.attn.window.is_none() && d % self.group_size != 0 {
                return Err(Error::invalid(format!(
                    "kv_group_size {} does not divide layer {i}'s head dimension {d}",
                    self.group_size
                )));
            }
        }
        Ok(())
    }
}

/// One quantized tensor: packed values, and a scale and a bias per group.
#[derive(Clone)]
pub struct Packed {
    pub w: Array,
    pub scales: Array,
    pub biases: Array,
}

impl Packed {
    fn parts(&self) -> [&Array; 3] {
        [&self.w, &self.scales, &self.biases]
    }

    pub fn map(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<Packed> {
        Ok(Packed { w: f(&self.w)?, scales: f(&self.scales)?, biases: f(&self.biases)? })
    }
}

/// The keys and values a layer attends over.
pub enum Kv {
    Dense {
        keys: Array,
        values: Array,
    },
    /// Quantized keys and values (positions 0..offset+L), with the bits and group size.
    Quantized {
        keys: Packed,
        values: Packed,
        bits: i32,
        group_size: i32,
    },
}

/// What a layer attends over after adding new keys and values.
pub struct Attend {
    pub kv: Kv,
    /// With L > 1 new tokens over a sliding window: how many cached positions precede the new
    /// ones in `keys` (they are in temporal order then); the caller builds the window mask.
    pub window_prefix: Option<i32>,
}

#[derive(Default, Clone)]
struct Growing {
    k: Option<Array>,
    v: Option<Array>,
}

/// A global layer's quantized buffers, grown as [`Growing`]'s.
#[derive(Default, Clone)]
struct QGrowing {
    k: Option<Packed>,
    v: Option<Packed>,
}

#[derive(Clone)]
struct Ring {
    window: i32,
    k: Option<Array>,
    v: Option<Array>,
    /// Valid positions in the ring (≤ window).
    filled: i32,
    /// Where the next single token goes.
    next: i32,
}

#[derive(Clone)]
enum Layer {
    Global(Growing),
    Window(Ring),
    Quantized(QGrowing),
}

/// The caches of every layer of one sequence batch, with the shared position offset.
/// `clone` shares the buffers (see the module's documentation).
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<Layer>,
    offset: i32,
    quant: Option<KvQuant>,
    /// Attend over quantized layers by dequantizing them first (see [`KvCache::for_device`]).
    dequantize: bool,
}

fn slice_seq(a: &Array, start: i32, stop: i32) -> Result<Array> {
    ops::slice_axis(a, 2, start, stop)
}

fn put_seq(buf: &Array, new: &Array, at: i32) -> Result<Array> {
    let s = buf.shape();
    let len = new.dim(2)?;
    ops::slice_update(buf, new, &[0, 0, at, 0], &[s[0], s[1], at + len, s[3]], &[1, 1, 1, 1])
}

/// Checks a new cache buffer of `shape` against MLX's memory limit.
fn reserve_buffer(shape: &[i32], dtype: crate::mlx::Dtype) -> Result<()> {
    let bytes = shape.iter().map(|&d| d.max(0) as u64).product::<u64>() * dtype.size() as u64;
    crate::mlx::memory::reserve(bytes, "the KV cache")
}

/// A new buffer shaped like `like` ([B, H, _, D]) with room for `cap` positions, holding the
/// first `keep` positions of `old` (none without one): how every layer's buffer grows, is
/// restored or is cut to a window. Checked against MLX's memory limit first.
fn buffer(old: Option<&Array>, like: &Array, keep: i32, cap: i32) -> Result<Array> {
    let s = like.shape();
    let shape = [s[0], s[1], cap, s[3]];
    reserve_buffer(&shape, like.dtype()?)?;
    let fresh = ops::zeros(&shape, like.dtype()?)?;
    match old {
        Some(o) if keep > 0 => put_seq(&fresh, &slice_seq(o, 0, keep)?, 0),
        _ => Ok(fresh),
    }
}

/// Positions a buffer has room for.
fn room(buf: Option<&Array>) -> Result<i32> {
    buf.map(|b| b.dim(2)).transpose().map(|c| c.unwrap_or(0))
}

/// `old` with `new` written at `offset`, grown first when it lacks the room.
fn grown(old: Option<&Array>, new: &Array, offset: i32) -> Result<Array> {
    let need = offset + new.dim(2)?;
    let buf = match old {
        Some(o) if need <= room(old)? => o.clone(),
        _ => buffer(old, new, offset, capacity(need))?,
    };
    put_seq(&buf, new, offset)
}

impl Growing {
    fn update(&mut self, k: &Array, v: &Array, offset: i32) -> Result<Attend> {
        let nk = grown(self.k.as_ref(), k, offset)?;
        let nv = grown(self.v.as_ref(), v, offset)?;
        let end = offset + k.dim(2)?;
        let keys = slice_seq(&nk, 0, end)?;
        let values = slice_seq(&nv, 0, end)?;
        self.k = Some(nk);
        self.v = Some(nv);
        Ok(Attend { kv: Kv::Dense { keys, values }, window_prefix: None })
    }
}

/// `packed` with room for `offset + len` positions, its first `offset` kept.
fn grown_packed(old: Option<&Packed>, new: &Packed, offset: i32, len: i32) -> Result<Packed> {
    let need = offset + len;
    match old {
        Some(o) if need <= room(Some(&o.w))? => Ok(o.clone()),
        _ => Ok(Packed {
            w: buffer(old.map(|o| &o.w), &new.w, offset, capacity(need))?,
            scales: buffer(old.map(|o| &o.scales), &new.scales, offset, capacity(need))?,
            biases: buffer(old.map(|o| &o.biases), &new.biases, offset, capacity(need))?,
        }),
    }
}

fn quantize(a: &Array, q: &KvQuant) -> Result<Packed> {
    let (w, scales, biases) = ops::quantize(a, q.group_size, q.bits, "affine")?;
    Ok(Packed { w, scales, biases })
}

impl QGrowing {
    fn update(&mut self, k: &Array, v: &Array, offset: i32, q: &KvQuant, dequantize: bool) -> Result<Attend> {
        let len = k.dim(2)?;
        let end = offset + len;
        let (qk, qv) = (quantize(k, q)?, quantize(v, q)?);
        let put = |buf: Packed, new: &Packed| -> Result<Packed> {
            Ok(Packed {
                w: put_seq(&buf.w, &new.w, offset)?,
                scales: put_seq(&buf.scales, &new.scales, offset)?,
                biases: put_seq(&buf.biases, &new.biases, offset)?,
            })
        };
        let nk = put(grown_packed(self.k.as_ref(), &qk, offset, len)?, &qk)?;
        let nv = put(grown_packed(self.v.as_ref(), &qv, offset, len)?, &qv)?;
        let keys = nk.map(|a| slice_seq(a, 0, end))?;
        let values = nv.map(|a| slice_seq(a, 0, end))?;
        self.k = Some(nk);
        self.v = Some(nv);
        let kv = if dequantize {
            let dt = k.dtype()?;
            let dense = |p: &Packed| {
                ops::dequantize(&p.w, &p.scales, Some(&p.biases), q.group_size, q.bits, "affine", Some(dt))
            };
            Kv::Dense { keys: dense(&keys)?, values: dense(&values)? }
        } else {
            Kv::Quantized { keys, values, bits: q.bits, group_size: q.group_size }
        };
        Ok(Attend { kv, window_prefix: None })
    }

    /// A float layer's buffers, quantized whole.
    fn from_dense(g: &Growing, q: &KvQuant) -> Result<QGrowing> {
        Ok(QGrowing {
            k: g.k.as_ref().map(|a| quantize(a, q)).transpose()?,
            v: g.v.as_ref().map(|a| quantize(a, q)).transpose()?,
        })
    }
}

impl Ring {
    /// The valid cached positions in temporal order.
    fn ordered(&self, buf: &Array) -> Result<Array> {
        if self.filled < self.window {
            slice_seq(buf, 0, self.filled)
        } else if self.next == 0 {
            Ok(buf.clone())
        } else {
            ops::concatenate(&[&slice_seq(buf, self.next, self.window)?, &slice_seq(buf, 0, self.next)?], 2)
        }
    }

    fn update(&mut self, k: &Array, v: &Array) -> Result<Attend> {
        let len = k.dim(2)?;
        if let (1, Some(bk), Some(bv)) = (len, &self.k, &self.v) {
            if self.filled == self.window || self.next == self.filled {
                let nk = put_seq(bk, k, self.next)?;
                let nv = put_seq(bv, v, self.next)?;
                self.next = (self.next + 1) % self.window;
                self.filled = (self.filled + 1).min(self.window);
                let (keys, values) = if self.filled < self.window {
                    (slice_seq(&nk, 0, self.filled)?, slice_seq(&nv, 0, self.filled)?)
                } else {
                    (nk.clone(), nv.clone())
                };
                self.k = Some(nk);
                self.v = Some(nv);
                return Ok(Attend { kv: Kv::Dense { keys, values }, window_prefix: None });
            }
        }
        // Several tokens (or the first): attend over the cached window plus all new tokens,
        // then keep the last `window` positions.
        let prefix = self.filled;
        let (keys, values) = match (&self.k, &self.v) {
            (Some(bk), Some(bv)) if prefix > 0 => (
                ops::concatenate(&[&self.ordered(bk)?, k], 2)?,
                ops::concatenate(&[&self.ordered(bv)?, v], 2)?,
            ),
            _ => (k.clone(), v.clone()),
        };
        let total = prefix + len;
        let keep = total.min(self.window);
        let tail_k = slice_seq(&keys, total - keep, total)?;
        let tail_v = slice_seq(&values, total - keep, total)?;
        self.k = Some(buffer(Some(&tail_k), &tail_k, keep, self.window)?);
        self.v = Some(buffer(Some(&tail_v), &tail_v, keep, self.window)?);
        self.filled = keep;
        self.next = keep % self.window;
        Ok(Attend { kv: Kv::Dense { keys, values }, window_prefix: Some(prefix) })
    }
}

impl KvCache {
    /// An empty cache shaped for `spec`.
    pub fn new(spec: &ModelSpec) -> KvCache {
        let layers = spec
            .layers
            .iter()
            .map(|l| match l.attn.window {
                Some(window) => Layer::Window(Ring { window, k: None, v: None, filled: 0, next: 0 }),
                None => Layer::Global(Growing::default()),
            })
            .collect();
        KvCache { layers, offset: 0, quant: None, dequantize: false }
    }

    /// An empty cache for `spec` whose global layers are quantized as `quant` says.
    pub fn with_quant(spec: &ModelSpec, quant: Option<KvQuant>) -> Result<KvCache> {
        if let Some(q) = &quant {
            q.check(spec)?;
        }
        let mut c = KvCache::new(spec);
        c.quant = quant;
        Ok(c)
    }

    /// This cache, set up for computing on `device`. MLX 0.32's CUDA backend has no
    /// quantized matmul for the batched shapes attention needs (mlx-lm's quantized cache
    /// fails there too): on it, quantized layers are dequantized for each step's attention
    /// (the cache stays quantized in memory; the dense copy of a layer lives for one layer's
    /// attention).
    pub fn for_device(mut self, device: crate::mlx::Device) -> Result<KvCache> {
        self.dequantize = crate::mlx::device::Backend::of(device)? == crate::mlx::device::Backend::Cuda;
        Ok(self)
    }

    /// This cache, its global layers quantized as `quant` says from the next step on (a
    /// restored float cache given a quantization).
    pub fn with_quant_from_now(mut self, quant: KvQuant) -> Result<KvCache> {
        self.quant = Some(quant);
        Ok(self)
    }

    /// The quantization chosen for this cache, if any.
    pub fn quant(&self) -> Option<KvQuant> {
        self.quant
    }

    /// A cache for a padded batch: every layer keeps all positions (sliding windows are then
    /// applied by the attention mask), so padding columns stay addressable.
    pub fn new_batch(spec: &ModelSpec) -> KvCache {
        KvCache {
            layers: spec.layers.iter().map(|_| Layer::Global(Growing::default())).collect(),
            offset: 0,
            quant: None,
            dequantize: false,
        }
    }

    /// Whether [`trim`](Self::trim) can drop positions: every sliding-window ring still holds
    /// every position (the sequence is no longer than its window), so nothing a later query
    /// needs has been overwritten.
    pub fn trimmable(&self) -> bool {
        self.layers.iter().all(|l| match l {
            Layer::Window(r) => self.offset <= r.window,
            _ => true,
        })
    }

    /// Forgets the last `n` positions (the next update overwrites them). Only while
    /// [`trimmable`](Self::trimmable); returns how many were dropped.
    pub fn trim(&mut self, n: i32) -> Result<i32> {
        if !self.trimmable() {
            return Err(Error::unsupported(
                "a sliding-window cache past its window cannot be trimmed (older positions were overwritten)",
            ));
        }
        let n = n.clamp(0, self.offset);
        self.offset -= n;
        for l in &mut self.layers {
            if let Layer::Window(r) = l {
                r.filled = self.offset;
                r.next = r.filled % r.window;
            }
        }
        Ok(n)
    }

    /// Positions processed so far.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Moves the offset past `n` new positions. With quantization and the start offset
    /// reached, the global layers' float buffers are quantized (after the step, as mlx-lm does:
    /// the step that reaches the start still attends in float).
    pub(crate) fn advance(&mut self, n: i32) -> Result<()> {
        self.offset += n;
        if let Some(q) = self.quant.filter(|q| self.offset >= q.start) {
            for l in &mut self.layers {
                if let Layer::Global(g) = l {
                    *l = Layer::Quantized(QGrowing::from_dense(g, &q)?);
                }
            }
        }
        Ok(())
    }

    /// Forgets everything; the buffers are released.
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            match l {
                Layer::Global(_) | Layer::Quantized(_) => *l = Layer::Global(Growing::default()),
                Layer::Window(r) => {
                    r.k = None;
                    r.v = None;
                    r.filled = 0;
                    r.next = 0;
                }
            }
        }
        self.offset = 0;
    }

    /// Adds layer `i`'s new keys and values ([B, H, L, D], after rope) at the current offset.
    pub(crate) fn update(&mut self, i: usize, k: &Array, v: &Array) -> Result<Attend> {
        let offset = self.offset;
        match self.layers.get_mut(i) {
            Some(Layer::Global(g)) => g.update(k, v, offset),
            Some(Layer::Window(r)) => r.update(k, v),
            Some(Layer::Quantized(g)) => {
                let q = self.quant.ok_or_else(|| Error::internal("quantized layer without parameters"))?;
                g.update(k, v, offset, &q, self.dequantize)
            }
            None => Err(Error::internal(format!("no cache for layer {i}"))),
        }
    }

    /// The cache's arrays, to evaluate together with a step's output.
    pub fn arrays(&self) -> Vec<&Array> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Global(Growing { k, v }) | Layer::Window(Ring { k, v, .. }) => {
                    out.extend(k.iter());
                    out.extend(v.iter());
                }
                Layer::Quantized(QGrowing { k, v }) => {
                    for p in k.iter().chain(v.iter()) {
                        out.extend(p.parts());
                    }
                }
            }
        }
        out
    }

    /// Bytes held by the buffers.
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }
}

/// One layer's state as a prompt-cache file keeps it (mlx-lm's classes).
pub enum LayerState {
    /// `KVCache`: keys and values of positions 0..offset, [1, H, offset, D].
    Full { keys: Array, values: Array },
    /// `RotatingKVCache`: the window's valid positions in temporal order, [1, H, n, D] with
    /// n = min(offset, window).
    Rotating { keys: Array, values: Array, window: i32 },
    /// `QuantizedKVCache`: packed keys and values of positions 0..offset.
    Quantized { keys: Packed, values: Packed },
}

impl KvCache {
    /// Each layer's state, for saving. Needs a non-empty cache.
    pub fn export(&self) -> Result<Vec<LayerState>> {
        let n = self.offset;
        let missing = || Error::internal("a cache layer holds nothing while the offset is past 0");
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Global(Growing { k: Some(k), v: Some(v) }) => {
                    Ok(LayerState::Full { keys: slice_seq(k, 0, n)?, values: slice_seq(v, 0, n)? })
                }
                Layer::Window(r) => match (&r.k, &r.v) {
                    (Some(k), Some(v)) => Ok(LayerState::Rotating {
                        keys: r.ordered(k)?,
                        values: r.ordered(v)?,
                        window: r.window,
                    }),
                    _ => Err(missing()),
                },
                Layer::Quantized(QGrowing { k: Some(k), v: Some(v) }) => Ok(LayerState::Quantized {
                    keys: k.map(|a| slice_seq(a, 0, n))?,
                    values: v.map(|a| slice_seq(a, 0, n))?,
                }),
                _ => Err(missing()),
            })
            .collect()
    }

    /// A cache for `spec` holding `offset` positions from `states` (one per layer, checked
    /// by the caller against the model's shapes). Buffers are laid out as updates make them,
    /// so the cache continues exactly as the one saved.
    pub fn import(
        spec: &ModelSpec,
        quant: Option<KvQuant>,
        offset: i32,
        states: Vec<LayerState>,
    ) -> Result<KvCache> {
        let mut c = KvCache::with_quant(spec, quant)?;
        if states.len() != c.layers.len() {
            return Err(Error::internal("layer count mismatch importing a cache"));
        }
        let fresh = |a: &Array, len: i32, cap: i32| buffer(Some(a), a, len, cap);
        for (layer, st) in c.layers.iter_mut().zip(states) {
            *layer = match (&*layer, st) {
                (Layer::Global(_), LayerState::Full { keys, values }) => Layer::Global(Growing {
                    k: Some(fresh(&keys, offset, capacity(offset))?),
                    v: Some(fresh(&values, offset, capacity(offset))?),
                }),
                (Layer::Global(_), LayerState::Quantized { keys, values }) => {
                    let cap = capacity(offset);
                    Layer::Quantized(QGrowing {
                        k: Some(keys.map(|a| fresh(a, offset, cap))?),
                        v: Some(values.map(|a| fresh(a, offset, cap))?),
                    })
                }
                (Layer::Window(r), LayerState::Rotating { keys, values, window }) if window == r.window => {
                    // Keep the window's last positions: at most `window`, at most `offset`.
                    let have = keys.dim(2)?;
                    let filled = have.min(window).min(offset);
                    let tail = |a: &Array| slice_seq(a, have - filled, have);
                    Layer::Window(Ring {
                        window,
                        k: Some(fresh(&tail(&keys)?, filled, window)?),
                        v: Some(fresh(&tail(&values)?, filled, window)?),
                        filled,
                        next: filled % window,
                    })
                }
                _ => return Err(Error::internal("layer kind mismatch importing a cache")),
            };
        }
        c.offset = offset;
        Ok(c)
    }
}
