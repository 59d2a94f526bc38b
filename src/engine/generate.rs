//! One generation: chunked prefill, then a decode loop pipelined as mlx-lm's: step n+1 is
//! built and dispatched before token n is handed out, so the device works while the caller
//! handles a token.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::cancel::Cancel;
use super::guide::Guide;
use super::metrics::Metrics;
use super::params::GenerateParams;
use super::sampling::Sampler;
use super::session::SessionState;
use super::text::{Post, TextStream};
use crate::mlx::{self, compute_lock, memory, ops, with_stream, Array};
use crate::model::{Constraint, Model, ReasoningSplit, ToolCall, ToolChoice, ToolStream};
use crate::{Error, Result};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token, a stop token or a stop string.
    Stop,
    /// max_tokens, or the context length.
    Length,
    /// Cancelled: by [`Session::cancel`](super::Session::cancel) or by the caller stopping.
    Cancelled,
    /// An error ended it.
    Error,
}

impl FinishReason {
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// A generated token and the text it completes. `id` is None for a last piece of held-back
/// text released when generation ends (text that could have begun a stop string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: Option<u32>,
    pub text: String,
}

/// The result of a whole call.
#[derive(Clone, Debug)]
pub struct Output {
    pub tokens: Vec<u32>,
    /// The text delivered: with tools, without the calls' text; with `split_reasoning`,
    /// without the reasoning.
    pub text: String,
    pub finish: FinishReason,
    pub metrics: Metrics,
    /// The reasoning split off the text (`split_reasoning`); empty otherwise.
    pub reasoning: String,
    /// The tool calls parsed from the output (when tools were given).
    pub tool_calls: Vec<ToolCall>,
    /// Calls whose text could not be read (it stays in `text`), one line each.
    pub tool_errors: Vec<String>,
}

/// Clear MLX's buffer cache this often (tokens), as mlx-lm does.
const CLEAR_CACHE_EVERY: usize = 256;

pub struct Generation {
    model: Arc<Model>,
    state: Option<SessionState>,
    slot: Arc<Mutex<Option<SessionState>>>,
    /// This generation's own token (what Session::cancel requests), and the caller's.
    cancel: Cancel,
    caller_cancel: Option<Cancel>,
    /// The session's record of its running generation's token, cleared when this ends.
    current: Arc<Mutex<Option<Cancel>>>,
    params: GenerateParams,
    sampler: Sampler,
    /// Prompt tokens not yet in the cache.
    to_prefill: Vec<u32>,
    /// The next token, dispatched but maybe not computed: [1] uint32.
    pending: Option<Array>,
    generated: Vec<u32>,
    eos: HashSet<u32>,
    /// Tokens sampled so far; the first `params.min_tokens` cannot be one of `eos`.
    sampled: usize,
    /// The text delivered, and what is held back.
    out: TextStream,
    finish: Option<FinishReason>,
    metrics: Metrics,
    started: Instant,
    first_token: Option<Instant>,
    ctx_limit: i32,
    /// Constrained decoding: the matcher's thread, the next step's logits (dispatched, not
    /// yet sampled), tokens chosen and not yet handed out, and how generation ends once they
    /// are (the grammar complete, or the token budget spent on forced tokens).
    guide: Option<Guide>,
    logits: Option<Array>,
    queue: VecDeque<u32>,
    end_after_queue: Option<FinishReason>,
    /// Tokens generated inside the reasoning, and whether its closing tag was forced (the
    /// thinking budget).
    reasoning_tokens: usize,
    budget_spent: bool,
    /// tool_choice auto: the call grammar that takes over once a call begins.
    lazy: Option<Constraint>,
}

/// What [`Generation::prepare`] makes before a session's state is taken.
pub(crate) struct Prepared {
    sampler: Sampler,
    guide: Option<Guide>,
    post: Post,
    keep_special: bool,
    lazy: Option<Constraint>,
}

impl Generation {
    /// Everything that can fail is prepared before the session's state is taken, so an error
    /// never strands the state outside its session: the sampler, its penalty history started
    /// from the prompt.
    /// A constraint is compiled here too, so that one that does not compile fails the call.
    pub(crate) fn prepare(model: &Model, prompt: &[u32], params: &GenerateParams) -> Result<Prepared> {
        let mut sampler = Sampler::new(&params.sampler)?;
        sampler.start_history(&[prompt], model.vocab())?;
        // Tools: a call required (or of one named tool) makes the whole output calls, under
        // the format's grammar; otherwise calls are parsed from the text as it comes.
        let format = params.tools.as_ref().map(|_| model.tool_format());
        let required = matches!(params.tool_choice, ToolChoice::Required | ToolChoice::Function(_));
        let tool_constraint = match (&params.tools, format) {
            (Some(tools), Some(f)) if required => {
                let special = |t: &str| model.is_special_token(t);
                Some(Constraint::Lark(f.required_grammar(
                    tools,
                    &params.tool_choice,
                    &special,
                    params.parallel_tool_calls,
                )?))
            }
            _ => None,
        };
        // tool_choice auto: a call the model begins is constrained from its trigger on (the
        // format's call grammar, each call's arguments valid against its tool), compiled
        // now so that a grammar error fails the call before anything runs. Not with stop
        // strings (the text they hold back would hide where the trigger ends) nor beside
        // another constraint.
        let lazy = match (&params.tools, format) {
            (Some(tools), Some(f))
                if params.tool_choice == ToolChoice::Auto
                    && params.constraint.is_none()
                    && params.stop_strings.is_empty() =>
            {
                let special = |t: &str| model.is_special_token(t);
                match f.call_grammar(tools, &params.tool_choice, &special, params.parallel_tool_calls) {
                    Ok(g) => {
                        let c = Constraint::Lark(g);
                        model.matcher(&c)?;
                        Some(c)
                    }
                    // A format without a grammar (Qwen3-Coder's XML): calls are parsed only.
                    Err(e) if e.kind == crate::ErrorKind::Unsupported => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let guide = match tool_constraint.as_ref().or(params.constraint.as_ref()) {
            Some(c) => {
                let eos = params.sorted_stop_ids(model);
                Some(Guide::new(model, c, true, eos)?)
            }
            None => None,
        };
        let mut post = Post::default();
        let mut keep_special = false;
        if let (Some(f), false) = (format, params.tool_choice == ToolChoice::None) {
            // Markers that are special tokens (`<|python_tag|>`, `[TOOL_CALLS]`) must stay
            // in the text for the parser to see them.
            keep_special = model.is_special_token(f.trigger());
            post.tools = Some(ToolStream::new(f));
        }
        if params.split_reasoning || params.thinking_budget.is_some() {
            if let Some(tags) = model.reasoning_tags() {
                // The prompt may leave the model inside its reasoning (it ends with the tag).
                let tail = &prompt[prompt.len().saturating_sub(8)..];
                let text = model.decode(tail, false).unwrap_or_default();
                post.split = Some(ReasoningSplit::after_prompt(tags, &text));
            }
        }
        Ok(Prepared { sampler, guide, post, keep_special, lazy })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        model: Arc<Model>,
        state: SessionState,
        slot: Arc<Mutex<Option<SessionState>>>,
        cancel: Cancel,
        current: Arc<Mutex<Option<Cancel>>>,
        prompt: &[u32],
        keep: usize,
        params: &GenerateParams,
        prepared: Prepared,
    ) -> Generation {
        let started = Instant::now();
        let eos = model.stop_ids(&params.stop_tokens, params.ignore_eos);
        let ctx_limit = model.info().context_length;
        Generation {
            model,
            state: Some(state),
            slot,
            caller_cancel: params.cancel.clone(),
            cancel,
            current,
            sampler: prepared.sampler,
            guide: prepared.guide,
            logits: None,
            queue: VecDeque::new(),
            end_after_queue: None,
            reasoning_tokens: 0,
            budget_spent: false,
            lazy: prepared.lazy,
            to_prefill: prompt[keep..].to_vec(),
            pending: None,
            generated: Vec::new(),
            out: TextStream::with_post(params, prepared.post, prepared.keep_special),
            eos,
            sampled: 0,
            finish: None,
            metrics: Metrics {
                prompt_tokens: prompt.len(),
                // Counted as chunks are computed: a prefill cancelled midway reports its part.
                prefill_tokens: 0,
                ..Metrics::default()
            },
            started,
            first_token: None,
            ctx_limit,
            params: params.clone(),
        }
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn stream(&self) -> Result<Arc<mlx::device::StreamLease>> {
        self.state
            .as_ref()
            .map(|s| s.stream.clone())
            .ok_or_else(|| Error::internal("generation without a session state"))
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_requested() || self.caller_cancel.as_ref().is_some_and(Cancel::is_requested)
    }

    /// Feeds `tokens` ([1, L]) and returns the logits of the last position, [1, V].
    fn feed(&mut self, tokens: &[u32]) -> Result<Array> {
        let st = self.state.as_mut().ok_or_else(|| Error::internal("generation without a session state"))?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let x = Array::from_slice(&ids, &[1, ids.len() as i32])?;
        let logits = st.forward_last(&self.model, &x)?;
        st.tokens.extend_from_slice(tokens);
        self.metrics.prefill_tokens += tokens.len();
        Ok(logits)
    }

    fn sample(&mut self, logits: &Array) -> Result<Array> {
        // min_tokens: while fewer tokens were sampled, the stop tokens are held back. Every
        // token sampled before then is generated (none can end generation), so the count of
        // samples is the count of generated tokens.
        if self.sampled < self.params.min_tokens {
            if !self.sampler.holding() {
                let mut ids: Vec<u32> = self.eos.iter().copied().collect();
                ids.sort_unstable();
                self.sampler.hold(&ids)?;
            }
        } else if self.sampler.holding() {
            self.sampler.release();
        }
        self.sampled += 1;
        self.sampler.sample(logits)
    }

    /// Runs the prefill: every prompt token but the last in chunks (the cache evaluated after
    /// each, cancellation checked between), then the last one, dispatching the first token.
    fn prefill(&mut self) -> Result<bool> {
        self.prefill_then(|g, logits| {
            // The first token carries the check of the prompt's logits for NaN.
            let y = super::sampling::nan_guard(&logits, &g.sample(&logits)?)?;
            mlx::async_eval(&[&y])?;
            g.pending = Some(y);
            Ok(())
        })
    }

    /// The prefill's chunks, then the last prompt token, whose logits `then` dispatches on
    /// the generation's stream; false when cancelled between two chunks.
    fn prefill_then(&mut self, then: impl FnOnce(&mut Self, Array) -> Result<()>) -> Result<bool> {
        if !self.prefill_chunks()? {
            return Ok(false);
        }
        let last = self.to_prefill.split_off(0);
        let _lock = compute_lock();
        let stream = self.stream()?;
        with_stream(&stream, || -> Result<()> {
            let logits = self.feed(&last)?;
            then(self, logits)
        })?;
        Ok(true)
    }

    /// Every prompt token but the last, in chunks; false when cancelled between two.
    fn prefill_chunks(&mut self) -> Result<bool> {
        let chunk = self.params.prefill_chunk;
        while self.to_prefill.len() > 1 {
            let n = chunk.min(self.to_prefill.len() - 1);
            let part: Vec<u32> = self.to_prefill.drain(..n).collect();
            {
                let _lock = compute_lock();
                let stream = self.stream()?;
                with_stream(&stream, || -> Result<()> {
                    self.feed(&part)?;
                    let st = self.state.as_ref().expect("state");
                    mlx::eval(&st.cache.arrays())
                })?;
            }
            if self.cancelled() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends generation. Unless a stop string ended it (`release` false), text held back
    /// because it might have begun a stop string is released as a last event.
    fn end(&mut self, reason: FinishReason, release: bool) -> Option<Event> {
        self.finish = Some(reason);
        self.metrics.finish(self.started, self.first_token, self.generated.len());
        self.pending = None;
        if !release {
            return None;
        }
        let rest = self.out.release(self.model.tokenizer());
        (!rest.is_empty()).then_some(Event { id: None, text: rest })
    }

    /// The next token, or None once generation has ended (see [`finish_reason`](Self::finish_reason)).
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<Event>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        match self.advance() {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.end(FinishReason::Error, false);
                // The cache may hold half a step: start the session afresh next time.
                if let Some(st) = self.state.as_mut() {
                    st.clear();
                }
                Err(e)
            }
        }
    }

    fn advance(&mut self) -> Result<Option<Event>> {
        if self.cancelled() {
            return Ok(self.end(FinishReason::Cancelled, true));
        }
        if self.guide.is_some() {
            return self.advance_guided();
        }
        if let Some(id) = self.queue.pop_front() {
            // A forced token (the thinking budget's closing tag), already in the cache.
            let ev = self.emit(id)?;
            if self.finish.is_some() {
                return Ok(ev);
            }
            let ev = ev.ok_or_else(|| Error::internal("no event for a token of a running generation"))?;
            if self.generated.len() >= self.params.max_tokens {
                let tail = self.end(FinishReason::Length, true);
                return Ok(Some(merge(ev, tail)));
            }
            return Ok(Some(ev));
        }
        if self.pending.is_none() && !self.prefill()? {
            return Ok(self.end(FinishReason::Cancelled, true));
        }
        let y = self.pending.take().ok_or_else(|| Error::internal("no pending token"))?;
        let offset = self.state.as_ref().map(|s| s.cache.offset()).unwrap_or(0);
        // The cache holds the sequence but the token being emitted: another token fits while
        // the sequence with it (offset + 2) stays within the context length.
        let more = self.generated.len() + 1 < self.params.max_tokens && offset + 2 <= self.ctx_limit;
        let id = {
            let _lock = compute_lock();
            // The first token carries the NaN check of the prompt's logits (a sentinel that
            // must never index the embedding): read it before building on it.
            let checked = if self.first_token.is_none() {
                let id = y.item::<u32>()?;
                if id == super::sampling::NAN_TOKEN {
                    return Err(super::sampling::nan_error());
                }
                Some(id)
            } else {
                None
            };
            if more {
                let stream = self.stream()?;
                with_stream(&stream, || -> Result<()> {
                    // Build and dispatch step n+1 from the still-lazy token n.
                    let st = self.state.as_mut().expect("state");
                    // Token ids index the embedding as they are (uint32): no conversion.
                    let x = ops::reshape(&y, &[1, 1])?;
                    let logits = st.forward_last(&self.model, &x)?;
                    let next = self.sample(&logits)?;
                    mlx::async_eval(&[&next])?;
                    self.pending = Some(next);
                    if self.lazy.is_some() {
                        // Where a call constraint would draw from instead, if one begins.
                        self.logits = Some(logits);
                    }
                    Ok(())
                })?;
            }
            let wait = Instant::now();
            let id = match checked {
                Some(id) => id,
                None => y.item::<u32>()?,
            };
            if self.first_token.is_some() {
                self.metrics.decode_wait_seconds += wait.elapsed().as_secs_f64();
            }
            id
        };
        if more {
            if let Some(st) = self.state.as_mut() {
                st.tokens.push(id);
            }
        }
        let ev = self.emit(id)?;
        if self.finish.is_some() {
            return Ok(ev);
        }
        let ev = ev.ok_or_else(|| Error::internal("no event for a token of a running generation"))?;
        if !more {
            let tail = self.end(FinishReason::Length, true);
            return Ok(Some(merge(ev, tail)));
        }
        self.check_thinking_budget()?;
        self.start_lazy_call()?;
        if self.cancelled() {
            let tail = self.end(FinishReason::Cancelled, true);
            return Ok(Some(merge(ev, tail)));
        }
        Ok(Some(ev))
    }

    /// Hands out token `id` (already chosen): EOS ends generation, a stop string too (see
    /// `finish`); None when it ended without text.
    fn emit(&mut self, id: u32) -> Result<Option<Event>> {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
        if self.generated.len() % CLEAR_CACHE_EVERY == CLEAR_CACHE_EVERY - 1 {
            memory::clear_cache()?;
        }
        if self.eos.contains(&id) {
            return Ok(self.end(FinishReason::Stop, true));
        }
        self.generated.push(id);
        let (text, stopped) = self.out.push(self.model.tokenizer(), id)?;
        let ev = Event { id: Some(id), text };
        if stopped {
            self.end(FinishReason::Stop, false);
        }
        Ok(Some(ev))
    }

    /// tool_choice auto: when the text just delivered ends with a call's trigger, the call
    /// grammar takes over: the token already drawn after the trigger (unconstrained) is
    /// dropped, and the next one is drawn under the grammar from the same logits.
    fn start_lazy_call(&mut self) -> Result<()> {
        if self.lazy.is_none()
            || !self.out.call_just_began()
            || self.pending.is_none()
            || self.logits.is_none()
        {
            return Ok(());
        }
        let c = self.lazy.take().expect("checked");
        let mut g = Guide::new(&self.model, &c, true, self.params.sorted_stop_ids(&self.model))?;
        g.tell(Vec::new())?;
        self.guide = Some(g);
        self.pending = None;
        Ok(())
    }

    /// The thinking budget: once the reasoning has taken that many tokens, its closing tag is
    /// forced. The token already drawn after the last one is dropped; the tag's tokens are fed
    /// in one pass, the next token drawn from there, and the tag handed out first.
    fn check_thinking_budget(&mut self) -> Result<()> {
        let Some(budget) = self.params.thinking_budget else { return Ok(()) };
        if self.budget_spent || !self.out.in_reasoning() {
            return Ok(());
        }
        self.reasoning_tokens += 1;
        if self.reasoning_tokens < budget || self.pending.is_none() {
            return Ok(());
        }
        let Some(tags) = self.model.reasoning_tags() else { return Ok(()) };
        self.budget_spent = true;
        let forced = self.model.encode(&format!("{}\n\n", tags.close), false)?;
        let room = self.params.max_tokens.saturating_sub(self.generated.len());
        if forced.is_empty()
            || forced.len() >= room
            || self.cache_offset() + forced.len() as i32 + 2 > self.ctx_limit
        {
            return Ok(());
        }
        self.pending = None;
        let _lock = compute_lock();
        let stream = self.stream()?;
        with_stream(&stream, || -> Result<()> {
            let logits = self.feed(&forced)?;
            self.metrics.prefill_tokens -= forced.len();
            let y = self.sample(&logits)?;
            mlx::async_eval(&[&y])?;
            self.pending = Some(y);
            Ok(())
        })?;
        self.metrics.forced_tokens += forced.len();
        self.queue.extend(forced);
        Ok(())
    }

    /// Constrained decoding's `advance`: hands out the next chosen token, choosing more when
    /// none is left.
    fn advance_guided(&mut self) -> Result<Option<Event>> {
        if self.queue.is_empty() && self.end_after_queue.is_none() && !self.choose_guided()? {
            return Ok(self.end(FinishReason::Cancelled, true));
        }
        let Some(id) = self.queue.pop_front() else {
            let reason = self.end_after_queue.unwrap_or(FinishReason::Stop);
            return Ok(self.end(reason, true));
        };
        let ev = self.emit(id)?;
        if self.finish.is_some() {
            return Ok(ev);
        }
        let ev = ev.ok_or_else(|| Error::internal("no event for a token of a running generation"))?;
        if self.queue.is_empty() {
            if let Some(reason) = self.end_after_queue {
                let tail = self.end(reason, true);
                return Ok(Some(merge(ev, tail)));
            }
        }
        if self.cancelled() {
            let tail = self.end(FinishReason::Cancelled, true);
            return Ok(Some(merge(ev, tail)));
        }
        Ok(Some(ev))
    }

    fn guide(&mut self) -> Result<&mut Guide> {
        self.guide.as_mut().ok_or_else(|| Error::internal("constrained step without a constraint"))
    }

    fn cache_offset(&self) -> i32 {
        self.state.as_ref().map(|s| s.cache.offset()).unwrap_or(0)
    }

    /// Chooses the next tokens under the constraint into the queue: the tokens the grammar
    /// forces, fed to the model in one forward pass, then one drawn under the grammar's mask.
    /// As in unconstrained decoding, the drawn token's forward pass is dispatched before the
    /// token is read, and while the device computes it the guide's thread computes the mask
    /// that will apply to its logits. False when cancelled during the prefill.
    fn choose_guided(&mut self) -> Result<bool> {
        if self.logits.is_none() {
            // The matcher works out the first mask while the prompt is computed.
            self.guide()?.tell(Vec::new())?;
            let fed = self.prefill_then(|g, l| {
                mlx::async_eval(&[&l])?;
                g.logits = Some(l);
                Ok(())
            })?;
            if !fed {
                return Ok(false);
            }
        }
        let wait = Instant::now();
        let step = self.guide()?.step()?;
        self.metrics.constraint_wait_seconds += wait.elapsed().as_secs_f64();
        self.metrics.constraint_seconds += step.seconds;
        // Tokens that may still be generated, and appended to the sequence.
        let room = self.params.max_tokens.saturating_sub(self.generated.len());
        let fit = (self.ctx_limit - self.cache_offset()).max(0) as usize;
        let mut forced = step.forced;
        if step.done || forced.len() >= room.min(fit) {
            let reason = if step.done && forced.len() <= room.min(fit) {
                FinishReason::Stop
            } else {
                FinishReason::Length
            };
            forced.truncate(room.min(fit));
            self.metrics.forced_tokens += forced.len();
            self.queue.extend(forced);
            self.end_after_queue = Some(reason);
            self.logits = None;
            return Ok(true);
        }
        let mut logits = self.logits.take().ok_or_else(|| Error::internal("no logits to draw from"))?;
        if !forced.is_empty() {
            self.metrics.forced_tokens += forced.len();
            let _lock = compute_lock();
            let stream = self.stream()?;
            logits = with_stream(&stream, || self.feed(&forced))?;
            // Not prompt tokens: feed() counted them as such.
            self.metrics.prefill_tokens -= forced.len();
            self.queue.extend(forced);
        }
        let first = self.first_token.is_none() && self.queue.is_empty();
        let more = self.generated.len() + self.queue.len() + 1 < self.params.max_tokens
            && self.cache_offset() + 2 <= self.ctx_limit;
        let words = step.mask.len();
        let id = {
            let _lock = compute_lock();
            let stream = self.stream()?;
            with_stream(&stream, || -> Result<u32> {
                self.sampler.allow(&step.mask, words)?;
                let mut y = self.sample(&logits)?;
                if first {
                    // The first token carries the check of the prompt's logits for NaN, and
                    // is read before anything is built on it.
                    y = super::sampling::nan_guard(&logits, &y)?;
                    let id = y.item::<u32>()?;
                    if id == super::sampling::NAN_TOKEN {
                        return Err(super::sampling::nan_error());
                    }
                }
                // The draw is dispatched on its own, so that reading it waits for it alone,
                // not for the next step's forward pass dispatched after it.
                mlx::async_eval(&[&y])?;
                if more {
                    let st = self.state.as_mut().expect("state");
                    let next = st.forward_last(&self.model, &ops::reshape(&y, &[1, 1])?)?;
                    mlx::async_eval(&[&next])?;
                    self.logits = Some(next);
                }
                let wait = Instant::now();
                let id = y.item::<u32>()?;
                if !first {
                    self.metrics.decode_wait_seconds += wait.elapsed().as_secs_f64();
                }
                Ok(id)
            })?
        };
        self.queue.push_back(id);
        if !more {
            self.end_after_queue = Some(FinishReason::Length);
            self.logits = None;
            return Ok(true);
        }
        if let Some(st) = self.state.as_mut() {
            st.tokens.push(id);
        }
        if !self.eos.contains(&id) {
            self.guide()?.tell(vec![id])?;
        }
        Ok(true)
    }

    /// Ends a generation that is still running, as cancelled (metrics complete). Nothing more
    /// will be generated.
    pub fn stop(&mut self) {
        if self.finish.is_none() {
            self.end(FinishReason::Cancelled, false);
        }
    }

    /// Runs to the end, calling `on_token` for each event; it returns false to stop (the
    /// finish reason is then `Cancelled`).
    pub fn run(mut self, mut on_token: impl FnMut(&Event) -> bool) -> Result<Output> {
        while let Some(ev) = self.next()? {
            if !on_token(&ev) {
                self.stop();
                break;
            }
        }
        Ok(self.output())
    }

    /// The result so far (once it has ended: the reasoning and the parsed tool calls too).
    pub fn output(&mut self) -> Output {
        let (reasoning, parsed) = if self.finish.is_some() { self.out.message() } else { Default::default() };
        let (tool_calls, tool_errors) = parsed.map(|p| (p.calls, p.errors)).unwrap_or_default();
        Output {
            tokens: self.generated.clone(),
            text: self.out.text().to_string(),
            finish: self.finish.unwrap_or(FinishReason::Error),
            metrics: self.metrics.clone(),
            reasoning,
            tool_calls,
            tool_errors,
        }
    }
}

/// A token's event with the released tail appended.
fn merge(mut ev: Event, tail: Option<Event>) -> Event {
    if let Some(t) = tail {
        ev.text.push_str(&t.text);
    }
    ev
}

impl Drop for Generation {
    fn drop(&mut self) {
        // First forget this generation's token (a cancel from now on finds nothing running
        // and does nothing), then hand the cache back to the session.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref() == Some(&self.cancel) {
            *current = None;
        }
        drop(current);
        if let Some(st) = self.state.take() {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(st);
        }
    }
}
