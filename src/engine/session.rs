//! Sessions: a KV cache that lives across calls, so the next turn of a chat prefills only the
//! tokens the cache does not already hold.
//!
//! Threads: a session runs one generation at a time (another call while one runs is
//! `Busy`); sessions of one model may be used from several threads at once. Their MLX work is
//! serialized step by step (prefill chunk, decode step) by the compute lock, so they take
//! turns and never share a cache. [`Session::cancel`] may be called from any thread.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::cancel::Cancel;
use super::generate::{Generation, Output};
use super::params::GenerateParams;
use crate::mlx::device::{pooled_stream, StreamLease};
use crate::model::nn::lora::{Lora, LoraWeights};
use crate::model::{KvCache, KvQuant, Message, Model, Tools};
use crate::{Error, ErrorKind, Result};

/// What a session keeps between calls.
pub(crate) struct SessionState {
    pub cache: KvCache,
    /// The tokens whose keys and values the cache holds, in order, after the `opaque` ones.
    pub tokens: Vec<u32>,
    /// Leading cached positions whose tokens are unknown (restored from an mlx-lm file): a
    /// prompt continues after them.
    pub opaque: i32,
    pub stream: Arc<StreamLease>,
    /// The adapter applied, with its scale; None = the base model.
    pub adapter: Option<(Arc<LoraWeights>, f32)>,
}

impl SessionState {
    /// Forgets everything cached.
    pub fn clear(&mut self) {
        self.cache.reset();
        self.tokens.clear();
        self.opaque = 0;
    }

    /// Makes the cache hold the longest prefix of `prompt` it can reuse, leaving at least one
    /// prompt token to compute (its logits give the first new token); returns how many prompt
    /// tokens are cached. With unknown leading positions (`opaque`), `prompt` continues after
    /// them; a prompt that cannot do so is an error, since those positions cannot be
    /// recomputed.
    pub fn reuse(&mut self, prompt: &[u32]) -> Result<usize> {
        let mut keep = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        keep = keep.min(prompt.len() - 1);
        if keep < self.tokens.len() {
            let drop = (self.tokens.len() - keep) as i32;
            if self.cache.trim(drop).is_ok() {
                self.tokens.truncate(keep);
            } else if self.opaque > 0 {
                return Err(Error::invalid(format!(
                    "the prompt does not continue the session's cached tokens, and this sliding-window cache \
                     cannot be rewound past them: its first {} positions came from a file without token ids \
                     (reset the session to start over)",
                    self.opaque
                )));
            } else {
                self.clear();
                keep = 0;
            }
        }
        Ok(keep)
    }

    /// Logits [1, vocab] of the last of `x` ([1, L] ids) after the cache, with the adapter.
    pub fn forward_last(&mut self, model: &Model, x: &crate::mlx::Array) -> Result<crate::mlx::Array> {
        let lora =
            self.adapter.as_ref().map(|(w, scale)| Lora { weights: w, scale: *scale, dropout: 0.0, seed: 0 });
        model.transformer().forward_last_with(x, &mut self.cache, lora.as_ref())
    }
}

pub struct Session {
    model: Arc<Model>,
    /// None while a generation has the state.
    slot: Arc<Mutex<Option<SessionState>>>,
    /// The running generation's cancellation token; None while nothing runs.
    current: Arc<Mutex<Option<Cancel>>>,
}

/// How a session keeps its cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Quantize the global layers' keys and values (None: keep them in the model's dtype).
    pub kv_quant: Option<KvQuant>,
}

impl Session {
    /// A new session on `model`, computing on a pooled stream of the model's device.
    pub fn new(model: Arc<Model>) -> Result<Session> {
        Self::with_options(model, &SessionOptions::default())
    }

    /// A new session with `options`.
    pub fn with_options(model: Arc<Model>, options: &SessionOptions) -> Result<Session> {
        let cache = model.new_cache(options.kv_quant)?;
        Self::from_parts(model, cache, Vec::new(), 0, None)
    }

    fn from_parts(
        model: Arc<Model>,
        cache: KvCache,
        tokens: Vec<u32>,
        opaque: i32,
        adapter: Option<(Arc<LoraWeights>, f32)>,
    ) -> Result<Session> {
        let stream = pooled_stream(model.device())?;
        Ok(Session {
            model,
            slot: Arc::new(Mutex::new(Some(SessionState {
                cache,
                tokens,
                opaque,
                stream: Arc::new(stream),
                adapter,
            }))),
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// A new session with this one's state: cached tokens, cache quantization and adapter.
    /// The two share the cache's buffers (nothing is copied now); the first write of either
    /// to a shared buffer copies that buffer. `Busy` while a generation runs.
    pub fn fork(&self) -> Result<Session> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let st = slot.as_ref().ok_or_else(Self::busy)?;
        Self::from_parts(
            self.model.clone(),
            st.cache.clone(),
            st.tokens.clone(),
            st.opaque,
            st.adapter.clone(),
        )
    }

    /// Writes the session's cache and tokens to `path` (see [`super::session_file`]), with
    /// `metadata` added to the file's user metadata. The file is replaced only once complete.
    /// A session with an adapter cannot be saved (fuse the adapter into a model instead).
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let st = slot.as_ref().ok_or_else(Self::busy)?;
        if st.adapter.is_some() {
            return Err(Error::unsupported(
                "a session with an adapter cannot be saved: fuse the adapter into the model \
                 (lmx_adapter_fuse) and save a session of the fused model",
            ));
        }
        // No lock here: the evaluations inside take the compute lock each, and the file is
        // written without it.
        crate::mlx::with_stream(&st.stream, || {
            super::session_file::save(&self.model, &st.cache, &st.tokens, st.opaque, metadata, path)
        })
    }

    /// A session restored from `path` (saved by [`save`](Self::save) or by mlx-lm's
    /// `save_prompt_cache`) for `model`, with the file's user metadata. `options.kv_quant`
    /// applies from now on to a float cache; a quantized cache keeps its bits and group size
    /// (options asking for others are an error).
    pub fn load(
        model: Arc<Model>,
        path: &Path,
        options: &SessionOptions,
    ) -> Result<(Session, super::session_file::Restored)> {
        // No lock here: each evaluation takes the compute lock for itself, as a model load does.
        let mut r = super::session_file::load(&model, path)?;
        let cache = match (r.cache.quant(), options.kv_quant) {
            (None, Some(q)) => {
                q.check(model.spec())?;
                r.cache.clone().with_quant_from_now(q)?
            }
            (Some(f), Some(q)) if (f.bits, f.group_size) != (q.bits, q.group_size) => {
                return Err(Error::invalid(format!(
                    "{}: the cache is quantized with {} bits in groups of {}; the options ask for {} bits in groups of {}",
                    path.display(),
                    f.bits,
                    f.group_size,
                    q.bits,
                    q.group_size
                )));
            }
            _ => r.cache.clone(),
        }
        .for_device(model.device())?;
        let tokens = std::mem::take(&mut r.tokens);
        let s = Self::from_parts(model, cache, tokens, r.opaque, None)?;
        Ok((s, r))
    }

    fn busy() -> Error {
        Error::new(ErrorKind::Busy, "the session is generating; wait for the call to return or cancel it")
    }

    fn take_state(&self) -> Result<SessionState> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().ok_or_else(Self::busy)
    }

    /// Empties the cache.
    pub fn reset(&self) -> Result<()> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_mut().ok_or_else(Self::busy)?.clear();
        Ok(())
    }

    /// Applies `adapter` with `scale` to this session's generations from now on (None: the
    /// base model). The adapter must have been made for this model. The cache is emptied when
    /// the adapter or scale changes (what it holds was computed with the other weights).
    pub fn set_adapter(&self, adapter: Option<(Arc<LoraWeights>, f32)>) -> Result<()> {
        if let Some((w, scale)) = &adapter {
            if !scale.is_finite() {
                return Err(Error::invalid(format!("adapter scale {scale} is not a finite number")));
            }
            w.check(self.model.spec())?;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let st = slot.as_mut().ok_or_else(Self::busy)?;
        let same = match (&st.adapter, &adapter) {
            (None, None) => true,
            (Some((a, x)), Some((b, y))) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        };
        if !same {
            st.clear();
            st.adapter = adapter;
        }
        Ok(())
    }

    /// How many positions the cache holds (the known tokens and any unknown leading ones)
    /// and the bytes of its buffers.
    pub fn cache_size(&self) -> Result<(usize, usize)> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let st = slot.as_ref().ok_or_else(Self::busy)?;
        Ok((st.cache.offset() as usize, st.cache.nbytes()))
    }

    /// The cache's quantization, if any.
    pub fn kv_quant(&self) -> Result<Option<KvQuant>> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slot.as_ref().ok_or_else(Self::busy)?.cache.quant())
    }

    /// The tokens the cache holds (after any unknown leading positions).
    pub fn cached_tokens(&self) -> Result<Vec<u32>> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slot.as_ref().ok_or_else(Self::busy)?.tokens.clone())
    }

    /// Asks the running generation to stop at its next check: after the current prefill
    /// chunk or decoded token. Does nothing when no generation runs (a later one is not
    /// affected). Any thread.
    pub fn cancel(&self) {
        if let Some(c) = self.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.request();
        }
    }

    /// Starts generating after `prompt` (token ids). Tokens come from [`Generation::next`].
    pub fn start(&self, prompt: &[u32], params: &GenerateParams) -> Result<Generation> {
        params.validate(self.model.vocab())?;
        self.model.check_prompt(prompt, "the prompt")?;
        let prepared = Generation::prepare(&self.model, prompt, params)?;
        let mut state = self.take_state()?;
        let keep = match state.reuse(prompt) {
            Ok(k) => k,
            Err(e) => {
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
                return Err(e);
            }
        };
        if state.cache.offset() as usize + prompt.len() - keep > self.model.context_length() {
            let held = state.cache.offset();
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
            return Err(Error::invalid(format!(
                "the session holds {held} positions and the prompt adds {}: more than the context length {}",
                prompt.len() - keep,
                self.model.info().context_length
            )));
        }
        let cancel = Cancel::new();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancel.clone());
        Ok(Generation::new(
            self.model.clone(),
            state,
            self.slot.clone(),
            cancel,
            self.current.clone(),
            prompt,
            keep,
            params,
            prepared,
        ))
    }

    /// Generates after `prompt`, calling `on_token` for each token; it returns false to stop.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: impl FnMut(&super::Event) -> bool,
    ) -> Result<Output> {
        self.start(prompt, params)?.run(on_token)
    }

    /// The tokens of a plain text prompt (special tokens added as the tokenizer says).
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.model.encode(text, true)
    }

    /// The tokens of a chat, rendered with the model's template and a generation prompt,
    /// offering `tools` when given.
    /// [`cancel`](Self::cancel) and `caller` (the call's own token, may be None) stop the
    /// rendering too: the error is then `Cancelled`.
    pub fn chat_tokens(
        &self,
        messages: &[Message],
        tools: Option<&Tools>,
        extra: &serde_json::Map<String, serde_json::Value>,
        caller: Option<&Cancel>,
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::invalid("the chat has no messages"));
        }
        // While the template renders, Session::cancel reaches this token (no generation runs
        // yet, so nothing else is registered; one that is, is left alone).
        let own = Cancel::new();
        let registered = {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            cur.is_none().then(|| *cur = Some(own.clone())).is_some()
        };
        let stop = || own.is_requested() || caller.is_some_and(Cancel::is_requested);
        let text = self.model.render_chat(messages, true, tools, extra, Some(&stop));
        if registered {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref() == Some(&own) {
                *cur = None;
            }
        }
        self.model.encode(&text?, false)
    }
}
