//! Describing a model without loading it: what `lmx_model_load` would load from a path, read
//! from a GGUF file's header or a model folder's `config.json` alone.
//!
//! Only bounded reads: the GGUF header reader caps what it reads, `config.json` goes through
//! `crate::files` (size cap, regular files only). This module must never read tensor data,
//! the tokenizer or build anything on a device: a caller scanning a folder of models (the Go
//! package's `Discover`) pays a header read per file.

use std::ffi::c_char;
use std::path::Path;

use super::boundary::{status, str_arg};
use super::lmx_status;
use super::model::{copy_str, lmx_model_desc, LMX_CONVERSIONS_MAX, LMX_NAME_MAX};
use super::sized::write_out;
use crate::model::config::Config;
use crate::model::quant::QuantConfig;
use crate::model::{arch, gguf};
use crate::{Error, Result};

/// The context length a model without `max_position_embeddings` gets when loaded with
/// context_length 0. It mirrors `ModelInfo::describe`'s default, which lives in the model
/// layer; this helper moves there with the next restructuring of src/model.
const DEFAULT_CONTEXT: i32 = 4096;

/// What can be known of the model at `path` without its weights: the config (from the GGUF
/// metadata or config.json), the architecture that would run it and its quantization.
fn describe(path: &Path) -> Result<lmx_model_desc> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    let (cfg, format) = if meta.is_file() && gguf::is_gguf(path) {
        let header = gguf::read_header(path)?;
        let v = header.config_json().map_err(|e| e.context(path.display()))?;
        let cfg = Config::from_value(path, &v).ok_or_else(|| {
            Error::internal(format!("{}: the GGUF config is not an object", path.display()))
        })?;
        (cfg, "gguf")
    } else if meta.is_dir() {
        let cfg_path = path.join("config.json");
        if !crate::files::present(&cfg_path) {
            return Err(Error::not_found(format!("{}: no such file", cfg_path.display())));
        }
        (Config::read(&cfg_path)?, "safetensors")
    } else {
        return Err(Error::invalid(format!("{}: not a model folder nor a GGUF file", path.display())));
    };
    let spec =
        arch::spec_for(&cfg).map_err(|e| if format == "gguf" { e.context(path.display()) } else { e })?;
    let first = spec
        .layers
        .first()
        .ok_or_else(|| Error::format(format!("{}: the model has no layers", path.display())))?;
    // A GGUF file's quantization is per tensor type (lmx_model_desc.conversions once loaded);
    // a folder's is config.json's default.
    let quant = if format == "safetensors" { QuantConfig::read(&cfg)? } else { None };
    let mut d = lmx_model_desc {
        struct_size: std::mem::size_of::<lmx_model_desc>(),
        architecture: [0; LMX_NAME_MAX],
        model_type: [0; LMX_NAME_MAX],
        param_count: 0,
        num_layers: spec.layers.len() as i32,
        hidden_size: spec.hidden,
        num_heads: first.attn.n_heads,
        num_kv_heads: first.attn.n_kv_heads,
        head_dim: first.attn.head_dim,
        vocab_size: spec.vocab,
        context_length: spec.max_position.unwrap_or(DEFAULT_CONTEXT),
        quant_bits: quant.as_ref().map_or(0, |q| q.default.bits),
        quant_group_size: quant.as_ref().map_or(0, |q| q.default.group_size),
        dtype: [0; LMX_NAME_MAX],
        chat_template: [0; LMX_NAME_MAX],
        weight_bytes: 0,
        load_seconds: 0.0,
        load_peak_bytes: 0,
        backend: [0; LMX_NAME_MAX],
        format: [0; LMX_NAME_MAX],
        tokenizer: [0; LMX_NAME_MAX],
        conversions: [0; LMX_CONVERSIONS_MAX],
    };
    copy_str(&mut d.architecture, &spec.arch);
    copy_str(&mut d.model_type, cfg.str("model_type")?.unwrap_or(""));
    copy_str(&mut d.format, format);
    Ok(d)
}

/// Describes the model at `path` (NUL-terminated UTF-8: a model folder or a GGUF file, as
/// lmx_model_load() takes) without loading it: reads only the GGUF header, or only the
/// folder's config.json (bounded reads; no weights, tokenizer or device work). On success
/// fills `*desc_out` (not NULL, struct_size set to the caller's sizeof(lmx_model_desc)) with
/// what lmx_model_info() would report after a load with default parameters, as far as the
/// config says it: architecture, model_type, num_layers, hidden_size, num_heads,
/// num_kv_heads, head_dim, vocab_size, context_length (the model's own), quant_bits and
/// quant_group_size (config.json's default quantization; 0 for a dense folder and for a GGUF
/// file, whose quantization is per tensor type) and format ("safetensors" or "gguf"). The
/// fields that need the weights or the tokenizer (param_count, dtype, chat_template,
/// weight_bytes, load_seconds, load_peak_bytes, backend, tokenizer, conversions) are zero or
/// empty. Thread-safe. Returns LMX_OK; LMX_STATUS_INVALID_ARGUMENT (NULL, bad UTF-8, a bad
/// struct_size, a path that is neither a folder nor a GGUF file); LMX_STATUS_NOT_FOUND
/// (missing path or config.json); LMX_STATUS_FORMAT (a damaged header or config, missing
/// sizes); LMX_STATUS_UNSUPPORTED (an architecture or quantization liblmx does not run);
/// LMX_STATUS_IO. The message names the file and the key.
#[no_mangle]
pub extern "C" fn lmx_model_inspect(path: *const c_char, desc_out: *mut lmx_model_desc) -> lmx_status {
    status(|| {
        let path = str_arg(path, "path")?;
        if desc_out.is_null() {
            return Err(Error::invalid("desc_out is NULL"));
        }
        let d = describe(Path::new(path))?;
        write_out(desc_out, "desc_out", &d)
    })
}
