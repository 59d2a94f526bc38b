//! Sessions: a KV cache that lives across calls, so the next turn of a chat prefills only the
//! tokens the cache does not already hold.
//!
//! Threads: a session runs one generation at a time (another call while one runs is
//! `Busy`); sessions of one model may be used from several threads at once. Their MLX work is
//! serialized step by step (prefill chunk, decode step) by the compute lock, so they take
//! turns and never share a cache. [`Session::cancel`] may be called from any thread.

use std::sync::{Arc, Mutex};

use super::cancel::Cancel;
use super::generate::{Generation, Output};
use super::params::GenerateParams;
use crate::mlx::device::{pooled_stream, StreamLease};
use crate::model::lora::{Lora, LoraWeights};
use crate::model::{KvCache, Message, Model};
use crate::{Error, ErrorKind, Result};

/// What a session keeps between calls.
pub(crate) struct SessionState {
    pub cache: KvCache,
    /// The tokens whose keys and values the cache holds, in order.
    pub tokens: Vec<u32>,
    pub stream: Arc<StreamLease>,
    /// The adapter applied, with its scale; None = the base model.
    pub adapter: Option<(Arc<LoraWeights>, f32)>,
}

impl SessionState {
    /// Logits [1, vocab] of the last of `x` ([1, L] ids) after the cache, with the adapter.
    pub fn forward_last(&mut self, model: &Model, x: &crate::mlx::Array) -> Result<crate::mlx::Array> {
        let lora =
            self.adapter.as_ref().map(|(w, scale)| Lora { weights: w, scale: *scale, dropout: 0.0, seed: 0 });
        model.transformer.forward_last_with(x, &mut self.cache, lora.as_ref())
    }
}

pub struct Session {
    model: Arc<Model>,
    /// None while a generation has the state.
    slot: Arc<Mutex<Option<SessionState>>>,
    /// The running generation's cancellation token; None while nothing runs.
    current: Arc<Mutex<Option<Cancel>>>,
}

impl Session {
    /// A new session on `model`, computing on a pooled stream of the model's device.
    pub fn new(model: Arc<Model>) -> Result<Session> {
        let stream = pooled_stream(model.device)?;
        let cache = model.new_cache();
        Ok(Session {
            model,
            slot: Arc::new(Mutex::new(Some(SessionState {
                cache,
                tokens: Vec::new(),
                stream: Arc::new(stream),
                adapter: None,
            }))),
            current: Arc::new(Mutex::new(None)),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
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
        let st = slot.as_mut().ok_or_else(Self::busy)?;
        st.cache.reset();
        st.tokens.clear();
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
            w.check(&self.model.transformer.spec)?;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let st = slot.as_mut().ok_or_else(Self::busy)?;
        let same = match (&st.adapter, &adapter) {
            (None, None) => true,
            (Some((a, x)), Some((b, y))) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        };
        if !same {
            st.cache.reset();
            st.tokens.clear();
            st.adapter = adapter;
        }
        Ok(())
    }

    /// The tokens the cache holds.
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
        let (sampler, history) = Generation::prepare(prompt, params)?;
        let state = self.take_state()?;
        let cancel = Cancel::new();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancel.clone());
        Ok(Generation::new(
            self.model.clone(),
            state,
            self.slot.clone(),
            cancel,
            self.current.clone(),
            prompt,
            params,
            sampler,
            history,
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

    /// The tokens of a chat, rendered with the model's template and a generation prompt.
    pub fn chat_tokens(
        &self,
        messages: &[Message],
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::invalid("the chat has no messages"));
        }
        let m = &self.model;
        let text = m.render_chat(messages, true, extra)?;
        m.encode(&text, false)
    }
}
