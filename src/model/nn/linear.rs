//! The layers a checkpoint's matrices become: linear layers (dense or MLX-quantized), layers
//! that share an input fused into one matmul, and the token embedding table (also the tied
//! output head). Built by [`crate::model::weights::WeightStore`].

use crate::mlx::{ops, Array, Dtype};
use crate::model::nn::quant::QuantParams;
use crate::Result;

/// A linear layer: `x @ W.T + b`.
#[derive(Clone)]
pub enum Linear {
    /// `wt` is the transposed view of the [out, in] weight (no copy).
    Dense {
        wt: Array,
        bias: Option<Array>,
    },
    Quantized {
        w: Array,
        scales: Array,
        biases: Array,
        bias: Option<Array>,
        p: QuantParams,
    },
}

impl Linear {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (y, bias) = match self {
            Linear::Dense { wt, bias } => (ops::matmul(x, wt)?, bias),
            Linear::Quantized { w, scales, biases, bias, p } => (p.matmul(x, w, scales, biases)?, bias),
        };
        match bias {
            Some(b) => ops::add(&y, b),
            None => Ok(y),
        }
    }

    pub fn quant(&self) -> Option<QuantParams> {
        match self {
            Linear::Dense { .. } => None,
            Linear::Quantized { p, .. } => Some(*p),
        }
    }

    /// One layer computing all of `parts` (same input) side by side, or None when they are
    /// stored differently (dense beside quantized, other bits or group size, bias or not).
    /// Dense parts are views of [out, in] matrices here (the GPU layout). Evaluated.
    pub(crate) fn concat(parts: &[Linear]) -> Result<Option<Linear>> {
        let biases: Vec<&Array> = parts.iter().filter_map(|p| p.bias()).collect();
        if !biases.is_empty() && biases.len() != parts.len() {
            return Ok(None);
        }
        let bias = if biases.is_empty() { None } else { Some(ops::concatenate(&biases, 0)?) };
        let fused = if let Some(wts) = parts.iter().map(|p| p.dense()).collect::<Option<Vec<&Array>>>() {
            let ws = wts.iter().map(|w| ops::transpose(w, &[1, 0])).collect::<Result<Vec<_>>>()?;
            let wt = ops::transpose(&ops::concatenate(&ws.iter().collect::<Vec<_>>(), 0)?, &[1, 0])?;
            Linear::Dense { wt, bias }
        } else {
            let p = match parts[0].quant() {
                Some(p) => p,
                None => return Ok(None),
            };
            let (mut ws, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
            for part in parts {
                match part {
                    Linear::Quantized { w, scales, biases, p: pp, .. } if *pp == p => {
                        ws.push(w);
                        ss.push(scales);
                        bs.push(biases);
                    }
                    _ => return Ok(None),
                }
            }
            Linear::Quantized {
                w: ops::concatenate(&ws, 0)?,
                scales: ops::concatenate(&ss, 0)?,
                biases: ops::concatenate(&bs, 0)?,
                bias,
                p,
            }
        };
        let arrays: Vec<&Array> = match &fused {
            Linear::Dense { wt, bias } => std::iter::once(wt).chain(bias).collect(),
            Linear::Quantized { w, scales, biases, bias, .. } => {
                [w, scales, biases].into_iter().chain(bias).collect()
            }
        };
        crate::mlx::eval(&arrays)?;
        Ok(Some(fused))
    }

    /// This layer with `delta` ([in, out], float) added to its weight: a dense weight in its
    /// dtype, a quantized one dequantized, updated and quantized again. Evaluated.
    pub fn plus(&self, delta: Option<&Array>) -> Result<Linear> {
        let Some(d) = delta else { return Ok(self.clone()) };
        let out = match self {
            Linear::Dense { wt, bias } => {
                let w = ops::add(wt, &ops::astype(d, wt.dtype()?)?)?;
                Linear::Dense { wt: w, bias: bias.clone() }
            }
            Linear::Quantized { w, scales, biases, bias, p } => {
                let dq =
                    ops::dequantize(w, scales, Some(biases), p.group_size, p.bits, QuantParams::MODE, None)?;
                let dt = ops::transpose(&ops::astype(d, dq.dtype()?)?, &[1, 0])?;
                let (w2, s2, b2) =
                    ops::quantize(&ops::add(&dq, &dt)?, p.group_size, p.bits, QuantParams::MODE)?;
                let (s2, b2) = (ops::astype(&s2, scales.dtype()?)?, ops::astype(&b2, scales.dtype()?)?);
                Linear::Quantized { w: w2, scales: s2, biases: b2, bias: bias.clone(), p: *p }
            }
        };
        let arrays: Vec<&Array> = match &out {
            Linear::Dense { wt, .. } => vec![wt],
            Linear::Quantized { w, scales, biases, .. } => vec![w, scales, biases],
        };
        crate::mlx::eval(&arrays)?;
        Ok(out)
    }

    fn bias(&self) -> Option<&Array> {
        match self {
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    fn dense(&self) -> Option<&Array> {
        match self {
            Linear::Dense { wt, .. } => Some(wt),
            Linear::Quantized { .. } => None,
        }
    }
}

/// Layers that read the same input, as one matmul or, where their storage differs, apart
/// (see [`crate::model::weights::WeightStore::projections`]).
#[derive(Clone)]
pub enum Projections {
    Fused { lin: Linear, widths: Vec<i32> },
    Separate(Vec<Linear>),
}

impl Projections {
    /// Each layer's output, in the order the layers were given.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            Projections::Fused { lin, widths } => {
                let y = lin.forward(x)?;
                let mut out = Vec::with_capacity(widths.len());
                let mut at = 0;
                for w in widths {
                    out.push(ops::slice_axis(&y, -1, at, at + w)?);
                    at += w;
                }
                Ok(out)
            }
            Projections::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
        }
    }

    /// Each layer's output split into attention heads, `[B, heads[i], L, head_dim]` (a view
    /// where possible), for layers whose output widths are `heads[i] * head_dim`. Fused layers
    /// are split once: one reshape and one transpose for all of them, then a slice each.
    pub fn forward_heads(&self, x: &Array, heads: &[i32], head_dim: i32) -> Result<Vec<Array>> {
        let shape = x.shape();
        let (b, l) = (shape[0], shape[1]);
        match self {
            Projections::Fused { lin, .. } => {
                let total: i32 = heads.iter().sum();
                let y = ops::reshape(&lin.forward(x)?, &[b, l, total, head_dim])?;
                let y = ops::transpose(&y, &[0, 2, 1, 3])?;
                let mut out = Vec::with_capacity(heads.len());
                let mut at = 0;
                for &n in heads {
                    out.push(ops::slice_axis(&y, 1, at, at + n)?);
                    at += n;
                }
                Ok(out)
            }
            Projections::Separate(parts) => parts
                .iter()
                .zip(heads)
                .map(|(p, &n)| {
                    ops::transpose(&ops::reshape(&p.forward(x)?, &[b, l, n, head_dim])?, &[0, 2, 1, 3])
                })
                .collect(),
        }
    }

    /// These layers with `deltas[i]` ([in, out_i], or None) added to layer i's weight (see
    /// [`Linear::plus`]).
    pub fn plus(&self, deltas: &[Option<Array>]) -> Result<Projections> {
        if deltas.iter().all(Option::is_none) {
            return Ok(self.clone());
        }
        match self {
            Projections::Separate(parts) => Ok(Projections::Separate(
                parts.iter().zip(deltas).map(|(p, d)| p.plus(d.as_ref())).collect::<Result<Vec<_>>>()?,
            )),
            Projections::Fused { lin, widths } => {
                // One [in, sum of widths] delta, zero where a layer has none.
                let input = deltas.iter().flatten().next().map(|d| d.dim(0)).transpose()?.unwrap_or(0);
                let parts = deltas
                    .iter()
                    .zip(widths)
                    .map(|(d, &w)| match d {
                        Some(d) => Ok(d.clone()),
                        None => ops::zeros(&[input, w], Dtype::F32),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let whole = ops::concatenate(&parts.iter().collect::<Vec<_>>(), 1)?;
                Ok(Projections::Fused { lin: lin.plus(Some(&whole))?, widths: widths.clone() })
            }
        }
    }

    /// Quantization of the first layer, if quantized.
    pub fn quant(&self) -> Option<QuantParams> {
        match self {
            Projections::Fused { lin, .. } => lin.quant(),
            Projections::Separate(parts) => parts.first().and_then(Linear::quant),
        }
    }
}

/// The token embedding table; also the output head when embeddings are tied.
#[derive(Clone)]
pub enum Embedding {
    Dense {
        w: Array,
    },
    /// The dense table stored as [hidden, vocab] (see [`crate::model::weights::WeightStore::set_layout`]).
    Columns {
        wt: Array,
    },
    Quantized {
        w: Array,
        scales: Array,
        biases: Array,
        p: QuantParams,
    },
}

impl Embedding {
    /// Rows for `ids` (any shape): a quantized table gathers the packed rows and dequantizes
    /// only those, never the whole table.
    pub fn lookup(&self, ids: &Array) -> Result<Array> {
        match self {
            Embedding::Dense { w } => ops::take(w, ids, 0),
            Embedding::Columns { wt } => {
                // [hidden, ids...] -> [ids..., hidden]
                let cols = ops::take(wt, ids, 1)?;
                let n = cols.ndim() as i32;
                let order: Vec<i32> = (1..n).chain(std::iter::once(0)).collect();
                ops::transpose(&cols, &order)
            }
            Embedding::Quantized { w, scales, biases, p } => {
                let rows = ops::take(w, ids, 0)?;
                let s = ops::take(scales, ids, 0)?;
                let b = ops::take(biases, ids, 0)?;
                ops::dequantize(&rows, &s, Some(&b), p.group_size, p.bits, QuantParams::MODE, None)
            }
        }
    }

    /// `x @ table.T`: the tied output head.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Embedding::Dense { w } => ops::matmul(x, &ops::transpose(w, &[1, 0])?),
            Embedding::Columns { wt } => ops::matmul(x, wt),
            Embedding::Quantized { w, scales, biases, p } => p.matmul(x, w, scales, biases),
        }
    }

    /// The dtype rows come out in.
    pub fn dtype(&self) -> Result<Dtype> {
        match self {
            Embedding::Dense { w } => w.dtype(),
            Embedding::Columns { wt } => wt.dtype(),
            Embedding::Quantized { scales, .. } => scales.dtype(),
        }
    }

    pub fn quant(&self) -> Option<QuantParams> {
        match self {
            Embedding::Dense { .. } | Embedding::Columns { .. } => None,
            Embedding::Quantized { p, .. } => Some(*p),
        }
    }
}
