//! Choosing the next token, on the device: only the chosen token ids come back to the host,
//! never the whole vocabulary. Works on [B, V] logits, one row per sequence.

use super::params::SamplerParams;
use crate::mlx::{ops, random, Array, Dtype};
use crate::Result;

/// A sampler with its own random state and, when a penalty is set, each row's recent tokens.
pub struct Sampler {
    p: SamplerParams,
    key: Option<Array>,
    bias: Option<(Array, Array)>,
    /// The penalty window's tokens: [B, n] int32 on the device (n <= window), updated with
    /// every token sampled. None without penalties (or before [`Sampler::start_history`]).
    history: Option<Array>,
    /// Token ids that cannot be chosen while set ([1, n] int32): the stop tokens before
    /// `min_tokens` (see [`Sampler::hold`]).
    held: Option<Array>,
    /// Whether the history may hold the padding id V (vocabulary size): rows of a batch with
    /// fewer tokens than the window.
    padded_history: bool,
    /// Constrained decoding: the allowed tokens of the next draw, bitmasks [B, ceil(V/32)]
    /// uint32 (see [`Sampler::allow`]).
    allowed: Option<Array>,
    /// For each id of the vocabulary, its mask word and bit: ([V] int32, [V] uint32), made
    /// once for the vocabulary size.
    bit_index: Option<(Array, Array, i32)>,
}

fn scalar(v: f32) -> Array {
    Array::scalar_f32(v)
}

impl Sampler {
    pub fn new(p: &SamplerParams) -> Result<Sampler> {
        let key = if p.temperature > 0.0 {
            let seed = p.seed.unwrap_or_else(|| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0),
                );
                h.finish()
            });
            Some(random::key(seed)?)
        } else {
            None
        };
        let bias = if p.logit_bias.is_empty() {
            None
        } else {
            let ids: Vec<i32> = p.logit_bias.iter().map(|(i, _)| *i as i32).collect();
            let vals: Vec<f32> = p.logit_bias.iter().map(|(_, b)| *b).collect();
            let n = ids.len() as i32;
            Some((Array::from_slice(&ids, &[1, n])?, Array::from_slice(&vals, &[1, n])?))
        };
        Ok(Sampler {
            p: p.clone(),
            key,
            bias,
            history: None,
            held: None,
            padded_history: false,
            allowed: None,
            bit_index: None,
        })
    }

    /// Starts the penalty history from each row's tokens so far (prompts), when a penalty is
    /// set: the last `penalty_window` tokens of each. A single row keeps what it has; rows of
    /// a batch with fewer are left-padded with `vocab`, an id no penalty counts, so every row
    /// sees what it would see alone.
    pub fn start_history(&mut self, rows: &[&[u32]], vocab: usize) -> Result<()> {
        if !self.needs_history() || rows.is_empty() {
            return Ok(());
        }
        let w = self.p.penalty_window;
        let recent =
            |r: &[u32]| -> Vec<i32> { r[r.len().saturating_sub(w)..].iter().map(|&t| t as i32).collect() };
        self.history = Some(if let [row] = rows {
            let h = recent(row);
            Array::from_slice(&h, &[1, h.len() as i32])?
        } else {
            self.padded_history = true;
            let mut h = Vec::with_capacity(rows.len() * w);
            for r in rows {
                let have = recent(r);
                h.extend(std::iter::repeat_n(vocab as i32, w - have.len()));
                h.extend(have);
            }
            Array::from_slice(&h, &[rows.len() as i32, w as i32])?
        });
        Ok(())
    }

    /// Whether the penalties need the recent token history.
    pub fn needs_history(&self) -> bool {
        self.p.repetition_penalty != 1.0 || self.p.presence_penalty != 0.0 || self.p.frequency_penalty != 0.0
    }

    /// Keeps `ids` from being chosen (their logits become -inf) until [`Sampler::release`]:
    /// how `min_tokens` holds back the EOS and stop tokens. Nothing is held for no ids.
    pub fn hold(&mut self, ids: &[u32]) -> Result<()> {
        self.held = if ids.is_empty() {
            None
        } else {
            let ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
            Some(Array::from_slice(&ids, &[1, ids.len() as i32])?)
        };
        Ok(())
    }

    /// Ends [`Sampler::hold`].
    pub fn release(&mut self) {
        self.held = None;
    }

    /// Whether ids are held.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Restricts the next draw to the tokens whose bits are set in `words` (row after row,
    /// `words_per_row` uint32 words each, bit i of word i/32 for id i): a constraint's mask.
    /// Only the words travel to the device; the comparison runs there. Applies to one draw.
    pub fn allow(&mut self, words: &[u32], words_per_row: usize) -> Result<()> {
        let rows = words.len() / words_per_row.max(1);
        self.allowed = Some(Array::from_slice(words, &[rows as i32, words_per_row as i32])?);
        Ok(())
    }

    /// `logits` [B, V] as float32 with the tokens outside the allowed set at -inf: one
    /// compiled function (a gather of each id's mask word, a shift, a compare, a select),
    /// so the mask costs the host one call per token, not one per op.
    fn mask_allowed(&mut self, logits: &Array, words: &Array) -> Result<Array> {
        let vocab = logits.dim(-1)?;
        if self.bit_index.as_ref().is_none_or(|(_, _, v)| *v != vocab) {
            let ids: Vec<i32> = (0..vocab).collect();
            let word: Vec<i32> = ids.iter().map(|i| i / 32).collect();
            let bit: Vec<u32> = ids.iter().map(|&i| (i % 32) as u32).collect();
            self.bit_index =
                Some((Array::from_slice(&word, &[vocab])?, Array::from_slice(&bit, &[vocab])?, vocab));
        }
        let (word, bit, _) = self.bit_index.as_ref().expect("made above");
        crate::mlx::compile::call(apply_mask, &[logits, words, word, bit])?
            .pop()
            .ok_or_else(|| crate::Error::internal("the mask function returned nothing"))
    }

    /// Applies bias and penalties to float32 logits [B, V]; `history` is [B, n] int32 (recent
    /// tokens, n ≤ window), or None when there is none yet.
    fn adjust(&self, mut logits: Array, history: Option<&Array>) -> Result<Array> {
        if let Some((ids, vals)) = &self.bias {
            let b = logits.dim(0)?;
            let n = ids.dim(1)?;
            let ids = ops::broadcast_to(ids, &[b, n])?;
            let cur = ops::take_along_axis(&logits, &ids, -1)?;
            logits = ops::put_along_axis(&logits, &ids, &ops::add(&cur, vals)?, -1)?;
        }
        if let Some(ids) = &self.held {
            let shape = [logits.dim(0)?, ids.dim(1)?];
            let ids = ops::broadcast_to(ids, &shape)?;
            let banned = ops::broadcast_to(&scalar(f32::NEG_INFINITY), &shape)?;
            logits = ops::put_along_axis(&logits, &ids, &banned, -1)?;
        }
        let Some(h) = history.filter(|_| self.needs_history()) else { return Ok(logits) };
        let vocab = logits.dim(1)?;
        if self.padded_history {
            // A column for the padding id: penalties land there and are cut off below.
            let b = logits.dim(0)?;
            logits = ops::concatenate(&[&logits, &ops::zeros(&[b, 1], Dtype::F32)?], 1)?;
        }
        let p = &self.p;
        if p.repetition_penalty != 1.0 {
            let g = ops::take_along_axis(&logits, h, -1)?;
            let pen = scalar(p.repetition_penalty);
            let adjusted = ops::where_(
                &ops::greater(&g, &scalar(0.0))?,
                &ops::divide(&g, &pen)?,
                &ops::multiply(&g, &pen)?,
            )?;
            logits = ops::put_along_axis(&logits, h, &adjusted, -1)?;
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let counts = scatter_counts(&logits, h)?;
            let seen = ops::astype(&ops::greater(&counts, &scalar(0.0))?, Dtype::F32)?;
            let pen = ops::add(
                &ops::multiply(&seen, &scalar(p.presence_penalty))?,
                &ops::multiply(&counts, &scalar(p.frequency_penalty))?,
            )?;
            logits = ops::subtract(&logits, &pen)?;
        }
        if self.padded_history {
            logits = ops::slice_axis(&logits, 1, 0, vocab)?;
        }
        Ok(logits)
    }

    /// The next token of each row of `logits` [B, V]: [B] uint32, lazy. The tokens join the
    /// penalty history.
    pub fn sample(&mut self, logits: &Array) -> Result<Array> {
        let y = self.choose(logits)?;
        if let Some(h) = &self.history {
            let w = self.p.penalty_window as i32;
            let b = h.dim(0)?;
            let h = ops::concatenate(&[h, &ops::reshape(&ops::astype(&y, Dtype::I32)?, &[b, 1])?], 1)?;
            let n = h.dim(1)?;
            self.history = Some(if n > w { ops::slice_axis(&h, 1, n - w, n)? } else { h });
        }
        Ok(y)
    }

    fn choose(&mut self, logits: &Array) -> Result<Array> {
        let allowed = self.allowed.take();
        let history = self.history.as_ref();
        let plain = self.bias.is_none()
            && self.held.is_none()
            && allowed.is_none()
            && (history.is_none() || !self.needs_history());
        if self.p.temperature == 0.0 && plain {
            // Greedy with nothing to adjust: the argmax of the logits as they are (converting
            // to float32 first changes no value, only costs a kernel per token).
            return ops::argmax(logits, -1, false);
        }
        let logits = match &allowed {
            Some(words) => self.mask_allowed(logits, words)?,
            None => ops::astype(logits, Dtype::F32)?,
        };
        let history = self.history.as_ref();
        let logits = self.adjust(logits, history)?;
        let p = &self.p;
        if p.temperature == 0.0 {
            return ops::argmax(&logits, -1, false);
        }
        let neg_inf = scalar(f32::NEG_INFINITY);
        let mut l = ops::multiply(&logits, &scalar(1.0 / p.temperature))?;
        let vocab = l.dim(-1)?;
        if p.top_k > 0 && p.top_k < vocab {
            // The k-th largest value is the threshold.
            let part = ops::argpartition(&ops::negative(&l)?, p.top_k - 1, -1)?;
            let kth_idx = ops::slice_axis(&part, -1, p.top_k - 1, p.top_k)?;
            let kth = ops::take_along_axis(&l, &kth_idx, -1)?;
            l = ops::where_(&ops::less(&l, &kth)?, &neg_inf, &l)?;
        }
        if p.top_p < 1.0 {
            // Keep the most likely tokens until their probability reaches top_p.
            let order = ops::argsort(&ops::negative(&l)?, -1)?;
            let sorted = ops::take_along_axis(&l, &order, -1)?;
            let probs = ops::softmax(&sorted, -1, true)?;
            let before = ops::subtract(&ops::cumsum(&probs, -1, false, true)?, &probs)?;
            let drop = ops::greater_equal(&before, &scalar(p.top_p))?;
            let kept = ops::where_(&drop, &neg_inf, &sorted)?;
            l = ops::put_along_axis(&l, &order, &kept, -1)?;
        }
        if p.min_p > 0.0 {
            // In log space: drop tokens whose logit is below max + ln(min_p).
            let top = ops::max(&l, &[-1], true)?;
            let floor = ops::add(&top, &scalar(p.min_p.ln()))?;
            l = ops::where_(&ops::less(&l, &floor)?, &neg_inf, &l)?;
        }
        let key = self.key.as_ref().expect("a key whenever temperature > 0");
        let keys = random::split(key, 2)?;
        let next_key = ops::take(&keys, &Array::scalar_i32(0), 0)?;
        let draw_key = ops::take(&keys, &Array::scalar_i32(1), 0)?;
        self.key = Some(next_key);
        ops::astype(&random::categorical(&l, -1, Some(&draw_key))?, Dtype::U32)
    }
}

/// [logits [B, V], words [B, W] uint32, each id's word [V] int32, each id's bit [V] uint32]
/// -> [logits as float32, -inf where the id's bit is clear] (see [`Sampler::allow`]).
fn apply_mask(a: &[Array]) -> Result<Vec<Array>> {
    let [logits, words, word, bit] = a else {
        return Err(crate::Error::internal("apply_mask takes four arrays"));
    };
    let picked = ops::take(words, word, 1)?;
    let set = ops::bitwise_and(&ops::right_shift(&picked, bit)?, &Array::from_slice(&[1u32], &[1])?)?;
    let allowed = ops::greater(&set, &Array::from_slice(&[0u32], &[1])?)?;
    Ok(vec![ops::where_(&allowed, &ops::astype(logits, Dtype::F32)?, &scalar(f32::NEG_INFINITY))?])
}

/// The token [`nan_guard`] puts in place of a row whose logits hold a NaN.
pub const NAN_TOKEN: u32 = u32::MAX;

/// `tokens` [B] with [`NAN_TOKEN`] for each row of `logits` [B, V] that holds a NaN: corrupt
/// (or overflowing) weights give NaN logits, whose argmax would be an arbitrary token. Lazy:
/// it costs no read back, the token read carries the verdict.
pub fn nan_guard(logits: &Array, tokens: &Array) -> Result<Array> {
    let total = ops::sum(&ops::astype(logits, Dtype::F32)?, &[-1], false)?;
    let bad = ops::isnan(&total)?;
    ops::where_(&bad, &Array::from_slice(&[NAN_TOKEN], &[1])?, tokens)
}

/// The error for a row whose logits held a NaN.
pub fn nan_error() -> crate::Error {
    crate::Error::format("the model's output is NaN (corrupt or overflowing weights): no token can be chosen")
}

/// How often each vocabulary entry occurs in `history`, as float32 [B, V].
fn scatter_counts(logits: &Array, history: &Array) -> Result<Array> {
    let zeros = ops::zeros(&logits.shape(), Dtype::F32)?;
    let ones = ops::ones(&history.shape(), Dtype::F32)?;
    ops::scatter_add(&zeros, history, &ones, -1)
}
