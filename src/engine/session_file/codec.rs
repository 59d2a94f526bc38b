//! One codec per mlx-lm cache class: how a layer's state becomes the class's tensors and
//! scalars (in the class's `state` and `meta_state` order), and back, checked against the
//! model's layer.
//!
//! - `KVCache`: keys, values; offset.
//! - `RotatingKVCache`: keys, values; offset, keep, max_size, _idx (the ring's next write).
//! - `QuantizedKVCache`: (keys w, scales, biases), (values ...); offset, group_size, bits.

use super::{bad, File};
use crate::mlx::{ops, Array, Dtype};
use crate::model::{KvQuant, LayerState, ModelSpec, Packed};
use crate::{Error, Result};

/// What a file's layers are written into: named tensors, and which of them hold scalars.
#[derive(Default)]
pub(super) struct Writer {
    pub tensors: Vec<(String, Array)>,
    pub scalars: Vec<String>,
    pub classes: Vec<&'static str>,
}

impl Writer {
    fn tensor(&mut self, name: String, a: Array) {
        self.tensors.push((name, a));
    }

    fn scalar(&mut self, name: String, v: i32) {
        self.scalars.push(name.clone());
        self.tensors.push((name, Array::scalar_i32(v)));
    }

    /// Writes layer `i`'s state, the cache holding `offset` positions quantized as `quant`.
    pub fn layer(&mut self, i: usize, state: LayerState, offset: i32, quant: Option<KvQuant>) -> Result<()> {
        let class = match state {
            LayerState::Full { keys, values } => Full::write(self, i, keys, values, offset),
            LayerState::Rotating { keys, values, window } => {
                Rotating::write(self, i, keys, values, offset, window)?
            }
            LayerState::Quantized { keys, values } => {
                let q = quant.ok_or_else(|| Error::internal("quantized layer without parameters"))?;
                Quantized::write(self, i, keys, values, offset, q)
            }
        };
        self.classes.push(class);
        Ok(())
    }
}

/// Reads layer `i` of class `class` for the model's layer `i`; `quant` gathers the
/// quantization every quantized layer must share.
pub(super) fn read_layer(
    f: &File,
    i: usize,
    class: &str,
    spec: &ModelSpec,
    offset: i32,
    dtype: Dtype,
    quant: &mut Option<KvQuant>,
) -> Result<LayerState> {
    let a = &spec.layers[i].attn;
    let (heads, dim, vdim) = a.cache_dims();
    let layer = Layer { f, i, heads, dim, vdim, dtype, offset };
    match (class, a.window) {
        (Full::CLASS, None) => Full::read(&layer),
        (Rotating::CLASS, Some(window)) => Rotating::read(&layer, window),
        (Quantized::CLASS, None) => Quantized::read(&layer, spec, quant),
        (c, w) => {
            let want = if w.is_some() {
                Rotating::CLASS.to_string()
            } else {
                format!("{} or {}", Full::CLASS, Quantized::CLASS)
            };
            Err(Error::invalid(format!(
                "{}: layer {i} is a {c}; this model's layer {i} needs a {want}",
                f.path.display()
            )))
        }
    }
}

/// A layer being read: where, and what the model's layer holds.
struct Layer<'a, 'b> {
    f: &'a File<'b>,
    i: usize,
    heads: i32,
    /// Key width; `vdim` the value width (they differ for latent attention).
    dim: i32,
    vdim: i32,
    dtype: Dtype,
    offset: i32,
}

impl Layer<'_, '_> {
    fn kv(&self, field: &str, dim: i32) -> Result<Array> {
        self.f.kv(&format!("{}.{field}", self.i), self.heads, dim, self.dtype)
    }

    fn int(&self, field: usize) -> Result<i32> {
        self.f.int(&format!("{}.{field}", self.i))
    }
}

/// mlx-lm's `KVCache`.
struct Full;

impl Full {
    const CLASS: &'static str = "KVCache";

    fn write(w: &mut Writer, i: usize, keys: Array, values: Array, offset: i32) -> &'static str {
        w.tensor(format!("{i}.0"), keys);
        w.tensor(format!("{i}.1"), values);
        w.scalar(format!("{i}.2"), offset);
        Self::CLASS
    }

    fn read(l: &Layer) -> Result<LayerState> {
        let keys = l.kv("0", l.dim)?;
        let values = l.kv("1", l.vdim)?;
        if keys.dim(2)? < l.offset || values.dim(2)? < l.offset {
            return Err(bad(
                l.f.path,
                format!("layer {} holds fewer positions than its offset {}", l.i, l.offset),
            ));
        }
        Ok(LayerState::Full { keys, values })
    }
}

/// mlx-lm's `RotatingKVCache`, written in temporal order (keep 0, the next write at the end).
struct Rotating;

impl Rotating {
    const CLASS: &'static str = "RotatingKVCache";

    fn write(
        w: &mut Writer,
        i: usize,
        keys: Array,
        values: Array,
        offset: i32,
        window: i32,
    ) -> Result<&'static str> {
        let n = keys.dim(2)?;
        w.tensor(format!("{i}.0"), keys);
        w.tensor(format!("{i}.1"), values);
        w.scalar(format!("{i}.2"), offset);
        w.scalar(format!("{i}.3"), 0);
        w.scalar(format!("{i}.4"), window);
        w.scalar(format!("{i}.5"), n);
        Ok(Self::CLASS)
    }

    fn read(l: &Layer, window: i32) -> Result<LayerState> {
        let path = l.f.path;
        let i = l.i;
        let (keep, max, idx) = (l.int(3)?, l.int(4)?, l.int(5)?);
        if keep != 0 {
            return Err(Error::unsupported(format!(
                "{}: layer {i} keeps {keep} leading positions in its window; liblmx's windows keep none",
                path.display()
            )));
        }
        if max != window {
            return Err(Error::invalid(format!(
                "{}: layer {i}'s window is {max} positions; this model's is {window}",
                path.display()
            )));
        }
        let keys = l.kv("0", l.dim)?;
        let values = l.kv("1", l.vdim)?;
        let n = keys.dim(2)?;
        if values.dim(2)? != n || idx < 0 || idx > n || n < l.offset.min(window) {
            return Err(bad(
                path,
                format!("layer {i}'s window buffer (size {n}, index {idx}) is inconsistent"),
            ));
        }
        Ok(LayerState::Rotating {
            keys: temporal(&keys, idx, l.offset)?,
            values: temporal(&values, idx, l.offset)?,
            window,
        })
    }
}

/// A rotating buffer's positions in temporal order (mlx-lm's `_temporal_order`, keep = 0).
fn temporal(a: &Array, idx: i32, offset: i32) -> Result<Array> {
    let n = a.dim(2)?;
    if idx == n {
        Ok(a.clone())
    } else if idx < offset {
        ops::concatenate(&[&ops::slice_axis(a, 2, idx, n)?, &ops::slice_axis(a, 2, 0, idx)?], 2)
    } else {
        ops::slice_axis(a, 2, 0, idx)
    }
}

/// mlx-lm's `QuantizedKVCache`.
struct Quantized;

impl Quantized {
    const CLASS: &'static str = "QuantizedKVCache";

    fn write(
        w: &mut Writer,
        i: usize,
        keys: Packed,
        values: Packed,
        offset: i32,
        q: KvQuant,
    ) -> &'static str {
        for (f, p) in [(0, keys), (1, values)] {
            w.tensor(format!("{i}.{f}.0"), p.w);
            w.tensor(format!("{i}.{f}.1"), p.scales);
            w.tensor(format!("{i}.{f}.2"), p.biases);
        }
        w.scalar(format!("{i}.2"), offset);
        w.scalar(format!("{i}.3"), q.group_size);
        w.scalar(format!("{i}.4"), q.bits);
        Self::CLASS
    }

    fn read(l: &Layer, spec: &ModelSpec, quant: &mut Option<KvQuant>) -> Result<LayerState> {
        let path = l.f.path;
        let i = l.i;
        let (gs, bits) = (l.int(3)?, l.int(4)?);
        let q = KvQuant { bits, group_size: gs, start: 0 };
        q.check(spec).map_err(|e| e.context(path.display()))?;
        if quant.is_some_and(|p| p.bits != bits || p.group_size != gs) {
            return Err(bad(path, "the layers are quantized with different bits or group sizes"));
        }
        *quant = Some(q);
        let packed = |field: usize| -> Result<Packed> {
            let w = l.f.array(&format!("{i}.{field}.0"))?;
            let scales = l.kv(&format!("{field}.1"), l.dim / gs)?;
            let biases = l.kv(&format!("{field}.2"), l.dim / gs)?;
            let n = scales.dim(2)?;
            if w.dtype()? != Dtype::U32
                || w.shape() != [1, l.heads, n, l.dim * bits / 32]
                || biases.dim(2)? != n
                || n < l.offset
            {
                return Err(bad(path, format!("layer {i}'s quantized tensors do not fit its shapes")));
            }
            Ok(Packed { w, scales, biases })
        };
        Ok(LayerState::Quantized { keys: packed(0)?, values: packed(1)? })
    }
}
