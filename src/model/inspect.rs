//! Describing a model without loading it: what [`super::Model::load`] would load from a path,
//! read from a GGUF file's header or a model folder's `config.json` alone.
//!
//! Only bounded reads: the GGUF header reader caps what it reads, `config.json` goes through
//! [`crate::files`]. This module must never read tensor data or the tokenizer, or build
//! anything on a device: a caller scanning a folder of models pays a header read per file.

use std::path::Path;

use super::config::Config;
use super::info::DEFAULT_CONTEXT;
use super::load::{format_of, Format};
use super::nn::quant::QuantConfig;
use super::{arch, gguf};
use crate::{Error, Result};

/// What can be known of a model without its weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// `model_type` as the config gives it.
    pub model_type: String,
    /// The architecture family that would run it.
    pub architecture: String,
    pub num_layers: i32,
    pub hidden_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub vocab_size: i32,
    /// The model's own context length (`max_position_embeddings`, or liblmx's default).
    pub context_length: i32,
    /// config.json's default quantization (0 for a dense folder and for a GGUF file, whose
    /// quantization is per tensor type).
    pub quant_bits: i32,
    pub quant_group_size: i32,
    /// Experts per mixture-of-experts layer and experts per token (0 for a dense model).
    pub num_experts: i32,
    pub experts_per_token: i32,
    /// "safetensors" or "gguf".
    pub format: &'static str,
}

/// Describes the model folder or GGUF file at `path` from its config alone. Errors as a load
/// would give them for the config: missing files, damaged headers, unsupported architectures.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let (cfg, format) = match format_of(path)? {
        Format::Gguf => {
            let header = gguf::read_header(path)?;
            let v = header.config_json().map_err(|e| e.context(path.display()))?;
            let cfg = Config::from_value(path, &v).ok_or_else(|| {
                Error::internal(format!("{}: the GGUF config is not an object", path.display()))
            })?;
            (cfg, "gguf")
        }
        Format::Folder => {
            let cfg_path = path.join("config.json");
            if !crate::files::present(&cfg_path) {
                return Err(Error::not_found(format!("{}: no such file", cfg_path.display())));
            }
            (Config::read(&cfg_path)?, "safetensors")
        }
    };
    let spec =
        arch::spec_for(&cfg).map_err(|e| if format == "gguf" { e.context(path.display()) } else { e })?;
    let first = spec
        .layers
        .first()
        .ok_or_else(|| Error::format(format!("{}: the model has no layers", path.display())))?;
    let quant = if format == "safetensors" { QuantConfig::read(&cfg)? } else { None };
    let (num_experts, experts_per_token) = arch::moe::experts(&spec);
    Ok(Inspection {
        model_type: cfg.str("model_type")?.unwrap_or("").to_string(),
        architecture: spec.arch.clone(),
        num_layers: spec.layers.len() as i32,
        hidden_size: spec.hidden,
        num_heads: first.attn.n_heads,
        num_kv_heads: first.attn.n_kv_heads,
        head_dim: first.attn.head_dim,
        vocab_size: spec.vocab,
        context_length: spec.max_position.unwrap_or(DEFAULT_CONTEXT),
        quant_bits: quant.as_ref().map_or(0, |q| q.default.bits),
        quant_group_size: quant.as_ref().map_or(0, |q| q.default.group_size),
        num_experts,
        experts_per_token,
        format,
    })
}
