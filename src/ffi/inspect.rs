//! Describing a model without loading it (see [`crate::model::inspect`]): what
//! `lmx_model_load` would load from a path. The Go package's `Discover` calls it per file.

use std::ffi::c_char;
use std::path::Path;

use super::boundary::{status, str_arg};
use super::lmx_status;
use super::model::{copy_str, lmx_model_desc};
use super::sized::write_out;
use crate::{Error, Result};

/// The description of `path` as lmx_model_desc, the fields a load would add left zero.
fn describe(path: &Path) -> Result<lmx_model_desc> {
    let i = crate::model::inspect(path)?;
    let mut d = lmx_model_desc {
        num_layers: i.num_layers,
        hidden_size: i.hidden_size,
        num_heads: i.num_heads,
        num_kv_heads: i.num_kv_heads,
        head_dim: i.head_dim,
        vocab_size: i.vocab_size,
        context_length: i.context_length,
        quant_bits: i.quant_bits,
        quant_group_size: i.quant_group_size,
        num_experts: i.num_experts,
        experts_per_token: i.experts_per_token,
        ..lmx_model_desc::empty()
    };
    copy_str(&mut d.architecture, &i.architecture);
    copy_str(&mut d.model_type, &i.model_type);
    copy_str(&mut d.format, i.format);
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
/// file, whose quantization is per tensor type), format ("safetensors" or "gguf"),
/// num_experts and experts_per_token. The fields that need the weights or the tokenizer
/// (param_count, dtype, chat_template, weight_bytes, load_seconds, load_peak_bytes, backend,
/// tokenizer, conversions, active_param_count) are zero or empty. Thread-safe. Returns
/// LMX_OK; LMX_STATUS_INVALID_ARGUMENT (NULL, bad UTF-8, a bad struct_size, a path that is
/// neither a folder nor a GGUF file); LMX_STATUS_NOT_FOUND
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
