//! Batches: classification (one forward pass per prompt) and generation of several prompts
//! in one forward pass per step, left-padded with per-row masks and positions.

use std::time::Instant;

use super::generate::FinishReason;
use super::metrics::Metrics;
use super::params::GenerateParams;
use super::sampling::{nan_error, nan_guard, Sampler, NAN_TOKEN};
use super::text::TextStream;
use crate::mlx::device::pooled_stream;
use crate::mlx::{self, compute_lock, memory, ops, with_stream, Array, Dtype, Stream};
use crate::model::transformer::RowPad;
use crate::model::Model;
use crate::{Error, Result};

/// The next token after one prompt.
#[derive(Clone, Debug)]
pub struct ClassifyOutput {
    pub token: u32,
    pub text: String,
    /// The float32 logits of the last position, when asked for.
    pub logits: Option<Vec<f32>>,
}

/// Checks a prompt against the model; the error names the prompt.
fn check_prompt(model: &Model, i: usize, p: &[u32]) -> Result<()> {
    model.check_prompt(p, &format!("prompt {i}"))
}

/// Most token positions (rows x columns, padding included) one classification forward pass
/// computes.
const CLASSIFY_TOKENS: usize = 8192;

/// For each prompt, one forward pass and the next token chosen by `params.sampler` (greedy by
/// default), with the last position's logits when `want_logits`. Prompts run in left-padded
/// batches (sorted by length, so little is padding) of up to [`CLASSIFY_TOKENS`] positions;
/// the output head runs on each row's last position only. Every prompt gets the token it
/// would get alone: greedy rows share one argmax, and a sampled row draws with its own
/// sampler (seeded alike for every prompt).
pub fn classify(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    want_logits: bool,
) -> Result<Vec<ClassifyOutput>> {
    params.validate(model.vocab())?;
    for (i, p) in prompts.iter().enumerate() {
        check_prompt(model, i, p)?;
    }
    // A pooled stream: MLX keeps a thread (and on CUDA a device stream) for every stream
    // ever made, so a call must not make its own.
    let stream = pooled_stream(model.device)?;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut results: Vec<Option<ClassifyOutput>> = vec![None; prompts.len()];
    let mut start = 0;
    while start < order.len() {
        if params.cancel.as_ref().is_some_and(|c| c.is_requested()) {
            return Err(Error::cancelled());
        }
        // Rows are sorted by length: the group's longest is its last.
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * prompts[order[end]].len() <= CLASSIFY_TOKENS {
            end += 1;
        }
        let group = &order[start..end];
        let outs = classify_group(
            model,
            &stream,
            group.iter().map(|&i| prompts[i].as_slice()),
            params,
            want_logits,
        )?;
        for (&i, o) in group.iter().zip(outs) {
            results[i] = Some(o);
        }
        start = end;
    }
    results.into_iter().map(|r| r.ok_or_else(|| Error::internal("a prompt was not classified"))).collect()
}

/// One left-padded batch of [`classify`].
fn classify_group<'a>(
    model: &Model,
    stream: &Stream,
    prompts: impl Iterator<Item = &'a [u32]>,
    params: &GenerateParams,
    want_logits: bool,
) -> Result<Vec<ClassifyOutput>> {
    let prompts: Vec<&[u32]> = prompts.collect();
    let b = prompts.len();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pad: Vec<i32> = prompts.iter().map(|p| (longest - p.len()) as i32).collect();
    let mut flat = Vec::with_capacity(b * longest);
    for (p, &n) in prompts.iter().zip(&pad) {
        flat.extend(std::iter::repeat_n(0i32, n as usize));
        flat.extend(p.iter().map(|&t| t as i32));
    }
    let rows = RowPad { pad };
    // Columns per forward pass: the whole batch within the token budget, and no more than
    // prefill_chunk.
    let cols = (CLASSIFY_TOKENS / b).clamp(1, params.prefill_chunk.max(1));
    let probe = Sampler::new(&params.sampler)?;
    let shared = params.sampler.temperature == 0.0 && !probe.needs_history();
    let _lock = compute_lock();
    with_stream(stream, || -> Result<Vec<ClassifyOutput>> {
        let mut cache = model.new_batch_cache();
        let mut logits = None;
        let mut at = 0;
        while at < longest {
            let n = cols.min(longest - at);
            let mut part = Vec::with_capacity(b * n);
            for r in 0..b {
                part.extend_from_slice(&flat[r * longest + at..r * longest + at + n]);
            }
            let ids = Array::from_slice(&part, &[b as i32, n as i32])?;
            let l = model.transformer.forward_last(&ids, &mut cache, Some(&rows))?;
            at += n;
            if at < longest {
                mlx::eval(&cache.arrays())?;
            }
            logits = Some(l);
        }
        let logits = logits.ok_or_else(|| Error::internal("empty batch"))?;
        let tokens: Vec<u32> = if shared {
            let mut s = Sampler::new(&params.sampler)?;
            nan_guard(&logits, &s.sample(&logits, None)?)?.to_vec::<u32>()?
        } else {
            let mut t = Vec::with_capacity(b);
            for (r, p) in prompts.iter().enumerate() {
                let mut s = Sampler::new(&params.sampler)?;
                let history = if s.needs_history() {
                    let w = s.penalty_window();
                    let recent: Vec<i32> = p[p.len().saturating_sub(w)..].iter().map(|&x| x as i32).collect();
                    Some(Array::from_slice(&recent, &[1, recent.len() as i32])?)
                } else {
                    None
                };
                let row = ops::slice_axis(&logits, 0, r as i32, r as i32 + 1)?;
                t.push(nan_guard(&row, &s.sample(&row, history.as_ref())?)?.item::<u32>()?);
            }
            t
        };
        if tokens.contains(&NAN_TOKEN) {
            return Err(nan_error());
        }
        let all = if want_logits { Some(logits.to_f32_vec()?) } else { None };
        let vocab = logits.dim(1)? as usize;
        tokens
            .iter()
            .enumerate()
            .map(|(r, &token)| {
                Ok(ClassifyOutput {
                    token,
                    text: model.decode(&[token], params.skip_special_tokens)?,
                    logits: all.as_ref().map(|a| a[r * vocab..(r + 1) * vocab].to_vec()),
                })
            })
            .collect()
    })
}

/// One prompt's result in a batch.
#[derive(Clone, Debug)]
pub struct BatchOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    /// Bytes of `text` delivered once each token was generated (as a stream would deliver
    /// them: a character split over tokens, or text that may begin a stop string, is held
    /// back). Text past the last entry was released when the row ended.
    pub text_ends: Vec<usize>,
    pub finish: FinishReason,
}

struct Row {
    prompt_len: usize,
    done: Option<FinishReason>,
    tokens: Vec<u32>,
    out: TextStream,
    text_ends: Vec<usize>,
}

impl Row {
    fn finish(&mut self, reason: FinishReason, tok: &crate::model::Tokenizer, release: bool) {
        self.done = Some(reason);
        if release {
            self.out.release(tok);
        }
    }
}

/// Generates after every prompt at once: one forward pass per step for the whole batch. A
/// prompt that cannot run (empty, too long, bad ids) gets its own error and the others go on.
/// Greedy results equal one-by-one generation. `params.cancel`, when requested, stops every
/// row still running after the current step (their finish reason becomes `Cancelled`).
pub fn batch_generate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
) -> Result<(Vec<Result<BatchOutput>>, Metrics)> {
    params.validate(model.vocab())?;
    let started = Instant::now();
    let checks: Vec<Result<()>> =
        prompts.iter().enumerate().map(|(i, p)| check_prompt(model, i, p)).collect();
    let live: Vec<usize> = (0..prompts.len()).filter(|&i| checks[i].is_ok()).collect();
    let mut results: Vec<Option<Result<BatchOutput>>> =
        checks.into_iter().map(|c| c.err().map(Err)).collect();
    let mut metrics =
        Metrics { prompt_tokens: live.iter().map(|&i| prompts[i].len()).sum(), ..Metrics::default() };
    metrics.prefill_tokens = metrics.prompt_tokens;
    if live.is_empty() {
        return Ok((results.into_iter().map(|r| r.expect("every row failed")).collect(), metrics));
    }

    let tok = &model.tokenizer;
    let b = live.len() as i32;
    let longest = live.iter().map(|&i| prompts[i].len()).max().unwrap_or(0) as i32;
    let pad: Vec<i32> = live.iter().map(|&i| longest - prompts[i].len() as i32).collect();
    let mut flat = Vec::with_capacity((b * longest) as usize);
    for (&i, &p) in live.iter().zip(&pad) {
        flat.extend(std::iter::repeat_n(0i32, p as usize));
        flat.extend(prompts[i].iter().map(|&t| t as i32));
    }
    let eos = model.stop_ids(&params.stop_tokens, params.ignore_eos);
    let mut rows: Vec<Row> = live
        .iter()
        .map(|&i| Row {
            prompt_len: prompts[i].len(),
            done: None,
            tokens: Vec::new(),
            out: TextStream::new(params),
            text_ends: Vec::new(),
        })
        .collect();

    let stream = pooled_stream(model.device)?;
    let mut sampler = Sampler::new(&params.sampler)?;
    let mut cache = model.new_batch_cache();
    let rowpad = RowPad { pad: pad.clone() };
    // Penalty history: each row's last `window` tokens, a row with fewer left-padded with an
    // id no penalty counts (the vocabulary size), as one generating alone would see.
    let mut history = if sampler.needs_history() {
        sampler.allow_padded_history();
        let w = sampler.penalty_window();
        let none = model.vocab() as i32;
        let mut h = Vec::with_capacity(live.len() * w);
        for &i in &live {
            let have = prompts[i].len().min(w);
            h.extend(std::iter::repeat_n(none, w - have));
            h.extend(prompts[i][prompts[i].len() - have..].iter().map(|&t| t as i32));
        }
        Some(Array::from_slice(&h, &[b, w as i32])?)
    } else {
        None
    };
    let ctx = model.context_length();
    let mut input = Array::from_slice(&flat, &[b, longest])?;
    let mut first = None;
    // min_tokens: every row samples once per step from the first, so step k is each running
    // row's token k; the stop tokens are held back for the first min_tokens steps.
    if params.min_tokens > 0 {
        let mut held: Vec<u32> = eos.iter().copied().collect();
        held.sort_unstable();
        sampler.hold(&held)?;
    }
    let mut step = 0usize;
    loop {
        if step == params.min_tokens {
            sampler.release();
        }
        step += 1;
        let ids: Vec<u32> = {
            let _lock = compute_lock();
            with_stream(&stream, || -> Result<Vec<u32>> {
                let last = model.transformer.forward_last(&input, &mut cache, Some(&rowpad))?;
                let mut y = sampler.sample(&last, history.as_ref())?;
                if first.is_none() {
                    y = nan_guard(&last, &y)?;
                }
                if let Some(h) = &history {
                    let w = h.dim(1)?;
                    let h2 =
                        ops::concatenate(&[h, &ops::reshape(&ops::astype(&y, Dtype::I32)?, &[b, 1])?], 1)?;
                    history = Some(ops::slice_axis(&h2, 1, 1, w + 1)?);
                }
                y.to_vec::<u32>()
            })?
        };
        if first.is_none() && ids.contains(&NAN_TOKEN) {
            return Err(nan_error());
        }
        first.get_or_insert_with(Instant::now);
        for (r, &id) in rows.iter_mut().zip(&ids) {
            if r.done.is_some() {
                continue;
            }
            if eos.contains(&id) {
                r.finish(FinishReason::Stop, tok, true);
                continue;
            }
            r.tokens.push(id);
            let (_, stopped) = r.out.push(tok, id)?;
            r.text_ends.push(r.out.text().len());
            if stopped {
                r.finish(FinishReason::Stop, tok, false);
                continue;
            }
            // The row's own sequence (its prompt and tokens), not the padded batch's, meets
            // the context length.
            if r.tokens.len() >= params.max_tokens || r.prompt_len + r.tokens.len() >= ctx {
                r.finish(FinishReason::Length, tok, true);
            }
        }
        if params.cancel.as_ref().is_some_and(|c| c.is_requested()) {
            for r in rows.iter_mut().filter(|r| r.done.is_none()) {
                r.finish(FinishReason::Cancelled, tok, true);
            }
        }
        if rows.iter().all(|r| r.done.is_some()) {
            break;
        }
        // Finished rows keep being fed (their outputs are ignored) so the batch stays aligned.
        let next: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        input = Array::from_slice(&next, &[b, 1])?;
    }
    let now = Instant::now();
    let first = first.unwrap_or(now);
    metrics.generated_tokens = rows.iter().map(|r| r.tokens.len()).sum();
    metrics.prefill_seconds = (first - started).as_secs_f64();
    metrics.time_to_first_token = metrics.prefill_seconds;
    metrics.decode_seconds = (now - first).as_secs_f64();
    metrics.total_seconds = (now - started).as_secs_f64();
    metrics.peak_memory = memory::peak_memory().unwrap_or(0);
    metrics.active_memory = memory::active_memory().unwrap_or(0);
    metrics.finish_rates();
    for (&i, r) in live.iter().zip(rows) {
        results[i] = Some(Ok(BatchOutput {
            tokens: r.tokens,
            text: r.out.into_text(),
            text_ends: r.text_ends,
            finish: r.done.unwrap_or(FinishReason::Error),
        }));
    }
    Ok((results.into_iter().map(|r| r.expect("every row has a result")).collect(), metrics))
}
