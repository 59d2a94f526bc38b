//! Models: configuration, weights, tokenizer, chat templates and the transformer.
//!
//! Architectures are data: each supported `model_type` is a small adapter in [`arch`] that
//! maps its `config.json` onto a [`ModelSpec`] (per-layer attention, norm, MLP and rope
//! choices), and one [`Transformer`] runs every spec. Where things go:
//!
//! - [`arch`]: a new `model_type` (a config adapter and its spec);
//! - [`nn`]: a new network piece (attention kind, MLP kind, norm, rope, KV cache, LoRA);
//! - [`weights`] (safetensors folders) and [`gguf`]: file formats, and how their tensors
//!   become layers;
//! - [`text`]: tokenizer, streaming detokenizer, chat templates.
//!
//! Nothing here generates text; that is the engine's job. The engine, the C ABI and the CLI
//! see a [`Model`] through its methods only.

pub mod arch;
pub mod config;
pub mod fingerprint;
pub mod gguf;
pub mod grammar;
pub mod info;
pub mod inspect;
mod load;
pub mod nn;
pub mod text;
pub mod weights;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use arch::spec::ModelSpec;
pub use grammar::{Constraint, Grammars, Matcher};
pub use info::ModelInfo;
pub use inspect::{inspect, Inspection};
pub use load::LoadParams;
pub use nn::cache::{KvCache, KvQuant, LayerState, Packed};
pub use nn::lora::{LoraConfig, LoraWeights, Target};
pub use nn::transformer::Transformer;
pub use text::chat::{ChatTemplate, Message, TemplateSource};
pub use text::reasoning::{ReasoningSplit, ReasoningTags};
pub use text::stream::StreamDecoder;
pub use text::tokenizer::Tokenizer;
pub use text::tool_calls::{ParsedOutput, ToolFormat, ToolStream};
pub use text::tools::{Tool, ToolCall, ToolChoice, Tools};

use crate::mlx::device::shared_stream;
use crate::mlx::{with_stream, Device};
use crate::{Error, Result};

/// A loaded model: the transformer, its tokenizer and chat template, the device it lives on.
/// Immutable once loaded; shared between sessions behind an `Arc`.
pub struct Model {
    path: PathBuf,
    transformer: Transformer,
    tokenizer: Tokenizer,
    chat: ChatTemplate,
    info: ModelInfo,
    device: Device,
    fingerprint: String,
    /// How the fingerprint of liblmx's first session-file format is computed for this model
    /// (None where it cannot be: a model with an adapter fused in).
    legacy: Option<fingerprint::Legacy>,
    /// The grammar compiler for constrained decoding, built on first use (it walks the
    /// vocabulary once), or why it cannot be.
    grammars: OnceLock<std::result::Result<Arc<Grammars>, Error>>,
}

impl Model {
    /// Loads the model folder or GGUF file at `path` (see [`load`]).
    pub fn load(path: &Path, params: &LoadParams) -> Result<Model> {
        load::load(path, params)
    }

    /// A new model: this one with adapter `w` at `scale` fused into its weights (see
    /// [`Transformer::fused`]); tokenizer, template and device shared.
    pub fn fused(&self, w: &LoraWeights, scale: f32) -> Result<Model> {
        if !scale.is_finite() {
            return Err(Error::invalid(format!("adapter scale {scale} is not a finite number")));
        }
        w.check_finite()?;
        let stream = shared_stream(self.device)?;
        let transformer = with_stream(stream, || self.transformer.fused(w, scale))?;
        Ok(Model {
            fingerprint: fingerprint::fused(&self.fingerprint, &w.fingerprint()?, scale),
            legacy: None,
            path: self.path.clone(),
            transformer,
            tokenizer: self.tokenizer.clone(),
            chat: self.chat.clone(),
            info: self.info.clone(),
            device: self.device,
            // Same tokenizer, same vocabulary: the grammars compiled so far still hold.
            grammars: self.grammars.get().cloned().map(OnceLock::from).unwrap_or_default(),
        })
    }

    /// Where the model was loaded from: its folder or GGUF file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the model is: sizes, quantization, template source, load figures.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The per-layer structure the transformer was assembled from.
    pub fn spec(&self) -> &ModelSpec {
        self.transformer.spec()
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.spec().layers.len()
    }

    /// The network, for the engine's forward passes.
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// The device that holds the weights and computes every session of the model.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Identifies weights, tokenizer and template (see [`fingerprint`]); saved sessions name it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The fingerprint liblmx's first session-file format recorded for this model, computed
    /// now from its files; an error saying why where it cannot be.
    pub fn legacy_fingerprint(&self) -> Result<String> {
        match &self.legacy {
            Some(l) => l.compute(),
            None => Err(Error::unsupported(
                "a model with an adapter fused in cannot check session files of format 1 (save them again from the base model)",
            )),
        }
    }

    /// The LoRA adapter in folder `dir` (mlx-lm's format), read onto this model's device and
    /// checked against its layers and projections.
    pub fn load_adapter(&self, dir: &Path) -> Result<LoraWeights> {
        with_stream(shared_stream(self.device)?, || LoraWeights::load(dir, self.spec()))
    }

    /// Rows of the embedding and output matrices: token ids are below it.
    pub fn vocab(&self) -> usize {
        self.spec().vocab as usize
    }

    /// Longest sequence in tokens, prompt and generated together.
    pub fn context_length(&self) -> usize {
        self.info.context_length as usize
    }

    /// An empty KV cache for one sequence on this model's device, its global layers
    /// quantized as `quant` says (checked against the model).
    pub fn new_cache(&self, quant: Option<KvQuant>) -> Result<KvCache> {
        KvCache::with_quant(self.spec(), quant)?.for_device(self.device)
    }

    /// An empty KV cache for a left-padded batch.
    pub fn new_batch_cache(&self) -> KvCache {
        KvCache::new_batch(self.spec())
    }

    /// The token ids of `text`; with `add_special`, special tokens as the tokenizer adds them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, add_special)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special)
    }

    /// How this model writes tool calls, from its chat template and vocabulary.
    pub fn tool_format(&self) -> ToolFormat {
        ToolFormat::detect(self.chat.text(), |t| self.tokenizer.token_to_id(t).is_some())
    }

    /// Whether `text` is a special token of the vocabulary (see [`Tokenizer::is_special`]).
    pub fn is_special_token(&self, text: &str) -> bool {
        self.tokenizer.is_special(text)
    }

    /// This model's think tags, if it has any (from its chat template and vocabulary).
    pub fn reasoning_tags(&self) -> Option<ReasoningTags> {
        ReasoningTags::detect(self.chat.text(), |t| self.tokenizer.token_to_id(t).is_some())
    }

    /// `messages` rendered with the model's chat template, offering `tools` (see
    /// [`ChatTemplate::render`]). With `stop`, the rendering ends
    /// with a `Cancelled` error as soon as `stop` returns true (checked every few
    /// milliseconds while the template runs; see [`ChatTemplate::render_cancellable`]).
    pub fn render_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&Tools>,
        extra: &serde_json::Map<String, serde_json::Value>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<String> {
        let (bos, eos) = (self.tokenizer.bos_text(), self.tokenizer.eos_text());
        match stop {
            Some(stop) => {
                self.chat.render_cancellable(messages, add_generation_prompt, tools, extra, bos, eos, stop)
            }
            None => self.chat.render(messages, add_generation_prompt, tools, extra, bos, eos),
        }
    }

    /// The grammar compiler for constrained decoding, built on the first call (a walk over
    /// the vocabulary); an `Unsupported` error for a vocabulary it cannot represent.
    pub fn grammars(&self) -> Result<Arc<Grammars>> {
        self.grammars
            .get_or_init(|| {
                let eos: Vec<u32> = self.tokenizer.eos_ids().iter().copied().collect();
                Grammars::new(&self.tokenizer, self.vocab(), &eos).map(Arc::new)
            })
            .clone()
    }

    /// A fresh matcher for `c` (see [`Grammars::matcher`]).
    pub fn matcher(&self, c: &Constraint) -> Result<Matcher> {
        self.grammars()?.matcher(c)
    }

    /// The ids that end generation: `extra`, and the model's EOS set unless `ignore_eos`.
    pub fn stop_ids(&self, extra: &[u32], ignore_eos: bool) -> HashSet<u32> {
        let mut ids: HashSet<u32> = extra.iter().copied().collect();
        if !ignore_eos {
            ids.extend(self.tokenizer.eos_ids().iter().copied());
        }
        ids
    }

    /// Checks that `prompt` can start a generation: not empty, every id in the vocabulary, and
    /// room for at least one generated token within the context length. `what` names the
    /// prompt in the error ("the prompt", "prompt 3").
    pub fn check_prompt(&self, prompt: &[u32], what: &str) -> Result<()> {
        let vocab = self.vocab();
        if prompt.is_empty() {
            return Err(Error::invalid(format!("{what} has no tokens")));
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid(format!(
                "{what}: token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let ctx = self.context_length();
        if prompt.len() >= ctx {
            return Err(Error::invalid(format!(
                "{what} has {} tokens; the context length is {ctx} (prompt and generated tokens together)",
                prompt.len()
            )));
        }
        Ok(())
    }
}
