//! Loading a model folder or a GGUF file: config, weights, tokenizer and chat template.
//!
//! Every file is read once, through [`crate::files`] (bounded, regular files only), and what
//! was read is what the fingerprint hashes.

use std::path::Path;
use std::time::Instant;

use super::config::Config;
use super::fingerprint::{self, Fingerprint, Legacy};
use super::info::{ModelInfo, Source, Weights};
use super::nn::quant::QuantConfig;
use super::text::chat::{self, ChatTemplate, TemplateSource};
use super::weights::{self, WeightStore};
use super::{arch, gguf, Model, ModelSpec, Tokenizer, Transformer};
use crate::files;
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

impl LoadParams {
    /// Refuses parameters out of range.
    fn check(&self) -> Result<()> {
        if let Some(ctx) = self.context_length {
            if ctx <= 0 {
                return Err(Error::invalid(format!("context length {ctx} must be positive")));
            }
        }
        if let Some(d) = self.dtype {
            if !matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(Error::invalid(format!(
                    "dtype {d} is not a float type (float32, float16, bfloat16)"
                )));
            }
        }
        Ok(())
    }

    /// The device asked for, or MLX's default; one this MLX build has.
    fn device(&self) -> Result<Device> {
        let device = match self.device {
            Some(d) => d,
            None => Device::default_device()?,
        };
        if !device.is_available() {
            return Err(Error::unsupported(format!("{device} is not available in this MLX build")));
        }
        Ok(device)
    }
}

/// Where a checkpoint keeps its decoder and head: plain, or inside a multimodal wrapper.
const LAYOUTS: &[(&str, &str)] =
    &[("model.", "lm_head"), ("language_model.model.", "lm_head"), ("model.language_model.", "lm_head")];

/// Loads the model folder or GGUF file at `path`. Validates everything before use: missing or
/// corrupt files, missing tensors, wrong shapes and unsupported dtypes are errors naming the
/// file and the tensor. Resets MLX's peak memory counter to measure the load.
pub(super) fn load(path: &Path, params: &LoadParams) -> Result<Model> {
    let start = Instant::now();
    let format = format_of(path)?;
    params.check()?;
    match format {
        Format::Gguf => load_gguf(path, params, start),
        Format::Folder => load_folder(path, params, start),
    }
}

/// What a model path is.
pub(super) enum Format {
    /// A Hugging Face folder (config.json, *.safetensors, tokenizer.json).
    Folder,
    Gguf,
}

/// Whether `path` is a model folder or a GGUF file; anything else is an error naming it.
pub(super) fn format_of(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    if meta.is_file() && gguf::is_gguf(path) {
        Ok(Format::Gguf)
    } else if meta.is_dir() {
        Ok(Format::Folder)
    } else {
        Err(Error::invalid(format!("{}: not a model folder nor a GGUF file", path.display())))
    }
}

/// A JSON file of the folder read whole (None when absent), fed to the fingerprint.
fn read_json(dir: &Path, name: &str, fp: &mut Fingerprint) -> Result<Option<Config>> {
    let p = dir.join(name);
    if !files::present(&p) {
        fp.input(name, None);
        return Ok(None);
    }
    let text = files::read_text(&p, files::JSON_MAX)?;
    fp.input(name, Some(text.as_bytes()));
    Config::from_text(&p, &text).map(Some)
}

/// Checks that the tokenizer's ids fit the model's embedding rows.
fn check_vocab(tokenizer: &Tokenizer, spec: &ModelSpec, file: &Path) -> Result<()> {
    if tokenizer.vocab_size() > spec.vocab as usize {
        return Err(Error::format(format!(
            "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
            file.display(),
            tokenizer.vocab_size(),
            spec.vocab
        )));
    }
    Ok(())
}

fn load_folder(dir: &Path, params: &LoadParams, start: Instant) -> Result<Model> {
    let mut fp = Fingerprint::default();
    let cfg_path = dir.join("config.json");
    let cfg = read_json(dir, "config.json", &mut fp)?
        .ok_or_else(|| Error::not_found(format!("{}: no such file", cfg_path.display())))?;
    let model_type = cfg.str("model_type")?.unwrap_or("").to_string();
    let spec = arch::spec_for(&cfg)?;
    let text_cfg = cfg.object("text_config")?.unwrap_or_else(|| cfg.clone());
    let quant = QuantConfig::read(&cfg)?;
    let device = params.device()?;

    // Weights are built on a stream of the model's device. No lock is held across the load:
    // each evaluation takes the compute lock for itself, so other sessions go on decoding
    // meanwhile (and the peak measured here then includes their work).
    let stream = shared_stream(device)?;
    let (transformer, weights, files) =
        with_stream(stream, || load_weights(dir, &cfg, &text_cfg, spec, quant, params.dtype, device))?;
    for f in &files {
        fp.sample(f)?;
    }

    let tok_cfg = read_json(dir, "tokenizer_config.json", &mut fp)?;
    let gen_cfg = read_json(dir, "generation_config.json", &mut fp)?;
    // The template is read once, before the tokenizer: its end-of-turn markers join the EOS set.
    let own = chat::own_template(dir, tok_cfg.as_ref())?;
    fp.input("chat_template", own.as_ref().map(|(_, t)| t.as_bytes()));
    let tok_path = dir.join("tokenizer.json");
    if !files::present(&tok_path) {
        return Err(Error::not_found(format!("{}: no such file", tok_path.display())));
    }
    let tok_bytes = files::read_bytes(&tok_path, files::TOKENIZER_MAX)?;
    fp.input("tokenizer.json", Some(&tok_bytes));
    let tokenizer = Tokenizer::from_json(
        &tok_path,
        &tok_bytes,
        &cfg,
        tok_cfg.as_ref(),
        gen_cfg.as_ref(),
        own.as_ref().map(|(_, t)| t.as_str()),
    )?;
    drop(tok_bytes);
    let s = transformer.spec();
    check_vocab(&tokenizer, s, &tok_path)?;
    if let Some(&bad) = tokenizer.eos_ids().iter().find(|&&id| id as usize >= s.vocab as usize) {
        return Err(Error::format(format!(
            "{}: eos_token_id {bad} is outside the vocabulary (size {})",
            cfg_path.display(),
            s.vocab
        )));
    }
    let chat = ChatTemplate::own_or_builtin(own, &s.arch, |t| tokenizer.token_to_id(t).is_some())?;
    let source =
        Source { format: "safetensors", tokenizer: "tokenizer.json".into(), conversions: Vec::new() };
    let info = ModelInfo::describe(model_type, &transformer, &chat, params, weights, source, start)?;
    Ok(Model {
        path: dir.to_path_buf(),
        transformer,
        tokenizer,
        chat,
        info,
        device,
        fingerprint: fp.finish(),
        legacy: Some(Legacy::Folder(dir.to_path_buf())),
        grammars: Default::default(),
    })
}

/// Loads a GGUF file: config from its metadata, weights converted to MLX's formats (see
/// [`gguf::weights`]), tokenizer and chat template from `tokenizer.*`.
fn load_gguf(path: &Path, params: &LoadParams, start: Instant) -> Result<Model> {
    let h = gguf::read_header(path)?;
    let cfg_json = h.config_json().map_err(|e| e.context(path.display()))?;
    let cfg = Config::from_value(path, &cfg_json)
        .ok_or_else(|| Error::internal(format!("{}: the metadata made no config object", path.display())))?;
    let spec = arch::spec_for(&cfg).map_err(|e| e.context(path.display()))?;
    let gt = gguf::tokenizer::build(&h).map_err(|e| e.context(path.display()))?;
    let device = params.device()?;
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
        memory::reserve(gguf::weights::projected_bytes(&h), "converting the weights")?;
        // Tensor names and llama's rope permutation follow the file's architecture (a
        // Mixtral file is `llama`), not the family that runs it.
        let conv = gguf::weights::convert(path, &h, h.architecture().unwrap_or(""), heads, kv_heads)?;
        let mut store = WeightStore::from_tensors(path, conv.tensors, conv.quant, Some(dtype));
        store.set_layout(on_cpu);
        let transformer = Transformer::build(spec.clone(), &mut store, "model.", "lm_head")?;
        let peak = memory::peak_memory()?.saturating_sub(active_before);
        let w = Weights { bytes: store.bytes(), peak, params: store.params() };
        Ok((transformer, w, conv.conversions))
    })?;
    let s = transformer.spec();
    // The file's EOS and end-of-turn ids; one outside the embedding would never be generated.
    let mut eos: std::collections::BTreeSet<u32> = gt.eos_id.into_iter().chain(gt.eot_id).collect();
    eos.retain(|&id| (id as usize) < s.vocab as usize);
    let tokenizer =
        Tokenizer::from_parts(gt.tokenizer, gt.bos_id, gt.add_bos, eos, gt.chat_template.as_deref());
    check_vocab(&tokenizer, s, path)?;
    let own = gt.chat_template.map(|t| (TemplateSource::Gguf, t));
    let chat = ChatTemplate::own_or_builtin(own, &s.arch, |t| tokenizer.token_to_id(t).is_some())?;
    let model_type = cfg.str("model_type")?.unwrap_or("").to_string();
    let source = Source { format: "gguf", tokenizer: gt.kind, conversions };
    let info = ModelInfo::describe(model_type, &transformer, &chat, params, weights, source, start)?;
    Ok(Model {
        path: path.to_path_buf(),
        transformer,
        tokenizer,
        chat,
        info,
        device,
        fingerprint: fingerprint::of_gguf(path)?,
        legacy: Some(Legacy::Gguf(path.to_path_buf())),
        grammars: Default::default(),
    })
}

/// Opens the weight files and builds the transformer on the current stream: the transformer,
/// what the store counted, and the weight files opened (for the fingerprint).
fn load_weights(
    dir: &Path,
    cfg: &Config,
    text_cfg: &Config,
    mut spec: ModelSpec,
    quant: Option<QuantConfig>,
    dtype: Option<Dtype>,
    device: Device,
) -> Result<(Transformer, Weights, Vec<std::path::PathBuf>)> {
    let active_before = memory::active_memory()?;
    memory::reset_peak_memory()?;
    let files = weights::weight_files(dir)?;
    let mut store = WeightStore::open(&files, quant, dtype)?;
    let on_cpu = device.kind == DeviceKind::Cpu;
    store.set_layout(on_cpu);
    let (prefix, head) = LAYOUTS
        .iter()
        .find(|(p, _)| store.contains(&format!("{p}embed_tokens.weight")))
        .copied()
        .ok_or_else(|| {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            Error::format(format!(
                "missing tensor model.embed_tokens.weight (looked in {})",
                names.join(", ")
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
    let peak = memory::peak_memory()?.saturating_sub(active_before);
    let w = Weights { bytes: store.bytes(), peak, params: store.params() };
    Ok((transformer, w, files))
}
