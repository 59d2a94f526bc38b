//! Batches: classification (one forward pass per prompt) and generation of several prompts
//! in one forward pass per step, left-padded with per-row masks and positions.

use std::time::Instant;

use super::generate::FinishReason;
use super::guide::Guide;
use super::metrics::Metrics;
use super::params::GenerateParams;
use super::sampling::{nan_error, nan_guard, Sampler, NAN_TOKEN};
use super::text::TextStream;
use crate::mlx::device::pooled_stream;
use crate::mlx::{self, compute_lock, ops, with_stream, Array, Stream};
use crate::model::nn::transformer::RowPad;
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

/// `prompts` left-padded to the longest: the ids row after row ([B, longest] flattened, padding
/// id 0), and each row's padding.
fn left_padded(prompts: &[&[u32]]) -> (Vec<i32>, RowPad, usize) {
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pad: Vec<i32> = prompts.iter().map(|p| (longest - p.len()) as i32).collect();
    let mut flat = Vec::with_capacity(prompts.len() * longest);
    for (p, &n) in prompts.iter().zip(&pad) {
        flat.extend(std::iter::repeat_n(0i32, n as usize));
        flat.extend(p.iter().map(|&t| t as i32));
    }
    (flat, RowPad { pad }, longest)
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
    let stream = pooled_stream(model.device())?;
    // A constraint limits the one token: its first mask, the same for every prompt.
    let allowed = match &params.constraint {
        Some(c) => {
            let eos = params.sorted_stop_ids(model);
            Some(super::guide::first_mask(model, c, &eos)?)
        }
        None => None,
    };
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
            allowed.as_deref(),
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
    allowed: Option<&[u32]>,
) -> Result<Vec<ClassifyOutput>> {
    let prompts: Vec<&[u32]> = prompts.collect();
    let b = prompts.len();
    let (flat, rows, longest) = left_padded(&prompts);
    // Columns per forward pass: the whole batch within the token budget, and no more than
    // prefill_chunk.
    let cols = (CLASSIFY_TOKENS / b).clamp(1, params.prefill_chunk.max(1));
    let shared = params.sampler.temperature == 0.0 && !Sampler::new(&params.sampler)?.needs_history();
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
            let l = model.transformer().forward_last(&ids, &mut cache, Some(&rows))?;
            at += n;
            if at < longest {
                mlx::eval(&cache.arrays())?;
            }
            logits = Some(l);
        }
        let logits = logits.ok_or_else(|| Error::internal("empty batch"))?;
        let tokens: Vec<u32> = if shared {
            let mut s = Sampler::new(&params.sampler)?;
            if let Some(words) = allowed {
                s.allow(&words.repeat(b), words.len())?;
            }
            nan_guard(&logits, &s.sample(&logits)?)?.to_vec::<u32>()?
        } else {
            // Each row with its own sampler (seeded alike) and penalty history.
            let mut t = Vec::with_capacity(b);
            for (r, p) in prompts.iter().enumerate() {
                let mut s = Sampler::new(&params.sampler)?;
                s.start_history(&[p], model.vocab())?;
                if let Some(words) = allowed {
                    s.allow(words, words.len())?;
                }
                let row = ops::slice_axis(&logits, 0, r as i32, r as i32 + 1)?;
                t.push(nan_guard(&row, &s.sample(&row)?)?.item::<u32>()?);
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
    /// The row's constraint, when it has one.
    guide: Option<Guide>,
    prompt_len: usize,
    done: Option<FinishReason>,
    tokens: Vec<u32>,
    out: TextStream,
    text_ends: Vec<usize>,
}

impl Row {
    fn new(prompt_len: usize, params: &GenerateParams) -> Row {
        Row {
            guide: None,
            prompt_len,
            done: None,
            tokens: Vec::new(),
            out: TextStream::new(params),
            text_ends: Vec::new(),
        }
    }

    fn output(self) -> BatchOutput {
        BatchOutput {
            tokens: self.tokens,
            text: self.out.into_text(),
            text_ends: self.text_ends,
            finish: self.done.unwrap_or(FinishReason::Error),
        }
    }

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
    batch_generate_constrained(model, prompts, params, &[])
}

/// As [`batch_generate`], each row under its own constraint: `constraints[i]` for prompt i
/// (None: unconstrained), or `params.constraint` for every row when `constraints` is empty.
/// A constraint that does not compile is its row's error. Forced tokens come one step each
/// here (the rows step together), as masks that allow only them.
pub fn batch_generate_constrained(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    constraints: &[Option<crate::model::Constraint>],
) -> Result<(Vec<Result<BatchOutput>>, Metrics)> {
    params.validate(model.vocab())?;
    if !constraints.is_empty() && constraints.len() != prompts.len() {
        return Err(Error::invalid(format!(
            "{} constraints for {} prompts: give one per prompt (or none)",
            constraints.len(),
            prompts.len()
        )));
    }
    let started = Instant::now();
    let eos = params.sorted_stop_ids(model);
    let mut guides: Vec<Option<Guide>> = Vec::with_capacity(prompts.len());
    let mut results: Vec<Option<Result<BatchOutput>>> = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let c = if constraints.is_empty() { params.constraint.as_ref() } else { constraints[i].as_ref() };
        let guide = match check_prompt(model, i, p) {
            Err(e) => Err(e),
            Ok(()) => match c {
                Some(c) => c
                    .validate()
                    .and_then(|_| Guide::new(model, c, false, eos.clone()))
                    .map(Some)
                    .map_err(|e| e.context(format!("prompt {i}"))),
                None => Ok(None),
            },
        };
        match guide {
            Ok(g) => {
                guides.push(g);
                results.push(None);
            }
            Err(e) => {
                guides.push(None);
                results.push(Some(Err(e)));
            }
        }
    }
    let live: Vec<usize> = (0..prompts.len()).filter(|&i| results[i].is_none()).collect();
    let prompt_tokens = live.iter().map(|&i| prompts[i].len()).sum();
    let mut metrics = Metrics { prompt_tokens, prefill_tokens: prompt_tokens, ..Metrics::default() };
    if !live.is_empty() {
        let live_prompts: Vec<&[u32]> = live.iter().map(|&i| prompts[i].as_slice()).collect();
        let mut batch = Batch::new(model, &live_prompts, params)?;
        for (row, &i) in batch.rows.iter_mut().zip(&live) {
            row.guide = guides[i].take();
        }
        let first = batch.run(params)?;
        metrics.finish(started, first, batch.rows.iter().map(|r| r.tokens.len()).sum());
        for (&i, r) in live.iter().zip(batch.rows) {
            results[i] = Some(Ok(r.output()));
        }
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::internal("a batch row has no result")))
        .collect::<Result<Vec<_>>>()
        .map(|r| (r, metrics))
}

/// A running batch: the rows, their shared cache and sampler, and the next step's input.
struct Batch<'a> {
    model: &'a Model,
    rows: Vec<Row>,
    cache: crate::model::KvCache,
    sampler: Sampler,
    pad: RowPad,
    /// The next forward pass's input: the padded prompts, then each row's last token.
    input: Array,
    eos: std::collections::HashSet<u32>,
}

impl<'a> Batch<'a> {
    /// The batch for `prompts` (each checked against the model), left-padded.
    fn new(model: &'a Model, prompts: &[&[u32]], params: &GenerateParams) -> Result<Batch<'a>> {
        let (flat, pad, longest) = left_padded(prompts);
        let mut sampler = Sampler::new(&params.sampler)?;
        sampler.start_history(prompts, model.vocab())?;
        let eos = model.stop_ids(&params.stop_tokens, params.ignore_eos);
        // min_tokens: every row samples once per step from the first, so step k is each
        // running row's token k; the stop tokens are held back for the first min_tokens steps.
        if params.min_tokens > 0 {
            let mut held: Vec<u32> = eos.iter().copied().collect();
            held.sort_unstable();
            sampler.hold(&held)?;
        }
        Ok(Batch {
            model,
            rows: prompts.iter().map(|p| Row::new(p.len(), params)).collect(),
            cache: model.new_batch_cache(),
            sampler,
            input: Array::from_slice(&flat, &[prompts.len() as i32, longest as i32])?,
            pad,
            eos,
        })
    }

    /// Steps until every row has finished; returns when the first tokens came.
    fn run(&mut self, params: &GenerateParams) -> Result<Option<Instant>> {
        // A pooled stream: MLX keeps a thread (and on CUDA a device stream) for every stream
        // ever made, so a call must not make its own.
        let stream = pooled_stream(self.model.device())?;
        let mut first = None;
        for r in self.rows.iter_mut() {
            if let Some(g) = r.guide.as_mut() {
                g.tell(Vec::new())?;
            }
        }
        for step in 0.. {
            if step == params.min_tokens {
                self.sampler.release();
            }
            let ids = self.step(&stream, first.is_none())?;
            first.get_or_insert_with(Instant::now);
            self.take(&ids, params)?;
            if params.cancel.as_ref().is_some_and(|c| c.is_requested()) {
                let tok = self.model.tokenizer();
                for r in self.rows.iter_mut().filter(|r| r.done.is_none()) {
                    r.finish(FinishReason::Cancelled, tok, true);
                }
            }
            if self.rows.iter().all(|r| r.done.is_some()) {
                return Ok(first);
            }
            // Finished rows keep being fed (their outputs are ignored) so the batch stays aligned.
            let next: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
            self.input = Array::from_slice(&next, &[next.len() as i32, 1])?;
        }
        Err(Error::internal("a batch ran past usize::MAX steps"))
    }

    /// One forward pass and each row's next token. The first step carries the NaN check of
    /// the prompts' logits.
    fn step(&mut self, stream: &Stream, first: bool) -> Result<Vec<u32>> {
        let guided = self.rows.iter().any(|r| r.guide.is_some() && r.done.is_none());
        let ids = {
            let _lock = compute_lock();
            with_stream(stream, || -> Result<Vec<u32>> {
                let last =
                    self.model.transformer().forward_last(&self.input, &mut self.cache, Some(&self.pad))?;
                if guided {
                    // The device computes the step while the rows' guides finish their masks.
                    mlx::async_eval(&[&last])?;
                    self.allow_rows(last.dim(1)? as usize)?;
                }
                let mut y = self.sampler.sample(&last)?;
                if first {
                    y = nan_guard(&last, &y)?;
                }
                y.to_vec::<u32>()
            })?
        };
        if first && ids.contains(&NAN_TOKEN) {
            return Err(nan_error());
        }
        Ok(ids)
    }

    /// Each running row's constraint mask for the next draw (every token allowed in the
    /// rows without one); a row whose constraint is complete ends here, as stopped.
    fn allow_rows(&mut self, vocab: usize) -> Result<()> {
        let words = vocab.div_ceil(32);
        let mut all = vec![u32::MAX; words * self.rows.len()];
        let tok = self.model.tokenizer();
        for (i, r) in self.rows.iter_mut().enumerate() {
            let Some(g) = r.guide.as_mut().filter(|_| r.done.is_none()) else { continue };
            let step = g.step()?;
            if step.done {
                r.finish(FinishReason::Stop, tok, true);
                continue;
            }
            let n = step.mask.len().min(words);
            all[i * words..i * words + n].copy_from_slice(&step.mask[..n]);
            all[i * words + n..(i + 1) * words].fill(0);
        }
        self.sampler.allow(&all, words)
    }

    /// Hands each running row its token: EOS, stop strings, max_tokens and the row's own
    /// context length end it.
    fn take(&mut self, ids: &[u32], params: &GenerateParams) -> Result<()> {
        let tok = self.model.tokenizer();
        let ctx = self.model.context_length();
        for (r, &id) in self.rows.iter_mut().zip(ids) {
            if r.done.is_some() {
                continue;
            }
            if self.eos.contains(&id) {
                r.finish(FinishReason::Stop, tok, true);
                continue;
            }
            if let Some(g) = r.guide.as_mut() {
                g.tell(vec![id])?;
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
        Ok(())
    }
}
