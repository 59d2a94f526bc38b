//! Loading a model folder: config, weights, tokenizer and chat template.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::arch;
use super::chat::ChatTemplate;
use super::chat::TemplateSource;
use super::config::Config;
use super::info::ModelInfo;
use super::info::Weights;
use super::quant::QuantConfig;
use super::tokenizer::Tokenizer;
use super::transformer::Transformer;
use super::weights::WeightStore;
use super::{gguf, gguf_tokenizer, gguf_weights};
use crate::mlx::device::shared_stream;
use crate::mlx::{memory, with_stream, Device, DeviceKind, Dtype};
use crate::{Error, Result};

/// Options for [`Model::load`].
#[derive(Clone, Debug, Default)]
pub struct LoadParams {
    /// Longest sequence (prompt plus generated tokens) to allow; default: the model's
    /// `max_position_embeddings`.
    pub context_length: Option<i32>,
    /// Convert floating-point weights to this dtype. Default: the checkpoint's, except that a
    /// bfloat16 or float16 checkpoint loaded for the CPU computes in float32 (MLX's CPU
    /// backend is several times slower in half precision).
    pub dtype: Option<Dtype>,
    /// The device that keeps the weights and computes; default: MLX's default device (the
    /// GPU where MLX has one). Chosen per model: nothing process-wide changes.
    pub device: Option<Device>,
}

/// A loaded model: the transformer, its tokenizer and chat template.
pub struct Model {
    pub dir: PathBuf,
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    pub info: ModelInfo,
    /// Where the weights live and every session of the model computes.
    pub device: Device,
    /// Identifies the weights and tokenizer (see [`super::fingerprint`]); saved sessions
    /// name it.
    pub fingerprint: String,
}

/// Refuses load parameters out of range.
fn check_params(params: &LoadParams) -> Result<()> {
    if let Some(ctx) = params.context_length {
        if ctx <= 0 {
            return Err(Error::invalid(format!("context length {ctx} must be positive")));
        }
    }
    if let Some(d) = params.dtype {
        if !matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::invalid(format!(
                "dtype {d} is not a float type (float32, float16, bfloat16)"
            )));
        }
    }
    Ok(())
}

/// Where a checkpoint keeps its decoder and head: plain, or inside a multimodal wrapper.
const LAYOUTS: &[(&str, &str)] = &[
    ("model.", "lm_head"),
    ("language_model.model.", "language_model.lm_head"),
    ("model.language_model.", "lm_head"),
];

impl Model {
    /// Loads the model in folder `dir`. Validates everything before use: missing or corrupt
    /// files, missing tensors, wrong shapes and unsupported dtypes are errors naming the file
    /// and the tensor. Resets MLX's peak memory counter to measure the load.
    pub fn load(dir: &Path, params: &LoadParams) -> Result<Model> {
        let start = Instant::now();
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, &e))?;
        if meta.is_file() && super::gguf::is_gguf(dir) {
            check_params(params)?;
            return Self::load_gguf(dir, params, start);
        }
        if !meta.is_dir() {
            return Err(Error::invalid(format!("{}: not a model folder nor a GGUF file", dir.display())));
        }
        check_params(params)?;
        let cfg_path = dir.join("config.json");
        if !crate::files::present(&cfg_path) {
            return Err(Error::not_found(format!("{}: no such file", cfg_path.display())));
        }
        let cfg = Config::read(&cfg_path)?;
        let model_type = cfg.str("model_type")?.unwrap_or("").to_string();
        let spec = arch::spec_for(&cfg)?;
        let text_cfg = match cfg.object("text_config")? {
            Some(t) => t,
            None => cfg.clone(),
        };
        let quant = QuantConfig::read(&cfg)?;

        let device = match params.device {
            Some(d) => d,
            None => Device::default_device()?,
        };
        if !device.is_available() {
            return Err(Error::unsupported(format!("{device} is not available in this MLX build")));
        }
        // Weights are built on a stream of the model's device. No lock is held across the
        // load: each evaluation takes the compute lock for itself, so other sessions go on
        // decoding meanwhile (and the peak measured here then includes their work).
        let stream = shared_stream(device)?;
        let (transformer, weight_bytes, load_peak_bytes, param_count) = with_stream(stream, || {
            Self::load_weights(dir, &cfg, &text_cfg, spec, quant, params.dtype, device)
        })?;

        let tok_cfg_path = dir.join("tokenizer_config.json");
        let tok_cfg =
            if crate::files::present(&tok_cfg_path) { Some(Config::read(&tok_cfg_path)?) } else { None };
        // The template is read first: its end-of-turn tokens join the EOS set.
        let raw_template =
            tok_cfg.as_ref().and_then(|t| t.get("chat_template")).map(|v| v.to_string()).or_else(|| {
                crate::files::read_text(&dir.join("chat_template.jinja"), crate::files::TEMPLATE_FILE_MAX)
                    .ok()
            });
        let tokenizer = Tokenizer::load(dir, &cfg, tok_cfg.as_ref(), raw_template.as_deref())?;
        let s = &transformer.spec;
        if tokenizer.vocab_size() > s.vocab as usize {
            return Err(Error::format(format!(
                "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
                dir.join("tokenizer.json").display(),
                tokenizer.vocab_size(),
                s.vocab
            )));
        }
        if let Some(&bad) = tokenizer.eos_ids().iter().find(|&&id| id as usize >= s.vocab as usize) {
            return Err(Error::format(format!(
                "{}: eos_token_id {bad} is outside the vocabulary (size {})",
                dir.join("config.json").display(),
                s.vocab
            )));
        }
        let chat =
            ChatTemplate::load(dir, tok_cfg.as_ref(), &s.arch, |t| tokenizer.token_to_id(t).is_some())?;

        let info = ModelInfo::describe(
            model_type,
            &transformer,
            &chat,
            params,
            Weights { bytes: weight_bytes, peak: load_peak_bytes, params: param_count },
            start,
        )?;
        let fingerprint = super::fingerprint::of_folder(dir)?;
        Ok(Model { dir: dir.to_path_buf(), transformer, tokenizer, chat, info, device, fingerprint })
    }

    /// Loads a GGUF file: config from its metadata, weights converted to MLX's formats (see
    /// [`super::gguf_weights`]), tokenizer and chat template from `tokenizer.*`.
    fn load_gguf(path: &Path, params: &LoadParams, start: Instant) -> Result<Model> {
        let h = gguf::read_header(path)?;
        let cfg_json = h.config_json().map_err(|e| e.context(path.display()))?;
        let cfg = Config::from_value(path, &cfg_json).expect("config_json makes an object");
        let spec = arch::spec_for(&cfg).map_err(|e| e.context(path.display()))?;
        let gt = gguf_tokenizer::build(&h).map_err(|e| e.context(path.display()))?;
        let device = match params.device {
            Some(d) => d,
            None => Device::default_device()?,
        };
        if !device.is_available() {
            return Err(Error::unsupported(format!("{device} is not available in this MLX build")));
        }
        let on_cpu = device.kind == DeviceKind::Cpu;
        // The dtype floats and quantization scales are kept and computed in: float32 on the
        // CPU (MLX has BLAS only for it), else float16 as llama.cpp computes, bfloat16 for Gemma
        // (whose activations overflow float16).
        let dtype = params.dtype.unwrap_or(if on_cpu {
            Dtype::F32
        } else if spec.arch == "gemma3" {
            Dtype::BF16
        } else {
            Dtype::F16
        });
        let heads = cfg.int("num_attention_heads")?.unwrap_or(0) as usize;
        let kv_heads = cfg.int("num_key_value_heads")?.unwrap_or(0) as usize;
        let stream = shared_stream(device)?;
        let (transformer, weights, conversions) = with_stream(stream, || {
            let active_before = memory::active_memory()?;
            memory::reset_peak_memory()?;
            memory::reserve(gguf_weights::projected_bytes(&h), "converting the weights")?;
            let conv = gguf_weights::convert(path, &h, &spec.arch, heads, kv_heads)?;
            let mut store = WeightStore::from_tensors(path, conv.tensors, conv.quant, Some(dtype));
            store.set_layout(on_cpu);
            let transformer = Transformer::build(spec.clone(), &mut store, "model.", "lm_head")?;
            let peak = memory::peak_memory()?.saturating_sub(active_before);
            let w = Weights { bytes: store.bytes, peak, params: store.params };
            Ok((transformer, w, conv.conversions))
        })?;
        let s = &transformer.spec;
        let mut eos: std::collections::BTreeSet<u32> = gt.eos_id.into_iter().chain(gt.eot_id).collect();
        eos.retain(|&id| (id as usize) < s.vocab as usize);
        let tokenizer =
            Tokenizer::from_parts(gt.tokenizer, gt.bos_id, gt.add_bos, eos, gt.chat_template.as_deref());
        if tokenizer.vocab_size() > s.vocab as usize {
            return Err(Error::format(format!(
                "{}: the tokenizer has {} tokens but the model's embedding has {} rows",
                path.display(),
                tokenizer.vocab_size(),
                s.vocab
            )));
        }
        let chat = match gt.chat_template {
            Some(t) => ChatTemplate::from_text(TemplateSource::Gguf, t)?,
            None => ChatTemplate::builtin(&s.arch, |t| tokenizer.token_to_id(t).is_some()),
        };
        let model_type = cfg.str("model_type")?.unwrap_or("").to_string();
        let mut info = ModelInfo::describe(model_type, &transformer, &chat, params, weights, start)?;
        info.format = "gguf".into();
        info.tokenizer = gt.kind;
        info.conversions = conversions;
        let fingerprint = super::fingerprint::of_gguf(path)?;
        Ok(Model { dir: path.to_path_buf(), transformer, tokenizer, chat, info, device, fingerprint })
    }

    /// A new model: this one with adapter `w` at `scale` fused into its weights (see
    /// [`super::transformer::Transformer::fused`]); tokenizer, template and device shared.
    pub fn fused(&self, w: &super::lora::LoraWeights, scale: f32) -> Result<Model> {
        if !scale.is_finite() {
            return Err(Error::invalid(format!("adapter scale {scale} is not a finite number")));
        }
        let stream = shared_stream(self.device)?;
        let transformer = with_stream(stream, || self.transformer.fused(w, scale))?;
        let fingerprint = super::fingerprint::fused(&self.fingerprint, &w.fingerprint()?, scale);
        Ok(Model {
            fingerprint,
            dir: self.dir.clone(),
            transformer,
            tokenizer: self.tokenizer.clone(),
            chat: self.chat.clone(),
            info: self.info.clone(),
            device: self.device,
        })
    }

    /// Where the model was loaded from: its folder or GGUF file.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What the model is: sizes, quantization, template source, load figures.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The per-layer structure the transformer was assembled from.
    pub fn spec(&self) -> &super::spec::ModelSpec {
        &self.transformer.spec
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.transformer.spec.layers.len()
    }

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

    /// Identifies weights and tokenizer (see [`super::fingerprint`]); saved sessions name it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The LoRA adapter in folder `dir` (mlx-lm's format), read onto this model's device and
    /// checked against its layers and projections.
    pub fn load_adapter(&self, dir: &Path) -> Result<super::lora::LoraWeights> {
        with_stream(shared_stream(self.device)?, || super::lora::LoraWeights::load(dir, &self.transformer.spec))
    }

    /// Rows of the embedding and output matrices: token ids are below it.
    pub fn vocab(&self) -> usize {
        self.transformer.spec.vocab as usize
    }

    /// Longest sequence in tokens, prompt and generated together.
    pub fn context_length(&self) -> usize {
        self.info.context_length as usize
    }

    /// An empty KV cache for one sequence.
    pub fn new_cache(&self) -> super::KvCache {
        super::KvCache::new(&self.transformer.spec)
    }

    /// An empty KV cache for a left-padded batch.
    pub fn new_batch_cache(&self) -> super::KvCache {
        super::KvCache::new_batch(&self.transformer.spec)
    }

    /// The token ids of `text`; with `add_special`, special tokens as the tokenizer adds them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, add_special)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special)
    }

    /// `messages` rendered with the model's chat template.
    pub fn render_chat(
        &self,
        messages: &[super::Message],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        self.chat.render(
            messages,
            add_generation_prompt,
            extra,
            self.tokenizer.bos_text(),
            self.tokenizer.eos_text(),
        )
    }

    /// The ids that end generation: `extra`, and the model's EOS set unless `ignore_eos`.
    pub fn stop_ids(&self, extra: &[u32], ignore_eos: bool) -> std::collections::HashSet<u32> {
        let mut ids: std::collections::HashSet<u32> = extra.iter().copied().collect();
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

    /// Opens the weight files and builds the transformer on the current stream: the
    /// transformer, the weights' bytes, the peak memory of the load, the parameter count.
    fn load_weights(
        dir: &Path,
        cfg: &Config,
        text_cfg: &Config,
        mut spec: super::spec::ModelSpec,
        quant: Option<QuantConfig>,
        dtype: Option<Dtype>,
        device: Device,
    ) -> Result<(Transformer, u64, u64, u64)> {
        let active_before = memory::active_memory()?;
        memory::reset_peak_memory()?;
        let mut store = WeightStore::open(dir, quant, dtype)?;
        let on_cpu = device.kind == DeviceKind::Cpu;
        store.set_layout(on_cpu);
        let (prefix, head) = LAYOUTS
            .iter()
            .find(|(p, _)| store.contains(&format!("{p}embed_tokens.weight")))
            .copied()
            .ok_or_else(|| {
                Error::format(format!(
                    "missing tensor model.embed_tokens.weight (looked in {})",
                    super::weights::weight_files(dir)
                        .map(|f| f.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ))
            })?;
        if dtype.is_none() && on_cpu {
            // MLX's CPU backend has BLAS only for float32; bfloat16 and float16 matmuls run
            // several times slower there, so a half-precision checkpoint computes in float32.
            let norm = format!("{prefix}norm.weight");
            if matches!(store.dtype_of(&norm), Some(Dtype::BF16) | Some(Dtype::F16)) {
                store.set_dtype(Some(Dtype::F32));
            }
        }
        memory::reserve(store.projected_bytes(), "loading the weights")?;
        if !text_cfg.has("tie_word_embeddings") && !cfg.has("tie_word_embeddings") {
            // No word from the config: a checkpoint without a head ties it to the embeddings.
            spec.tie_embeddings = !store.contains(&format!("{head}.weight"));
        }
        let transformer = Transformer::build(spec, &mut store, prefix, head)?;
        let weight_bytes = store.bytes;
        let load_peak_bytes = memory::peak_memory()?.saturating_sub(active_before);
        let param_count = store.params;
        drop(store);
        Ok((transformer, weight_bytes, load_peak_bytes, param_count))
    }
}
