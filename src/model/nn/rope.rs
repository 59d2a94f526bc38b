//! Rotary position embeddings and their scaling variants (linear, dynamic NTK, Llama 3, YaRN,
//! LongRoPE), from either config style: the classic `rope_theta` + `rope_scaling`, or the
//! `rope_parameters` block that transformers 5 writes instead.

use crate::mlx::{ops, Array};
use crate::model::config::Config;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub enum Rope {
    /// theta_i = pos * scale / base^(2i/dims). Linear scaling is `scale = 1/factor`.
    Standard { dims: i32, base: f32, scale: f32 },
    /// theta_i = pos / freqs[i], with precomputed per-pair periods (Llama 3, YaRN).
    Periods { dims: i32, periods: Array },
    /// Dynamic NTK: the base grows once the sequence passes `max_position`.
    Dynamic { dims: i32, base: f32, max_position: i32, factor: f32 },
    /// LongRoPE (Phi-3): per-pair periods `base^(2i/dims) * factor[i]`, with the short factors
    /// while the sequence (all positions so far and the new ones) fits `original_max`, the long
    /// ones once it is longer, as transformers chooses them. A cache keeps the keys it already
    /// rotated: positions computed while the sequence was short keep the short rotation after
    /// it grows past `original_max` (transformers recomputes them at that point; see
    /// [`LongRope`]).
    LongRope(Box<LongRope>),
}

/// The two period tables of a LongRoPE rope and what selects between them.
#[derive(Clone, Debug)]
pub struct LongRope {
    pub dims: i32,
    pub short: Array,
    pub long: Array,
    /// The pretraining context: sequences up to this length rotate with `short`.
    pub original_max: i32,
    /// Where the rotated dimensions are fewer than the head's, the attention factor multiplies
    /// them only (a [head_dim] vector: the factor on the first `dims`, 1 on the rest); None
    /// when it is folded into the score scale instead (every dimension rotated) or is 1.
    pub rotated_scale: Option<Array>,
}

/// Rope parameters as read from a config, before they become a [`Rope`].
#[derive(Clone, Debug)]
pub struct RopeParams {
    pub base: f64,
    /// The scaling block (`rope_scaling`, or `rope_parameters` itself); None = no scaling.
    pub scaling: Option<Config>,
}

impl RopeParams {
    /// Reads the rope of one layer kind. `kind` selects a per-layer-type entry where
    /// `rope_parameters` has them (transformers 5 writes `{"full_attention": {...},
    /// "sliding_attention": {...}}` for Gemma 3); `default_base` applies when the config names
    /// none.
    pub fn read(cfg: &Config, kind: Option<&str>, default_base: f64) -> Result<RopeParams> {
        if let Some(params) = cfg.object("rope_parameters")? {
            let params = match kind.map(|k| params.object(k)).transpose()?.flatten() {
                Some(p) => p,
                None => params,
            };
            if params.has("rope_theta") || params.has("rope_type") {
                let base = params.positive("rope_theta")?.unwrap_or(default_base);
                let ty = params.str("rope_type")?.or(params.str("type")?).unwrap_or("default");
                let scaling = if ty == "default" { None } else { Some(params) };
                return Ok(RopeParams { base, scaling });
            }
        }
        let base = cfg.positive("rope_theta")?.unwrap_or(default_base);
        let scaling = cfg.object("rope_scaling")?;
        Ok(RopeParams { base, scaling })
    }

    /// Builds the rope for `dims` rotated dimensions. Returns it with the factor YaRN applies
    /// to attention scores (1 for every other kind).
    pub fn build(&self, dims: i32, max_position: Option<i32>) -> Result<(Rope, f32)> {
        let base = self.base as f32;
        let Some(sc) = &self.scaling else {
            return Ok((Rope::Standard { dims, base, scale: 1.0 }, 1.0));
        };
        let ty = sc.str("rope_type")?.or(sc.str("type")?).unwrap_or("default");
        let factor = || sc.req_positive("factor");
        match ty {
            "default" => Ok((Rope::Standard { dims, base, scale: 1.0 }, 1.0)),
            "linear" => Ok((Rope::Standard { dims, base, scale: (1.0 / factor()?) as f32 }, 1.0)),
            "dynamic" => {
                let max_position = max_position
                    .ok_or_else(|| Error::format("dynamic rope scaling needs max_position_embeddings"))?;
                Ok((Rope::Dynamic { dims, base, max_position, factor: factor()? as f32 }, 1.0))
            }
            "llama3" => {
                let periods = llama3_periods(dims, self.base, sc)?;
                Ok((
                    Rope::Periods { dims, periods: Array::from_slice(&periods, &[periods.len() as i32])? },
                    1.0,
                ))
            }
            "yarn" => {
                let (periods, mscale) = yarn_periods(dims, self.base, sc, max_position)?;
                let periods = Array::from_slice(&periods, &[periods.len() as i32])?;
                // YaRN multiplies q and k by mscale before rotating, i.e. scores by mscale².
                Ok((Rope::Periods { dims, periods }, (mscale * mscale) as f32))
            }
            "longrope" | "su" => {
                let orig = match sc.int("original_max_position_embeddings")? {
                    Some(o) => o,
                    None => max_position.ok_or_else(|| {
                        Error::format(format!(
                            "{}: longrope scaling needs original_max_position_embeddings",
                            sc.path.display()
                        ))
                    })?,
                };
                self.longrope(dims, dims, orig, max_position)
            }
            other => Err(Error::unsupported(format!(
                "{}: rope scaling {other:?} is not supported (supported: linear, dynamic, llama3, yarn, longrope)",
                sc.path.display()
            ))),
        }
    }
}

impl RopeParams {
    /// LongRoPE over the first `dims` of `head_dim` dimensions, for a model pretrained on
    /// `original_max` positions and extended to `max_position`. Returns the rope and the
    /// factor on attention scores (the attention factor squared where every dimension is
    /// rotated, else 1: the rope scales the rotated dimensions itself).
    pub fn longrope(
        &self,
        dims: i32,
        head_dim: i32,
        original_max: i32,
        max_position: Option<i32>,
    ) -> Result<(Rope, f32)> {
        let sc = self.scaling.as_ref().ok_or_else(|| Error::internal("longrope without a scaling block"))?;
        let path = sc.path.display();
        let list = |key: &str| -> Result<Vec<f64>> {
            let v =
                sc.get(key).ok_or_else(|| Error::format(format!("{path}: rope scaling {key}: missing")))?;
            let a = v.as_array().ok_or_else(|| {
                Error::format(format!("{path}: rope scaling {key}: expected a list of numbers"))
            })?;
            if a.len() != (dims / 2) as usize {
                return Err(Error::format(format!(
                    "{path}: rope scaling {key}: {} entries, expected {} (half of the {dims} rotated dimensions)",
                    a.len(),
                    dims / 2
                )));
            }
            a.iter()
                .map(|x| match x.as_f64() {
                    Some(f) if f.is_finite() && f > 0.0 => Ok(f),
                    _ => Err(Error::format(format!(
                        "{path}: rope scaling {key}: {x} is not a finite number > 0"
                    ))),
                })
                .collect()
        };
        let (short, long) = (list("short_factor")?, list("long_factor")?);
        let factor = match sc.positive("factor")? {
            Some(f) => f,
            None => match max_position {
                Some(m) => m as f64 / original_max as f64,
                None => 1.0,
            },
        };
        // The paper's correction for the longer context, unless the config gives its own.
        let attention = match sc.positive("attention_factor")? {
            Some(a) => a,
            None if factor <= 1.0 => 1.0,
            None => (1.0 + factor.ln() / (original_max as f64).ln()).sqrt(),
        };
        let table = |f: &[f64]| -> Result<Array> {
            let p: Vec<f32> =
                base_periods(dims, self.base).iter().zip(f).map(|(p, f)| (p * f) as f32).collect();
            Array::from_slice(&p, &[p.len() as i32])
        };
        let (rotated_scale, score) = if dims == head_dim || attention == 1.0 {
            (None, (attention * attention) as f32)
        } else {
            let v: Vec<f32> = (0..head_dim).map(|i| if i < dims { attention as f32 } else { 1.0 }).collect();
            (Some(Array::from_slice(&v, &[head_dim])?), 1.0)
        };
        let rope = LongRope { dims, short: table(&short)?, long: table(&long)?, original_max, rotated_scale };
        Ok((Rope::LongRope(Box::new(rope)), score))
    }
}

/// The unscaled periods base^(2i/dims), i = 0..dims/2.
fn base_periods(dims: i32, base: f64) -> Vec<f64> {
    (0..dims / 2).map(|i| base.powf(2.0 * i as f64 / dims as f64)).collect()
}

/// Llama 3.1 scaling: long wavelengths are stretched by `factor`, short ones kept, and the
/// band between them interpolated smoothly.
fn llama3_periods(dims: i32, base: f64, sc: &Config) -> Result<Vec<f32>> {
    let factor = sc.req_positive("factor")?;
    let low = sc.positive("low_freq_factor")?.unwrap_or(1.0);
    let high = sc.positive("high_freq_factor")?.unwrap_or(4.0);
    let old_ctx = sc.positive("original_max_position_embeddings")?.unwrap_or(8192.0);
    if high <= low {
        return Err(Error::format(format!(
            "{}: llama3 rope: high_freq_factor {high} must exceed low_freq_factor {low}",
            sc.path.display()
        )));
    }
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    Ok(base_periods(dims, base)
        .into_iter()
        .map(|p| {
            let wavelen = 2.0 * std::f64::consts::PI * p;
            let stretched = if wavelen > low_wavelen { p * factor } else { p };
            if wavelen > high_wavelen && wavelen < low_wavelen {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (stretched / ((1.0 - smooth) / factor + smooth)) as f32
            } else {
                stretched as f32
            }
        })
        .collect())
}

/// YaRN: interpolated periods for the low frequencies, extrapolated for the high ones, with a
/// linear ramp between; returns the periods and the attention magnitude correction.
fn yarn_periods(dims: i32, base: f64, sc: &Config, max_position: Option<i32>) -> Result<(Vec<f32>, f64)> {
    let factor = sc.req_positive("factor")?;
    let orig =
        sc.positive("original_max_position_embeddings")?.or(max_position.map(|m| m as f64)).unwrap_or(4096.0);
    let beta_fast = sc.positive("beta_fast")?.unwrap_or(32.0);
    let beta_slow = sc.positive("beta_slow")?.unwrap_or(1.0);
    let mscale_cfg = sc.f64("mscale")?.unwrap_or(1.0);
    let mscale_all = sc.f64("mscale_all_dim")?.unwrap_or(0.0);
    let get_mscale = |s: f64, m: f64| if s <= 1.0 { 1.0 } else { 0.1 * m * s.ln() + 1.0 };
    let mscale = match sc.positive("attention_factor")? {
        Some(a) => a,
        None => get_mscale(factor, mscale_cfg) / get_mscale(factor, mscale_all),
    };
    let d = dims as f64;
    let correction = |rot: f64| d * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln());
    // `truncate` (transformers, default true) rounds the range outward to whole dimensions;
    // GPT-OSS sets it false.
    let truncate = sc.bool("truncate")?.unwrap_or(true);
    let (lo, hi) = (correction(beta_fast), correction(beta_slow));
    let (lo, hi) = if truncate { (lo.floor(), hi.ceil()) } else { (lo, hi) };
    let (lo, hi) = (lo.max(0.0), hi.min(d - 1.0));
    let hi = if lo == hi { hi + 0.001 } else { hi };
    let periods = base_periods(dims, base)
        .into_iter()
        .enumerate()
        .map(|(i, extra)| {
            let ramp = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
            let keep = 1.0 - ramp; // weight of the extrapolated (unscaled) frequency
            let inter = factor * extra;
            ((inter * extra) / (inter * keep + extra * (1.0 - keep))) as f32
        })
        .collect();
    Ok((periods, mscale))
}

impl Rope {
    /// Rotates `x` ([B, H, L, D]) for positions offset..offset+L.
    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        self.apply_with(x, offset, false)
    }

    /// As [`apply`](Self::apply); with `interleaved`, the rotated pairs are (x0, x1),
    /// (x2, x3)... (DeepSeek's layout) instead of (x_i, x_{i + dims/2}).
    pub fn apply_with(&self, x: &Array, offset: i32, interleaved: bool) -> Result<Array> {
        let t = interleaved;
        match self {
            Rope::Standard { dims, base, scale } => ops::rope(x, *dims, t, Some(*base), *scale, offset, None),
            Rope::Periods { dims, periods } => ops::rope(x, *dims, t, None, 1.0, offset, Some(periods)),
            Rope::Dynamic { dims, base, max_position, factor } => {
                let len = x.dim(-2)? + offset;
                let seq = len.max(*max_position) as f64;
                let d = *dims as f64;
                let f = *factor as f64;
                let b = *base as f64 * ((f * seq / *max_position as f64) - (f - 1.0)).powf(d / (d - 2.0));
                ops::rope(x, *dims, t, Some(b as f32), 1.0, offset, None)
            }
            Rope::LongRope(lr) => {
                let periods = if x.dim(-2)? + offset > lr.original_max { &lr.long } else { &lr.short };
                ops::rope(&lr.prescale(x)?, lr.dims, t, None, 1.0, offset, Some(periods))
            }
        }
    }

    /// As [`apply`](Self::apply) with one start position per batch row ([B] int32); `ends`
    /// holds each row's sequence length once these positions are added (what LongRoPE chooses
    /// its table by, row by row, as it would for that row alone).
    pub fn apply_rows(&self, x: &Array, offsets: &Array, ends: &[i32]) -> Result<Array> {
        self.apply_rows_with(x, offsets, ends, false)
    }

    /// As [`apply_rows`](Self::apply_rows), interleaved as in [`apply_with`](Self::apply_with).
    pub fn apply_rows_with(
        &self,
        x: &Array,
        offsets: &Array,
        ends: &[i32],
        interleaved: bool,
    ) -> Result<Array> {
        let t = interleaved;
        match self {
            Rope::Standard { dims, base, scale } => {
                ops::rope_dynamic(x, *dims, t, Some(*base), *scale, offsets, None)
            }
            Rope::Periods { dims, periods } => {
                ops::rope_dynamic(x, *dims, t, None, 1.0, offsets, Some(periods))
            }
            Rope::Dynamic { .. } => Err(Error::unsupported("dynamic rope scaling with per-row positions")),
            Rope::LongRope(lr) => {
                let x = lr.prescale(x)?;
                let with = |p: &Array| ops::rope_dynamic(&x, lr.dims, t, None, 1.0, offsets, Some(p));
                let long: Vec<bool> = ends.iter().map(|&e| e > lr.original_max).collect();
                if long.iter().all(|&l| !l) {
                    with(&lr.short)
                } else if long.iter().all(|&l| l) {
                    with(&lr.long)
                } else {
                    // Rows on both sides of original_max: each takes the table it takes alone.
                    let b = long.len() as i32;
                    let pick: Vec<i32> = long.iter().map(|&l| l as i32).collect();
                    let pick =
                        ops::greater(&Array::from_slice(&pick, &[b, 1, 1, 1])?, &Array::scalar_i32(0))?;
                    ops::where_(&pick, &with(&lr.long)?, &with(&lr.short)?)
                }
            }
        }
    }
}

impl LongRope {
    fn prescale(&self, x: &Array) -> Result<Array> {
        match &self.rotated_scale {
            Some(v) => ops::multiply(x, &ops::astype(v, x.dtype()?)?),
            None => Ok(x.clone()),
        }
    }
}
